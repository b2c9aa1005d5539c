"""Failover benchmark: Lifeline's failover flow on the lab next to a plain shell script doing the same steps.

    uv run python -m tests.benchmarks.run failover [--runs 5] [--warmup 1] [--cli-rounds 3] [--shell-dns curl|python]

One lab (free ports, its own LIFELINE_HOME under $TMPDIR), one Prefect server started here, and
one untimed backup so that preflight finds fresh snapshots (datasets whose RPO target is short are
backed up again between runs, untimed). Then, alternating (Lifeline, shell, Lifeline, shell...):

- the same fault, `main-db-down` (main's PostgreSQL stopped with `pg_ctl stop -m immediate`); its
  time in lab/faults.json is the incident time for both;
- Lifeline: `failover_flow(plan, approval="yes")` IN this process, against the server. RTO is the
  run record's: first of N consecutive healthy rounds of dr's critical services minus the fault time;
- shell: infra/bench/failover.sh (ssh + `pg_ctl promote -w`, Route 53 UPSERT until INSYNC with
  `curl --aws-sigv4` -- or, with --shell-dns python, a `python -c` boto3 snippet -- then curl on dr's
  /health every interval until N 200s in a row), with the plan's interval and N. RTO = the first of
  the N 200s minus the fault time;
- after each, back to the normal state: `heal` (clears the fault; never starts the replaced primary),
  `failback_flow(plan, approval="yes")` (timed, and its own planned-outage RTO recorded), `heal`, and
  wait until `lab status` says normal. If failback fails, the lab is rebuilt (`down(purge)` + `up`)
  and that is reported as a finding.

Then the CLI's fixed cost (lab normal): `lifeline failover --yes --dry-run` as a process next to the
same description in-process, and `lifeline verify --site main --json` as a process next to
`verify_flow` in-process; each also with Python's bytecode cache in a folder of ours
(PYTHONPYCACHEPREFIX; where PYTHONDONTWRITEBYTECODE is set and the venv has no .pyc, every process
compiles Prefect from source), and verify with the flow heartbeat off. Last, probes of where the flow's own costs go (an empty flow run, plan
loading, preflight with and without its restic listing, a Route 53 read with a new and a kept boto3
client).

Tables: RTO medians (goal: <= 5 s and <= 1.3x the shell script), fixed costs, failback, and the
step-by-step timeline of the median Lifeline run from its record (steps' started_at/ended_at),
next to the shell script's phases.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.benchmarks.common import (
    ProcessRun,
    bench_tmpdir,
    log,
    median,
    prefect_server,
    print_table,
    quiet_prefect_environment,
    ratio,
    run_timed,
    settle,
    spread,
    timed,
)

FAULT = "main-db-down"
SOURCE, TARGET = "main", "dr"
SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "bench" / "failover.sh"
RTO_GOAL_SECONDS = 5.0
RATIO_GOAL = 1.3
NORMAL_TIMEOUT = 60.0
BACKUP_REFRESH_FRACTION = 0.5  # back a dataset up again once half its RPO target has passed


def quiet(_message: str) -> None:
    pass


# --- the lab ------------------------------------------------------------------------------------


@dataclass
class LabRun:
    """The lab under test, and what the benchmark needs to know about it."""

    home: Path
    plan: Path
    backed_up_at: dict[str, float] = field(default_factory=dict)  # dataset -> monotonic time of its backup
    rebuilds: int = 0

    def wait_normal(self, timeout: float = NORMAL_TIMEOUT) -> float:
        from lifeline.infra.lab import status

        started = time.monotonic()
        while True:
            current = status(self.home)
            if current.normal:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the lab is not normal after {timeout:g} s: {current.not_normal_because}")
            time.sleep(0.3)

    def back_up(self, datasets: list[str] | None = None) -> None:
        """Untimed: preflight refuses when a dataset's newest snapshot is older than its RPO target."""
        from lifeline.flows.backup import backup_flow

        for dataset in datasets or [None]:
            seconds, _ = timed(lambda dataset=dataset: backup_flow(str(self.plan), dataset=dataset))
            log(f"backup {dataset or 'of every dataset'}: {seconds:.1f} s (not timed)")
        from lifeline.configs.loading import load_plan

        names = datasets or list(load_plan(self.plan).plan.datasets)
        self.backed_up_at.update({name: time.monotonic() for name in names})

    def refresh_backups(self) -> None:
        from lifeline.configs.loading import load_plan

        plan = load_plan(self.plan).plan
        stale = [name for name in plan.datasets
                 if time.monotonic() - self.backed_up_at.get(name, float("-inf"))
                 > BACKUP_REFRESH_FRACTION * plan.rpo_target(name).total_seconds()]
        if stale:
            self.back_up(stale)

    def rebuild(self) -> None:
        from lifeline.infra.lab import down, up

        self.rebuilds += 1
        down(self.home, purge=True, log=quiet)
        self.plan = Path(up(self.home, free_ports=True, log=quiet))
        self.wait_normal()
        self.backed_up_at.clear()
        self.back_up()


