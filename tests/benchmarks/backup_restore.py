"""Backup and restore benchmark: Lifeline's flows next to bare restic doing the same work.

    uv run python -m tests.benchmarks.run backup_restore [--size-mib 1024] [--rounds 3] [--cli-rounds 3]

One run, side by side, on a generated data set (about 2,000 small files and a few large ones of
random bytes under $TMPDIR; generating it is not timed):

- bare restic, run here with subprocess: `restic backup --json --tag ... --host ... -- PATH` into a
  fresh repository with a fresh cache dir (cold), then `restic restore latest --target DIR --verify`;
- Lifeline in this process against a Prefect server started here: `backup_flow(plan)` (one files
  dataset, no retention, no copy, `check --read-data-subset 1K`), then `restore_flow(...)`.
  The restic work inside the flow is read from the run record's step timings (`backup recordings`,
  `restore recordings to staging and verify`); the other steps and the rest of the flow (Prefect,
  ledger, artifacts) are reported apart, as overhead;
- the fixed cost of Prefect and the CLI on a one-file plan: the flow in-process, `lifeline backup
  --plan ... --json` as a process against the server, the same with the flow heartbeat off (the CLI's
  `prefect_for_cli()`), and with an ephemeral Prefect (no PREFECT_API_URL). Each run's own step time
  (its restic work, read from its run record) is taken off its wall time, so restic's noise stays out.

Fairness: both repositories of a round are copies of one repository initialised once (`restic init`
is not timed), so they share KDF parameters and chunker polynomial; each round gets fresh copies
and empty caches. Bare and Lifeline alternate (bare, Lifeline, bare, Lifeline) and the tables show
medians. Before each timed run the file systems are synced. The source data sits in the page cache
for both. restic calls made by Lifeline are timed by wrapping `lifeline.tasks.restic.run_command`
in this process (an observer only: arguments and results pass through unchanged).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tests.benchmarks.common import (
    CpuMeter,
    CpuUse,
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

DATASET = "recordings"
REPOSITORY = "local"
PLAN_NAME = "bench"
CHECK_SUBSET = "1K"  # the smallest subset restic 0.14 accepts: check still reads every index and tree
GOAL = 1.05
CHUNK = 8 << 20
EPHEMERAL_STARTUP_TIMEOUT = 120


# --- the data set -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    root: Path
    files: int
    bytes: int


def generate_dataset(root: Path, size_bytes: int, small_files: int = 2000, large_files: int = 4,
                     seed: int = 2026) -> DataSet:
    """An eighth of the bytes in up to `small_files` small files (64 KiB on average at 1 GiB) in 40
    folders, the rest in `large_files` large ones. Mersenne Twister bytes: incompressible, repeatable."""
    rng = random.Random(seed)
    small_total = size_bytes // 8
    count = max(1, min(small_files, small_total // 1024))
    average = small_total // count
    sizes = [rng.randint(average // 2, average * 3 // 2) for _ in range(count)]
    large = max(1, large_files)
    large_size = max(0, size_bytes - sum(sizes)) // large
    written = 0
    for index, size in enumerate(sizes):
        folder = root / "calls" / f"day-{index % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"call-{index:05d}.wav").write_bytes(rng.randbytes(size))
        written += size
    (root / "archives").mkdir(parents=True, exist_ok=True)
    for index in range(large):
        with open(root / "archives" / f"month-{index + 1:02d}.tar", "wb") as output:
            remaining = large_size
            while remaining:
                chunk = min(CHUNK, remaining)
                output.write(rng.randbytes(chunk))
                remaining -= chunk
        written += large_size
    return DataSet(root=root, files=count + large, bytes=written)


def measure_tree(root: Path) -> tuple[int, int]:
    files = total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            files, total = files + 1, total + os.lstat(os.path.join(folder, name)).st_size
    return files, total


def expect_restored(root: Path, data: DataSet, who: str) -> None:
    found = measure_tree(root)
    if found != (data.files, data.bytes):
        raise RuntimeError(f"{who}: restored {found[0]} files / {found[1]} bytes, expected {data.files} / {data.bytes}")


# --- bare restic --------------------------------------------------------------------------------


def restic_binary() -> str:
    return os.environ.get("LIFELINE_RESTIC_BINARY", "restic")  # the binary Lifeline's settings would use


def restic_environment(repository: Path, password_file: Path, cache_dir: Path) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("RESTIC_")}
    environment.update(
        RESTIC_REPOSITORY=str(repository), RESTIC_PASSWORD_FILE=str(password_file), RESTIC_CACHE_DIR=str(cache_dir)
    )
    return environment


def restic_init(repository: Path, password_file: Path, scratch: Path) -> None:
    run_timed([restic_binary(), "init"], restic_environment(repository, password_file, scratch / "init-cache")).check(
        "restic init"
    )
    shutil.rmtree(scratch / "init-cache", ignore_errors=True)


def fresh_copy(template: Path, repository: Path) -> None:
    shutil.rmtree(repository, ignore_errors=True)
    shutil.copytree(template, repository)


def bare_backup(environment: dict[str, str], data: DataSet) -> float:
    tags = f"plan={PLAN_NAME},dataset={DATASET}"
    run = run_timed(
        [restic_binary(), "backup", "--json", "--tag", tags, "--host", socket.gethostname(), "--", str(data.root)],
        environment,
    ).check("restic backup")
    summary = [line for line in map(_json_line, run.stdout.splitlines()) if line.get("message_type") == "summary"]
    if not summary or summary[-1].get("total_files_processed") != data.files:
        raise RuntimeError(f"restic backup: unexpected summary {summary[-1:] or run.stdout[-300:]}")
    return run.seconds


def bare_restore(environment: dict[str, str], target: Path, data: DataSet) -> float:
    run = run_timed([restic_binary(), "restore", "latest", "--target", str(target), "--verify"], environment)
    run.check("restic restore")
    expect_restored(target / data.root.relative_to(data.root.anchor), data, "restic restore")
    return run.seconds


def _json_line(line: str) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- Lifeline in-process ------------------------------------------------------------------------


@dataclass
class FlowRun:
    seconds: float  # the in-process call, end to end
    steps: dict[str, float]  # from the run record
    restic: list[tuple[str, float, float]]  # every restic process the flow ran, in order: name, wall s, CPU s

    def restic_seconds(self, operation: str) -> float:
        return sum(seconds for name, seconds, _ in self.restic if name == operation)

    def restic_cpu(self, operation: str) -> float:
        return sum(cpu for name, _, cpu in self.restic if name == operation)


class ResticCalls:
    """Times every restic process Lifeline starts in this process (wraps tasks.restic.run_command).

    CPU is the growth of RUSAGE_CHILDREN's user time over the call (system time swings with the host's
    I/O load; user time is restic's own work): right while the flow runs one restic at a time, as the
    one-dataset plans here do.
    """

    def __init__(self) -> None:
        from lifeline.tasks import restic

        self.calls: list[tuple[str, float, float]] = []
        self._module = restic
        self._original = restic.run_command

        def recorded(argv, *args, **kwargs):
            cpu, started = children_user_seconds(), time.perf_counter()
            try:
                return self._original(argv, *args, **kwargs)
            finally:
                self.calls.append(
                    (operation_name(argv), time.perf_counter() - started, children_user_seconds() - cpu))

        restic.run_command = recorded

    def take(self) -> list[tuple[str, float, float]]:
        calls, self.calls = self.calls, []
        return calls

    def close(self) -> None:
        self._module.run_command = self._original


def children_user_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime


def operation_name(argv) -> str:
    words = [str(word) for word in argv[1:] if not str(word).startswith("-")]
    if words[:1] == ["cat"]:
        return " ".join(words[:2])
    return words[0] if words else "?"


def run_flow(call: Callable[[], str], calls: ResticCalls) -> FlowRun:
    from lifeline.configs.settings import load_settings
    from lifeline.tasks.ledger import Ledger

    calls.take()
    seconds, record_id = timed(call)
    record = Ledger(load_settings().ledger).run(record_id)
    if record is None or record.status != "completed":
        raise RuntimeError(f"run {record_id}: {record.status if record else 'no record'}")
    return FlowRun(seconds=seconds, steps={s.name: s.seconds or 0.0 for s in record.steps}, restic=calls.take())


def write_plan(path: Path, name: str, data_root: Path, repository: Path, password_file: Path) -> Path:
    plan = {
        "name": name,
        "timezone": "UTC",
        "targets": {"rto_minutes": 60, "rpo_minutes": 1440},
        "repositories": {REPOSITORY: {"url": str(repository), "password_file": str(password_file), "init": False}},
        "datasets": {DATASET: {"repository": REPOSITORY, "paths": [str(data_root)]}},
        "checks": {"read_data_subset": CHECK_SUBSET},
    }
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


# --- the benchmark ------------------------------------------------------------------------------


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    restic_calls: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, name: str, value: float) -> None:
        self.values[name].append(value)

    def add_cpu(self, name: str, use: CpuUse) -> None:
        self.add(f"cpu restic {name}", use.children)
        self.add(f"user restic {name}", use.children_user)
        self.add(f"cpu own {name}", use.own)
        self.add(f"cpu server {name}", use.server)

    def add_run(self, name: str, total: float, steps: float) -> None:
        self.add(f"{name} total", total)
        self.add(f"{name} fixed", total - steps)

    def median(self, name: str) -> float | None:
        return median(self.values[name]) if self.values.get(name) else None

    def spread(self, name: str) -> str:
        return spread(self.values[name]) if self.values.get(name) else ""


def size_label(size_mib: int) -> str:
    return f"{size_mib // 1024} GiB" if size_mib % 1024 == 0 else f"{size_mib} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backup_restore", description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the data set (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/Lifeline rounds (default 3)")
    parser.add_argument("--cli-rounds", type=int, default=3, help="rounds of the fixed-cost measurements (default 3)")
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--large-files", type=int, default=4)
    arguments = parser.parse_args(argv)
    if arguments.size_mib < 1 or arguments.rounds < 1 or arguments.cli_rounds < 1:
        parser.error("--size-mib, --rounds and --cli-rounds must be at least 1")
    if shutil.which(restic_binary()) is None:
        print(f"backup_restore: {restic_binary()} not found (run `make setup`)", file=sys.stderr)
        return 2
    quiet_prefect_environment()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with bench_tmpdir("lifeline-bench-backup-") as root:
        samples = run_benchmark(root, arguments)
    report(samples, arguments, (load_before, os.getloadavg()[0]))
    log(f"backup_restore: {time.perf_counter() - started:.0f} s in all")
    return 1 if samples.failures else 0


def run_benchmark(root: Path, arguments: argparse.Namespace) -> Samples:
    samples = Samples()
    home = root / "lifeline-home"
    saved_home = os.environ.get("LIFELINE_HOME")
    os.environ["LIFELINE_HOME"] = str(home)
    for name in ("LIFELINE_PLAN", "LIFELINE_LEDGER_URL"):
        os.environ.pop(name, None)
    try:
        seconds, data = timed(lambda: generate_dataset(
            root / "data", arguments.size_mib << 20, arguments.small_files, arguments.large_files))
        log(f"data set: {data.files} files, {data.bytes / 2**20:.0f} MiB in {data.root} ({seconds:.1f} s, not timed)")
        password_file = root / "restic.pw"
        password_file.write_text("benchmark-" + os.urandom(8).hex() + "\n")
        password_file.chmod(0o600)
        template = root / "repo-template"
        restic_init(template, password_file, root)
        tiny_data = root / "tiny-data"
        tiny_data.mkdir()
        (tiny_data / "note.txt").write_bytes(os.urandom(1024))
        restic_init(root / "repo-tiny", password_file, root)
        plan = write_plan(root / "plan.yaml", PLAN_NAME, data.root, root / "repo-lifeline", password_file)
        tiny_plan = write_plan(root / "plan-tiny.yaml", PLAN_NAME + "-tiny", tiny_data, root / "repo-tiny", password_file)

        with prefect_server(root / "prefect") as server:
            from lifeline.flows.backup import backup_flow
            from lifeline.flows.restore import restore_flow

            calls, meter = ResticCalls(), CpuMeter(server)
            try:
                # The first flow runs of a process pay one-time costs (clients, flow registration): count them apart.
                first = run_flow(lambda: backup_flow(str(tiny_plan)), calls)
                samples.add_run("first tiny flow", first.seconds, sum(first.steps.values()))
                run_flow(lambda: restore_flow(str(tiny_plan), DATASET, str(root / "tiny-restored")), calls)
                shutil.rmtree(root / "tiny-restored")
                for number in range(1, arguments.rounds + 1):
                    core_round(number, root, data, plan, password_file, template, calls, meter, samples,
                               arguments.rounds)
                fixed_costs(root, tiny_plan, server.api_url, calls, samples, arguments.cli_rounds)
            finally:
                calls.close()
    finally:
        if saved_home is None:
            os.environ.pop("LIFELINE_HOME", None)
        else:
            os.environ["LIFELINE_HOME"] = saved_home
    return samples


def core_round(number: int, root: Path, data: DataSet, plan: Path, password_file: Path, template: Path,
               calls: ResticCalls, meter: CpuMeter, samples: Samples, rounds: int) -> None:
    from lifeline.configs.settings import load_settings
    from lifeline.flows.backup import backup_flow
    from lifeline.flows.restore import restore_flow

    bare_repository, bare_cache = root / "repo-bare", root / "cache-bare"
    lifeline_repository, lifeline_cache = root / "repo-lifeline", load_settings().restic_cache_dir
    bare_env = restic_environment(bare_repository, password_file, bare_cache)

    # bare backup, Lifeline backup: both into fresh copies of the template, with empty caches
    fresh_copy(template, bare_repository)
    shutil.rmtree(bare_cache, ignore_errors=True)
    settle()
    with meter.measure() as use:
        samples.add("bare backup", bare_backup(bare_env, data))
    samples.add_cpu("bare backup", use())

    fresh_copy(template, lifeline_repository)
    shutil.rmtree(lifeline_cache, ignore_errors=True)
    settle()
    with meter.measure() as use:
        backup = run_flow(lambda: backup_flow(str(plan)), calls)
    samples.add_cpu("backup flow", use())
    record_backup(backup, samples)

    # bare restore, Lifeline restore: each from the repository it just wrote (caches as the backup left them)
    bare_target, lifeline_target = root / "restored-bare", root / "restored-lifeline"
    settle()
    with meter.measure() as use:
        samples.add("bare restore", bare_restore(bare_env, bare_target, data))
    samples.add_cpu("bare restore", use())
    settle()
    with meter.measure() as use:
        restore = run_flow(lambda: restore_flow(str(plan), DATASET, str(lifeline_target)), calls)
    samples.add_cpu("restore flow", use())
    expect_restored(lifeline_target, data, "restore flow")
    record_restore(restore, samples)
    log(
        f"round {number}/{rounds}: backup bare {samples.values['bare backup'][-1]:.2f} s, "
        f"step {samples.values['backup step'][-1]:.2f} s (flow {backup.seconds:.2f} s); "
        f"restore bare {samples.values['bare restore'][-1]:.2f} s, "
        f"step {samples.values['restore step'][-1]:.2f} s (flow {restore.seconds:.2f} s)"
    )
    # Deleting happens between rounds, not between the runs compared (the file system discards freed blocks).
    for path in (bare_target, lifeline_target, bare_repository, lifeline_repository):
        shutil.rmtree(path)


def record_backup(run: FlowRun, samples: Samples) -> None:
    step = run.steps[f"backup {DATASET}"]
    samples.add("backup step", step)
    samples.add("backup restic", run.restic_seconds("backup"))
    samples.add("backup restic cpu", run.restic_cpu("backup"))
    samples.add("backup step beyond restic backup", step - run.restic_seconds("backup"))
    samples.add("backup step snapshots", run.restic_seconds("snapshots"))
    samples.add("backup flow", run.seconds)
    for name in (f"prepare {REPOSITORY}", f"prune {REPOSITORY}", f"check {REPOSITORY}"):
        samples.add(name, run.steps[name])
    samples.add("backup flow outside steps", run.seconds - sum(run.steps.values()))
    samples.restic_calls["backup"] = run.restic
    unexpected = set(run.steps) - {f"backup {DATASET}", f"prepare {REPOSITORY}", f"prune {REPOSITORY}",
                                   f"check {REPOSITORY}"}
    if unexpected:
        log(f"backup flow had steps this benchmark does not report: {sorted(unexpected)}")


def record_restore(run: FlowRun, samples: Samples) -> None:
    step = run.steps[f"restore {DATASET} to staging and verify"]
    samples.add("restore step", step)
    samples.add("restore restic", run.restic_seconds("restore"))
    samples.add("restore restic cpu", run.restic_cpu("restore"))
    samples.add("restore step beyond restic restore", step - run.restic_seconds("restore"))
    samples.add("restore step ls", run.restic_seconds("ls"))
    samples.add("restore flow", run.seconds)
    samples.add("choose snapshot", run.steps["choose snapshot"])
    samples.add("check target + put in place", run.steps["check target"] + run.steps["put in place"])
    samples.add("restore flow outside steps", run.seconds - sum(run.steps.values()))
    samples.restic_calls["restore"] = run.restic


def cli_argv() -> list[str]:
    script = Path(sys.executable).with_name("lifeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lifeline.flows.cli"]


def fixed_costs(root: Path, tiny_plan: Path, api_url: str, calls: ResticCalls, samples: Samples, rounds: int) -> None:
    """One-file plan. Each run's own step time (its restic work) is taken off its wall time, so what
    is left is the fixed cost: interpreter, imports, Prefect, ledger, artifacts, exit."""
    from lifeline.flows.backup import backup_flow

    arguments = ["backup", "--plan", str(tiny_plan), "--json"]
    server_env = {**os.environ, "PREFECT_API_URL": api_url}
    ephemeral_env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    ephemeral_env["PREFECT_HOME"] = str(root / "prefect-ephemeral")
    # Prefect gives its temporary server 20 s to start; a busy 2-core machine can need more.
    ephemeral_env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT))
    heartbeat_off = [sys.executable, "-c", "from lifeline.flows.cli import main, prefect_for_cli\n"
                                           "with prefect_for_cli(): main()"]
    variants = {
        "cli server": (cli_argv() + arguments, server_env),
        "cli server heartbeat off": (heartbeat_off + arguments, server_env),
    }
    for number in range(1, rounds + 1):
        settle()
        run = run_flow(lambda: backup_flow(str(tiny_plan)), calls)
        samples.add_run("tiny flow", run.seconds, sum(run.steps.values()))
        for name, (argv, env) in variants.items():
            settle()
            cli_sample(samples, name, argv, env)
        log(f"fixed costs {number}/{rounds}: in-process flow {samples.values['tiny flow total'][-1]:.2f} s, "
            + ", ".join(f"{name} {samples.values[name + ' total'][-1]:.2f} s"
                        for name in variants if samples.values.get(name + " total")))
    # Ephemeral Prefect: the first run creates its database; a second one is the everyday case.
    for name in ("cli ephemeral first", "cli ephemeral"):
        settle()
        if cli_sample(samples, name, cli_argv() + arguments, ephemeral_env):
            log(f"{name}: {samples.values[name + ' total'][-1]:.2f} s")
    settle()
    samples.add_run("import", run_timed([sys.executable, "-c", "import lifeline.flows.backup"], server_env)
                    .check("import lifeline.flows.backup").seconds, 0.0)


def cli_sample(samples: Samples, name: str, argv: list[str], env: dict[str, str]) -> bool:
    """A failed CLI run is reported (and fails the benchmark at the end) but keeps the other numbers."""
    try:
        samples.add_run(name, *run_cli(argv, env))
    except RuntimeError as error:
        samples.failures.append(f"{name}: {error}")
        log(f"{name}: FAILED: {error}")
        return False
    return True


def run_cli(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds of the process, seconds in the steps of the run record it printed)"""
    run = run_timed(argv, env).check("lifeline backup")
    try:
        record = json.loads(run.stdout)
    except ValueError:
        raise RuntimeError(f"lifeline backup --json printed no JSON: {run.stdout[:200]!r}") from None
    if record.get("status") != "completed":
        raise RuntimeError(f"lifeline backup: run {record.get('id')} {record.get('status')}: {record.get('error')}")
    steps = sum(
        (datetime.fromisoformat(step["ended_at"]) - datetime.fromisoformat(step["started_at"])).total_seconds()
        for step in record["steps"]
    )
    return run.seconds, steps


