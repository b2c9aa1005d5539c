"""Failover benchmark, its runs: one failover each way (Lifeline's flow, the shell script) and the
failback after it, and the samples they add up to. Used by failover.py (a helper module, not a benchmark).
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.benchmarks.common import NamedSamples, log, run_timed, settle
from tests.benchmarks.lab import LabRun, quiet

FAULT = "main-db-down"
SOURCE, TARGET = "main", "dr"
SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "bench" / "failover.sh"


# --- the shell script's inputs ------------------------------------------------------------------


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
    from lifeline.tasks.run.ledger import Ledger

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
    "probe": "has_taken_over(): dr's role, Route 53 read",
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
    from lifeline.tasks.run.ledger import Ledger

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


# --- the samples --------------------------------------------------------------------------------


@dataclass
class Samples(NamedSamples):
    """Every number the failover benchmark reports: NamedSamples for fixed costs and probes, and the runs."""

    lifeline: list[Outcome] = field(default_factory=list)
    shell: list[Outcome] = field(default_factory=list)
    warmup: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failbacks: list[Failback] = field(default_factory=list)
    rebuilds: int = 0
    shell_dns: str = "curl"
    bytecode_note: str = ""