def shell_environment(plan_path: Path, dns_client: str = "curl") -> dict[str, str]:
    """The script's inputs, from the lab's plan (ports may change when the lab is rebuilt)."""
    from lifeline.configs.loading import load_plan

    plan = load_plan(plan_path).plan
    database = next(database for database in plan.databases.values() if TARGET in database.instances)
    instance = database.instances[TARGET]
    host = plan.hosts[instance.host]
    service = next(s for s in plan.services.values() if s.site == TARGET and s.critical)
    check = next(c for c in service.checks if c.type == "http")
    verification = plan.recovery.verification
    assert plan.aws is not None and plan.dns is not None and plan.aws.credentials_file is not None
    return {
        **os.environ,
        "SSH_HOST": host.address, "SSH_PORT": str(host.port), "SSH_USER": host.user,
        "SSH_KEY": str(host.key_file), "SSH_KNOWN_HOSTS": str(host.known_hosts_file),
        "PG_CTL": str(Path(instance.bin_dir) / "pg_ctl"), "PGDATA": str(instance.data_dir),
        "AWS_ENDPOINT_URL": plan.aws.endpoint_url or "", "AWS_REGION": plan.aws.region,
        "AWS_ENV_FILE": str(plan.aws.credentials_file),
        "DNS_ZONE": plan.dns.zone, "DNS_RECORD": plan.dns.record, "DNS_VALUE": plan.dns.values[TARGET],
        "DNS_TTL": str(plan.dns.ttl),
        "HEALTH_URL": str(check.url), "PROBE_INTERVAL": f"{verification.interval_seconds:g}",
        "PROBE_ROUNDS": str(verification.rounds), "PYTHON": sys.executable, "DNS_CLIENT": dns_client,
    }


# --- one failover each way ----------------------------------------------------------------------


@dataclass
class Outcome:
    rto: float
    wall: float  # fault -> the flow call / the script returned
    phases: list[tuple[str, float]]  # timeline from the fault, in order; sums to rto
    milestones: dict[str, float] = field(default_factory=dict)  # seconds after the fault


def inject_fault(lab: LabRun) -> tuple[datetime, float]:
    """The fault's time as lab/faults.json records it (the incident time), and when fault() returned."""
    from lifeline.infra.lab import fault

    settle()
    at, _ = fault(FAULT, lab.home)
    return datetime.fromisoformat(at), time.time()