# --- the tables ---------------------------------------------------------------------------------


def report(samples: Samples, arguments: argparse.Namespace, load: tuple[float, float]) -> None:
    s = samples
    label = size_label(arguments.size_mib)

    def row(name: str, bare: str, ours: str) -> list:
        return [name, s.median(bare), s.median(ours), ratio(s.median(ours), s.median(bare)),
                s.spread(bare), s.spread(ours)]

    print_table(
        ["", "bare restic s", "lifeline step s", "ratio", "bare min-max", "lifeline min-max"],
        [
            row(f"backup {label} (cold)", "bare backup", "backup step"),
            row("  restic backup process alone", "bare backup", "backup restic"),
            row("  its user CPU s (less load-bound)", "user restic bare backup", "backup restic cpu"),
            row(f"restore {label} + verify", "bare restore", "restore step"),
            row("  restic restore process alone", "bare restore", "restore restic"),
            row("  its user CPU s (less load-bound)", "user restic bare restore", "restore restic cpu"),
            row("whole backup flow, in-process", "bare backup", "backup flow"),
            row("whole restore flow, in-process", "bare restore", "restore flow"),
        ],
        title=f"Backup and restore of {label}: medians of {arguments.rounds} alternating rounds "
              f"(goal: step <= {GOAL:.2f}x bare restic)",
    )
    print()

    def step(name: str, sample: str, total: str, what: str) -> list:
        return [name, s.median(sample), s.spread(sample), s.median(total), what]

    def fixed(name: str, sample: str, what: str) -> list:
        return [name, s.median(f"{sample} fixed"), s.spread(f"{sample} fixed"), s.median(f"{sample} total"), what]

    print_table(
        ["overhead", "s", "min-max", "of total s", "what"],
        [
            step("backup flow: prepare step", f"prepare {REPOSITORY}", "backup flow", "restic cat config"),
            step("backup step beyond restic backup", "backup step beyond restic backup", "backup flow",
                 "restic snapshots (new snapshot's time, previous one) + lock"),
            step("backup flow: prune step", f"prune {REPOSITORY}", "backup flow",
                 "restic prune (no retention: nothing to remove)"),
            step("backup flow: check step", f"check {REPOSITORY}", "backup flow",
                 f"restic check --read-data-subset {CHECK_SUBSET}"),
            step("backup flow outside steps", "backup flow outside steps", "backup flow",
                 "Prefect flow/task runs, ledger, artifacts, heartbeat"),
            step("restore flow: choose snapshot", "choose snapshot", "restore flow", "restic snapshots"),
            step("restore step beyond restic restore", "restore step beyond restic restore", "restore flow",
                 "restic ls + size of every file"),
            step("restore flow: check target, put in place", "check target + put in place", "restore flow",
                 "rename"),
            step("restore flow outside steps", "restore flow outside steps", "restore flow",
                 "Prefect flow/task runs, ledger, artifacts, heartbeat"),
            fixed("in-process backup_flow, one-file plan", "tiny flow", "warm process, Prefect server"),
            fixed("  first flow run of the process", "first tiny flow", "clients, flow registration"),
            fixed("CLI process, Prefect server", "cli server", "`lifeline backup --plan P --json`"),
            fixed("  same, flow heartbeat off", "cli server heartbeat off", "main() under cli.prefect_for_cli()"),
            fixed("CLI process, ephemeral Prefect", "cli ephemeral",
                  f"no PREFECT_API_URL; 1 run; startup timeout {EPHEMERAL_STARTUP_TIMEOUT} s"),
            fixed("  first ephemeral run", "cli ephemeral first", "creates the Prefect database"),
            fixed("python -c 'import lifeline.flows.backup'", "import", "interpreter + imports; 1 run"),
        ],
        title=f"Overhead: the flows' other steps ({label}, {arguments.rounds} rounds), and fixed costs "
              f"(one-file plan, {arguments.cli_rounds} rounds; s = wall time minus the run's steps)",
    )
    print()
    runs = ("bare backup", "backup flow", "bare restore", "restore flow")
    print_table(
        ["CPU seconds meanwhile", *runs],
        [
            ["restic processes", *(s.median(f"cpu restic {run}") for run in runs)],
            ["this Python process (flow, output drains)", *(s.median(f"cpu own {run}") for run in runs)],
            ["Prefect server", *(s.median(f"cpu server {run}") for run in runs)],
        ],
        title=f"CPU used while each ran ({label}, medians; user + system, on {os.cpu_count()} cores)",
    )
    print()
    for kind in ("backup", "restore"):
        listed = ", ".join(f"{name} {seconds:.2f} ({cpu:.2f})" for name, seconds, cpu in s.restic_calls.get(kind, []))
        print(f"restic processes of the last {kind} flow, wall s (user CPU s): {listed}")
    print("bare restic: one process each (backup; restore --verify)")
    print(f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores")
    for failure in s.failures:
        print(f"FAILED {failure}")
    sys.stdout.flush()

if __name__ == "__main__":
    sys.exit(main())
