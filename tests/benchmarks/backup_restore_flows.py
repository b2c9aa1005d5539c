"""Backup and restore benchmark, Lifeline's side: the flows run in-process with every restic call timed,
the samples they add, and the fixed cost of Prefect and the CLI on a one-file plan. Used by
backup_restore.py (a helper module, not a benchmark).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tests.benchmarks.backup_restore_bare import DATASET
from tests.benchmarks.common import (
    CpuUse,
    NamedSamples,
    cli_argv,
    cli_heartbeat_off_argv,
    log,
    run_timed,
    settle,
    timed,
)

REPOSITORY = "local"
CHECK_SUBSET = "1K"  # the smallest subset restic 0.14 accepts: check still reads every index and tree
EPHEMERAL_STARTUP_TIMEOUT = 120


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
        from lifeline.tasks.adapters import restic

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
    from lifeline.tasks.run.ledger import Ledger

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
        "repositories": {REPOSITORY: {"url": str(repository), "password_file": str(password_file), "init": False,
                                      "prune_every_hours": 0}},
        "datasets": {DATASET: {"repository": REPOSITORY, "paths": [str(data_root)]}},
        "checks": {"read_data_subset": CHECK_SUBSET, "every_hours": 0},  # this benchmark times every step, every run
    }
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


# --- the samples --------------------------------------------------------------------------------


@dataclass
class Samples(NamedSamples):
    """NamedSamples (wall and CPU seconds by name), the last flows' restic calls, and failed CLI runs."""

    restic_calls: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add_cpu(self, name: str, use: CpuUse) -> None:
        self.add(f"cpu restic {name}", use.children)
        self.add(f"user restic {name}", use.children_user)
        self.add(f"cpu own {name}", use.own)
        self.add(f"cpu server {name}", use.server)

    def add_run(self, name: str, total: float, steps: float) -> None:
        self.add(f"{name} total", total)
        self.add(f"{name} fixed", total - steps)


def record_step(run: FlowRun, samples: Samples, kind: str, step_name: str, other: str) -> None:
    """What every flow run of `kind` (backup, restore) adds: its step that runs restic `kind`, restic's
    own time in it, the rest of the step (and restic `other`'s part of that), the whole flow, and the
    flow's time outside its steps."""
    step = run.steps[step_name]
    samples.add(f"{kind} step", step)
    samples.add(f"{kind} restic", run.restic_seconds(kind))
    samples.add(f"{kind} restic cpu", run.restic_cpu(kind))
    samples.add(f"{kind} step beyond restic {kind}", step - run.restic_seconds(kind))
    samples.add(f"{kind} step {other}", run.restic_seconds(other))
    samples.add(f"{kind} flow", run.seconds)
    samples.add(f"{kind} flow outside steps", run.seconds - sum(run.steps.values()))
    samples.restic_calls[kind] = run.restic


def record_backup(run: FlowRun, samples: Samples) -> None:
    record_step(run, samples, "backup", f"backup {DATASET}", "snapshots")
    for name in (f"prepare {REPOSITORY}", f"prune {REPOSITORY}", f"check {REPOSITORY}"):
        samples.add(name, run.steps[name])
    unexpected = set(run.steps) - {f"backup {DATASET}", f"prepare {REPOSITORY}", f"prune {REPOSITORY}",
                                   f"check {REPOSITORY}"}
    if unexpected:
        log(f"backup flow had steps this benchmark does not report: {sorted(unexpected)}")


def record_restore(run: FlowRun, samples: Samples) -> None:
    record_step(run, samples, "restore", f"restore {DATASET} to staging and verify", "ls")
    samples.add("choose snapshot", run.steps["choose snapshot"])
    samples.add("check target + put in place", run.steps["check target"] + run.steps["put in place"])


# --- fixed costs --------------------------------------------------------------------------------


def fixed_costs(root: Path, tiny_plan: Path, api_url: str, calls: ResticCalls, samples: Samples, rounds: int) -> None:
    """One-file plan. Each run's own step time (its restic work) is taken off its wall time, so what
    is left is the fixed cost: interpreter, imports, Prefect, ledger, artifacts, exit."""
    from lifeline.flows.backup import backup_flow

    arguments = ["backup", "--plan", str(tiny_plan), "--json"]
    server_env = {**os.environ, "PREFECT_API_URL": api_url}
    ephemeral_env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    ephemeral_env["PREFECT_HOME"] = str(root / "prefect-ephemeral")
    ephemeral_env["LIFELINE_PREFECT"] = "ephemeral"  # not Lifeline's background server (the default now)
    # Prefect gives its temporary server 20 s to start; a busy 2-core machine can need more.
    ephemeral_env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT))
    heartbeat_off = cli_heartbeat_off_argv()
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