def lifeline_failover(lab: LabRun) -> Outcome:
    from lifeline.configs.settings import load_settings
    from lifeline.flows.failover import failover_flow
    from lifeline.tasks.ledger import Ledger

    incident, injected = inject_fault(lab)
    record_id = failover_flow(str(lab.plan), approval="yes", reason="benchmark")
    returned = time.time()
    record = Ledger(load_settings().ledger).run(record_id)
    if record is None or record.status != "completed" or record.rto_seconds is None:
        raise RuntimeError(f"failover run {record_id}: {record.status if record else 'no record'} "
                           f"{record.error if record else ''}")
    if record.incident_at != incident:
        raise RuntimeError(f"failover run {record_id}: incident_at {record.incident_at} is not the fault's {incident}")
    if any(step.attempts > 1 for step in record.steps):
        log("retried steps: " + ", ".join(f"{s.name} x{s.attempts}" for s in record.steps if s.attempts > 1))
    return Outcome(
        rto=record.rto_seconds,
        wall=returned - incident.timestamp(),
        phases=record_timeline(record, injected - incident.timestamp()),
        milestones={name: (at - incident).total_seconds() for name, at in record.milestones.items()},
    )


INJECTED = "fault injected (lab fault() call)"
DECLARED = "flow run start -> run declared"
# What runs between two steps, outside any step (flows/failover.py), by the next step's first word
BETWEEN = {
    "probe": "already_serving(): dr's role, Route 53 read",
    "fence": "write_positions(): main's WAL position",
}


def record_timeline(record, injected: float) -> list[tuple[str, float]]:
    """The run from the fault to recovered, from the record: steps, and the time between them."""
    incident, recovered = record.incident_at, record.recovered_at
    phases = [(INJECTED, injected), (DECLARED, (record.started_at - incident).total_seconds() - injected)]
    previous = record.started_at
    for step in sorted(record.steps, key=lambda s: s.started_at):
        if step.started_at >= recovered:
            break
        what = BETWEEN.get(step.name.split()[0], "flow code, Prefect task-run start")
        phases.append((f"  -> {step.name}: {what}", (step.started_at - previous).total_seconds()))
        ended = min(step.ended_at or recovered, recovered)
        label = f"{step.name} (until recovered)" if ended == recovered else step.name
        phases.append((label, (ended - step.started_at).total_seconds()))
        previous = ended
    return phases


def shell_failover(lab: LabRun, dns_client: str = "curl") -> Outcome:
    environment = shell_environment(lab.plan, dns_client)
    incident, injected = inject_fault(lab)
    run = run_timed(["bash", str(SCRIPT)], environment)
    returned = time.time()
    if run.returncode != 0:
        raise RuntimeError(f"failover.sh exited {run.returncode}: {run.stderr.strip()[-500:]}")
    events = {}
    for line in run.stdout.splitlines():
        name, _, value = line.partition(" ")
        events[name] = float(value) - incident.timestamp()
    if "recovered" not in events:
        raise RuntimeError(f"failover.sh printed no recovered time: {run.stdout!r}")
    from lifeline.infra.lab import status

    after = status(lab.home)
    if after.databases.get(TARGET) != "primary" or after.dns.points_at != TARGET:
        raise RuntimeError(f"failover.sh left dr {after.databases.get(TARGET)}, DNS at {after.dns.points_at}")
    return Outcome(
        rto=events["recovered"],
        wall=returned - incident.timestamp(),
        phases=[
            (INJECTED, injected - incident.timestamp()),
            (DECLARED, events["started"] - (injected - incident.timestamp())),
            ("promote", events["promoted"] - events["started"]),
            ("dns switch", events["dns_switched"] - events["promoted"]),
            ("verify", events["recovered"] - events["dns_switched"]),
        ],
        milestones=events,
    )


@dataclass
class Failback:
    seconds: float
    planned_outage: float | None
    steps: dict[str, float]
    failed: str | None = None


def back_to_normal(lab: LabRun) -> Failback:
    """heal + failback_flow + heal; the lab rebuilt from scratch when failback fails (a finding)."""
    from lifeline.configs.settings import load_settings
    from lifeline.flows.failback import failback_flow
    from lifeline.infra.lab import heal
    from lifeline.tasks.ledger import Ledger

    heal(lab.home, log=quiet)  # clears faults.json (the next fault's time must be its own)
    started = time.perf_counter()
    try:
        record_id = failback_flow(str(lab.plan), approval="yes", reason="benchmark")
        seconds = time.perf_counter() - started
        record = Ledger(load_settings().ledger).run(record_id)
        if record is None or record.status != "completed":
            raise RuntimeError(f"run {record_id}: {record.status if record else 'no record'} "
                               f"{record.error if record else ''}")
        heal(lab.home, log=quiet)
        lab.wait_normal()
    except Exception as error:  # a finding: report it, rebuild the lab, go on
        log(f"FAILBACK FAILED ({type(error).__name__}: {error}); rebuilding the lab with down(purge) + up")
        lab.rebuild()
        return Failback(time.perf_counter() - started, None, {}, failed=f"{type(error).__name__}: {error}")
    return Failback(seconds, record.rto_seconds, {step.name: step.seconds or 0.0 for step in record.steps})


# --- fixed costs and probes ---------------------------------------------------------------------


def cli_argv() -> list[str]:
    script = Path(sys.executable).with_name("lifeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lifeline.flows.cli"]


def measured(argv: list[str], what: str, env: dict[str, str] | None = None) -> tuple[ProcessRun, float]:
    """A process's wall time (in ProcessRun) and its CPU seconds, user + system, children included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = run_timed(argv, env).check(what)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return run, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def in_process(function: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (every thread of this process) of one call."""
    cpu = time.process_time()
    wall, _ = timed(function)
    return wall, time.process_time() - cpu


def bytecode_cached_environment(cache: Path) -> dict[str, str]:
    """Python allowed to cache bytecode, in a folder of ours (PYTHONPYCACHEPREFIX): the shared venv is untouched."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    environment["PYTHONPYCACHEPREFIX"] = str(cache)
    return environment


def bytecode_note() -> str:
    import prefect

    package = Path(prefect.__file__).parent
    cached = sum(1 for _ in package.rglob("*.pyc"))
    sources = sum(1 for _ in package.rglob("*.py"))
    return (f"this machine: PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}, "
            f"PYTHONPYCACHEPREFIX={os.environ.get('PYTHONPYCACHEPREFIX', '(unset)')}; "
            f"the venv's prefect package has {cached} .pyc for {sources} .py files")


def fixed_costs(lab: LabRun, rounds: int, samples: Samples, cache: Path) -> None:
    from lifeline.configs.loading import load_plan
    from lifeline.flows.failover import describe_failover
    from lifeline.flows.verify import verify_flow

    plan = str(lab.plan)
    heartbeat_off = [sys.executable, "-c", "from lifeline.flows.cli import main, prefect_for_cli\n"
                                           "with prefect_for_cli(): main()"]
    dry_run = cli_argv() + ["failover", "--plan", plan, "--yes", "--dry-run"]
    verify = ["verify", "--plan", plan, "--site", SOURCE, "--json"]
    as_is, cached = dict(os.environ), bytecode_cached_environment(cache)
    processes = {
        "dry-run process": (dry_run, as_is),
        "dry-run process cached": (dry_run, cached),
        "verify process": (cli_argv() + verify, as_is),
        "verify process cached": (cli_argv() + verify, cached),
        "verify process cached heartbeat off": (heartbeat_off + verify, cached),
    }
    for name, (argv, env) in processes.items():  # fills the bytecode cache; not counted
        if env is cached:
            measured(argv, name, env)
    samples.bytecode_note = bytecode_note()
    for number in range(1, rounds + 1):
        for name, (argv, env) in processes.items():
            settle()
            run, cpu = measured(argv, name, env)
            if name.startswith("verify") and json.loads(run.stdout).get("status") != "completed":
                raise RuntimeError(f"lifeline verify: {run.stdout[:300]}")
            samples.add(name, run.seconds)
            samples.add(f"{name} cpu", cpu)
        wall, cpu = in_process(lambda: describe_failover(load_plan(Path(plan)).plan))
        samples.add("dry-run in-process", wall)
        samples.add("dry-run in-process cpu", cpu)
        settle()
        wall, cpu = in_process(lambda: verify_flow(plan, site=SOURCE))
        samples.add("verify in-process", wall)
        samples.add("verify in-process cpu", cpu)
        log(f"fixed costs {number}/{rounds}: " + ", ".join(f"{name} {samples.last(name):.2f} s" for name in processes)
            + f", verify in-process {samples.last('verify in-process'):.2f} s")


def probes(lab: LabRun, rounds: int, samples: Samples) -> None:
    """Where preflight and the DNS step spend their time (lab normal, nothing changed)."""
    from lifeline.configs.loading import load_plan
    from lifeline.configs.settings import load_settings
    from lifeline.tasks.commands import run_command
    from lifeline.tasks.failover import aws_session
    from lifeline.tasks.ledger import Ledger
    from lifeline.tasks.preflight import assess_readiness
    from lifeline.tasks.repositories import open_repository

    plan, settings = load_plan(lab.plan).plan, load_settings()
    repositories = sorted({dataset.repository for dataset in plan.datasets.values()})
    without_backups = plan.model_copy(update={"datasets": {}})
    hosts_and_databases_only = plan.model_copy(update={"datasets": {}, "aws": None})
    dns = plan.dns
    assert dns is not None
    from prefect import flow

    @flow(name="bench-noop", log_prints=False)
    def noop() -> None:
        return None

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    for _ in range(rounds):
        samples.add("probe noop flow", timed(noop)[0])
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            samples.add("probe noop flow heartbeat off", timed(noop)[0])
        samples.add("probe load plan", timed(lambda: load_plan(lab.plan))[0])
        samples.add("probe preflight", timed(lambda: assess_readiness(plan, settings, TARGET))[0])
        samples.add("probe preflight without backups",
                    timed(lambda: assess_readiness(without_backups, settings, TARGET))[0])
        samples.add("probe preflight ssh and sql only",
                    timed(lambda: assess_readiness(hosts_and_databases_only, settings, TARGET))[0])
        for name in repositories:
            repository = open_repository(plan, name, settings)
            samples.add("probe restic snapshots",
                        timed(lambda r=repository: r.snapshots(tags=[f"plan={plan.name}"]))[0])
            argv = repository.argv(["snapshots", "--json", "--no-lock", "--tag", f"plan={plan.name}"])
            seconds, result = timed(lambda r=repository, a=argv: run_command(a, env=r.restic_environment(), timeout=60))
            if result.returncode != 0:
                raise RuntimeError(f"restic snapshots --no-lock: {result.stderr[-300:]!r}")
            samples.add("probe restic snapshots no-lock", seconds)
        samples.add("probe ledger newest backup",
                    timed(lambda: Ledger(settings.ledger).runs(kind="backup", plan=plan.name, last=1))[0])
        seconds, session = timed(lambda: aws_session(plan))
        samples.add("probe aws cold", seconds + timed(lambda s=session: s.record_value(dns.zone, dns.record))[0])
        samples.add("probe aws warm", timed(lambda s=session: s.record_value(dns.zone, dns.record))[0])


# --- the benchmark ------------------------------------------------------------------------------


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lifeline: list[Outcome] = field(default_factory=list)
    shell: list[Outcome] = field(default_factory=list)
    warmup: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failbacks: list[Failback] = field(default_factory=list)
    rebuilds: int = 0
    shell_dns: str = "curl"
    bytecode_note: str = ""

    def add(self, name: str, value: float) -> None:
        self.values[name].append(value)

    def last(self, name: str) -> float:
        return self.values[name][-1]

    def median(self, name: str) -> float | None:
        return median(self.values[name]) if self.values.get(name) else None

    def spread(self, name: str) -> str:
        return spread(self.values[name]) if self.values.get(name) else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="failover", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed failovers of each kind (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed pairs first (default 1)")
    parser.add_argument("--cli-rounds", type=int, default=3, help="rounds of the fixed-cost measurements (default 3)")
    parser.add_argument("--shell-dns", choices=("curl", "python"), default="curl",
                        help="how the shell script calls Route 53: curl --aws-sigv4 (default) or python -c boto3")
    arguments = parser.parse_args(argv)
    if arguments.runs < 1 or arguments.warmup < 0 or arguments.cli_rounds < 1:
        parser.error("--runs and --cli-rounds must be at least 1, --warmup at least 0")
    if not SCRIPT.is_file():
        print(f"failover: {SCRIPT} is missing", file=sys.stderr)
        return 2
    quiet_prefect_environment()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with bench_tmpdir("lifeline-bench-failover-") as root:
        samples = run_benchmark(root, arguments)
    report(samples, arguments, (load_before, os.getloadavg()[0]))
    log(f"failover: {time.perf_counter() - started:.0f} s in all")
    return 0


def run_benchmark(root: Path, arguments: argparse.Namespace) -> Samples:
    from lifeline.infra.lab import down, up

    os.chmod(root, 0o755)  # the lab's PostgreSQL runs as its own user and must reach its data dirs
    home = root / "home"
    home.mkdir(mode=0o755)
    saved = {name: os.environ.get(name) for name in ("LIFELINE_HOME", "LIFELINE_PLAN", "LIFELINE_LEDGER_URL")}
    os.environ["LIFELINE_HOME"] = str(home)
    for name in ("LIFELINE_PLAN", "LIFELINE_LEDGER_URL"):
        os.environ.pop(name, None)
    samples = Samples(shell_dns=arguments.shell_dns)

    def start_lab() -> LabRun:
        seconds, plan = timed(lambda: up(home, free_ports=True, log=quiet))
        lab = LabRun(home=home, plan=Path(plan))
        lab.wait_normal()
        log(f"lab up and normal in {seconds:.1f} s: {plan}")
        return lab

    starting = ThreadPoolExecutor(1)
    lab_future = starting.submit(start_lab)  # while the Prefect server starts
    try:
        with prefect_server(root / "prefect", timeout=300):  # a loaded machine can take minutes
            lab = lab_future.result()
            lab.back_up()
            kinds: list[tuple[str, Callable[[LabRun], Outcome]]] = [("lifeline", lifeline_failover),
                                                                     ("shell", lambda lab: shell_failover(
                                                                         lab, arguments.shell_dns))]
            for number in range(-arguments.warmup + 1, arguments.runs + 1):
                # alternate which goes first, so a drift in the machine's load hits both alike
                for kind, function in kinds if number % 2 else kinds[::-1]:
                    lab.refresh_backups()
                    outcome = function(lab)
                    failback = back_to_normal(lab)
                    label = f"warm-up {number + arguments.warmup}" if number < 1 else f"run {number}/{arguments.runs}"
                    log(f"{label} {kind}: RTO {outcome.rto:.2f} s (returned after {outcome.wall:.2f} s); "
                        f"failback {failback.seconds:.2f} s" + (f" FAILED: {failback.failed}" if failback.failed else ""))
                    if number < 1:
                        samples.warmup[kind].append(outcome.rto)
                        continue
                    getattr(samples, kind).append(outcome)
                    samples.failbacks.append(failback)
            samples.rebuilds = lab.rebuilds
            fixed_costs(lab, arguments.cli_rounds, samples, root / "pycache")
            probes(lab, arguments.cli_rounds, samples)
    finally:
        starting.shutdown(wait=True)
        down(home, purge=True, log=quiet)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(home, ignore_errors=True)
    return samples


# --- the tables ---------------------------------------------------------------------------------


def median_run(outcomes: list[Outcome]) -> Outcome:
    """The run whose RTO is the median (the lower middle one for an even count)."""
    ordered = sorted(outcomes, key=lambda outcome: outcome.rto)
    return ordered[(len(ordered) - 1) // 2]


def phase_medians(outcomes: list[Outcome]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for outcome in outcomes:
        for name, seconds in outcome.phases:
            values[name].append(seconds)
    return {name: median(found) for name, found in values.items()}


def report(samples: Samples, arguments: argparse.Namespace, load: tuple[float, float]) -> None:
    ours, theirs = samples.lifeline, samples.shell

    def row(name: str, pick: Callable[[Outcome], float | None]) -> list:
        mine = [v for v in map(pick, ours) if v is not None]
        script = [v for v in map(pick, theirs) if v is not None]
        return [name, median(mine), median(script), ratio(median(mine), median(script)), spread(mine), spread(script)]

    rto_ours, rto_theirs = median([o.rto for o in ours]), median([o.rto for o in theirs])
    verdict = (f"median lab RTO {rto_ours:.2f} s: {'meets' if rto_ours <= RTO_GOAL_SECONDS else 'MISSES'} "
               f"<= {RTO_GOAL_SECONDS:g} s; {rto_ours / rto_theirs:.2f}x the shell script: "
               f"{'meets' if rto_ours <= RATIO_GOAL * rto_theirs else 'MISSES'} <= {RATIO_GOAL:g}x")
    print_table(
        ["", "lifeline median s", "shell median s", "ratio", "lifeline min-max", "shell min-max"],
        [
            row("failover RTO (fault -> recovered)", lambda o: o.rto),
            row("  fault -> promoted", lambda o: o.milestones.get("promoted")),
            row("  fault -> dns switched", lambda o: o.milestones.get("dns_switched")),
            row("fault -> failover returned", lambda o: o.wall),
        ],
        title=f"Lab failover, fault {FAULT} -> recovered: medians of {len(ours)} alternating runs each "
              f"(after {arguments.warmup} warm-up pair(s)); Lifeline in-process against a Prefect server",
        notes=[verdict,
               "recovered = the first of N consecutive healthy probes of dr (both: N and interval from the plan); "
               "the run returns N-1 intervals later",
               f"warm-up RTOs (not counted): lifeline {', '.join(f'{v:.2f}' for v in samples.warmup['lifeline']) or '-'}, "
               f"shell {', '.join(f'{v:.2f}' for v in samples.warmup['shell']) or '-'}"],
    )
    print()

    s = samples

    def fixed(name: str, process: str, inside: str, what: str) -> list:
        return [name, s.median(process), s.median(inside), _difference(s.median(process), s.median(inside)),
                s.spread(process), s.median(f"{process} cpu"), s.median(f"{inside} cpu"), what]

    print_table(
        ["fixed cost", "process s", "in-process s", "fixed s", "process min-max", "process cpu s",
         "in-process cpu s", "what"],
        [
            fixed("`lifeline failover --yes --dry-run`", "dry-run process", "dry-run in-process",
                  "CLI process vs load_plan + describe_failover"),
            fixed("  same, bytecode cached", "dry-run process cached", "dry-run in-process",
                  "PYTHONPYCACHEPREFIX, warmed"),
            fixed("`lifeline verify --site main --json`", "verify process", "verify in-process",
                  "CLI process (Prefect server) vs verify_flow in-process"),
            fixed("  same, bytecode cached", "verify process cached", "verify in-process", "PYTHONPYCACHEPREFIX, warmed"),
            fixed("  same, bytecode cached, flow heartbeat off", "verify process cached heartbeat off",
                  "verify in-process", "main() under cli.prefect_for_cli()"),
        ],
        notes=[samples.bytecode_note],
        title=f"CLI fixed cost ({arguments.cli_rounds} rounds; fixed = process minus in-process; "
              "cpu = user + system seconds, less sensitive than wall time to a loaded machine)",
    )
    print()

    good = [f for f in samples.failbacks if not f.failed]
    failed = [f for f in samples.failbacks if f.failed]
    step_names = list(dict.fromkeys(name for f in good for name in f.steps))
    print_table(
        ["failback (failback_flow in-process)", "median s", "min-max"],
        [["whole failback (call -> return)", median([f.seconds for f in good]), spread([f.seconds for f in good])],
         ["  planned outage (its record's RTO)", median([f.planned_outage for f in good if f.planned_outage is not None]),
          spread([f.planned_outage for f in good if f.planned_outage is not None])]]
        + [[f"  step: {name}", median([f.steps[name] for f in good if name in f.steps]),
            spread([f.steps[name] for f in good if name in f.steps])] for name in step_names],
        title=f"Failback after every failover: {len(good)} of {len(samples.failbacks)} succeeded"
              + (f"; {len(failed)} FAILED and the lab was rebuilt with down(purge)+up" if failed else ""),
        notes=[f"failed: {f.failed}" for f in failed],
    )
    print()

    mid, mid_shell = median_run(ours), median_run(theirs)
    all_ours, all_theirs = phase_medians(ours), phase_medians(theirs)
    shell_for = {
        INJECTED: INJECTED, DECLARED: DECLARED,
        f"promote crm at {TARGET}": "promote",
        f"switch dns to {TARGET}": "dns switch",
        f"verify {TARGET} (until recovered)": "verify",
    }
    shell_phases = dict(mid_shell.phases)
    rows = []
    for name, seconds in mid.phases:
        counterpart = shell_for.get(name)
        rows.append([name, seconds, all_ours.get(name),
                     shell_phases.get(counterpart) if counterpart else None,
                     all_theirs.get(counterpart) if counterpart else None])
    rows.append(["= RTO", mid.rto, None, mid_shell.rto, None])
    print_table(
        ["timeline from the fault", "lifeline s", "lifeline all-runs median s", "shell s", "shell all-runs median s"],
        rows,
        title=f"Where the time goes: the median Lifeline run (RTO {mid.rto:.2f} s) from its record's step times, "
              f"next to the median shell run (RTO {mid_shell.rto:.2f} s)",
        digits=3,
        notes=["'->' rows: time between two steps, outside any step (what the flow does there)",
               f"shell: '{DECLARED}' = bash start; promote = ssh + pg_ctl promote -w; dns switch = "
               f"{'python -c boto3' if samples.shell_dns == 'python' else 'curl --aws-sigv4'} UPSERT until INSYNC; "
               "verify = curl until the first 200 of the streak"],
    )
    print()

    print_table(
        ["probe (lab normal)", "median s", "min-max"],
        [
            ["an empty @flow, called in-process (Prefect's per-run cost)", s.median("probe noop flow"),
             s.spread("probe noop flow")],
            ["  same, flow heartbeat off", s.median("probe noop flow heartbeat off"),
             s.spread("probe noop flow heartbeat off")],
            ["load_plan (the lab's plan)", s.median("probe load plan"), s.spread("probe load plan")],
            ["preflight, as in the flow", s.median("probe preflight"), s.spread("probe preflight")],
            ["preflight without the backup-freshness probe", s.median("probe preflight without backups"),
             s.spread("probe preflight without backups")],
            ["preflight without backups and AWS (SSH + SQL probes only)", s.median("probe preflight ssh and sql only"),
             s.spread("probe preflight ssh and sql only")],
            ["restic snapshots (what the freshness probe runs)", s.median("probe restic snapshots"),
             s.spread("probe restic snapshots")],
            ["  same with --no-lock", s.median("probe restic snapshots no-lock"),
             s.spread("probe restic snapshots no-lock")],
            ["  instead: newest backup run from the ledger", s.median("probe ledger newest backup"),
             s.spread("probe ledger newest backup")],
            ["Route 53 read, new AwsSession (boto3 client built)", s.median("probe aws cold"), s.spread("probe aws cold")],
            ["Route 53 read, same session again", s.median("probe aws warm"), s.spread("probe aws warm")],
        ],
        title=f"Probes: where the flow's own time goes ({arguments.cli_rounds} rounds)",
        digits=3,
    )
    print()
    print(f"lab rebuilds (failback failed): {samples.rebuilds}")
    print(f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores")
    sys.stdout.flush()


def _difference(process: float | None, in_process: float | None) -> float | None:
    return None if process is None or in_process is None else process - in_process


if __name__ == "__main__":
    sys.exit(main())
