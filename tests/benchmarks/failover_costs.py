"""Failover benchmark, its fixed costs and probes (lab normal): the CLI as a process next to the same
work in-process, and where the flow's own time goes. Used by failover.py (a helper module, not a benchmark).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

from tests.benchmarks.common import ProcessRun, cli_argv, cli_heartbeat_off_argv, log, run_timed, settle, timed
from tests.benchmarks.failover_runs import SOURCE, TARGET, Samples
from tests.benchmarks.lab import LabRun


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
    heartbeat_off = cli_heartbeat_off_argv()
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
    from lifeline.tasks.adapters.commands import run_command
    from lifeline.tasks.run.ledger import Ledger
    from lifeline.tasks.steps.failover import dns_account
    from lifeline.tasks.steps.preflight import assess_readiness
    from lifeline.tasks.steps.repositories import open_repository

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
        seconds, session = timed(lambda: dns_account(plan))
        samples.add("probe aws cold", seconds + timed(lambda s=session: s.record_value(dns.zone, dns.record))[0])
        samples.add("probe aws warm", timed(lambda s=session: s.record_value(dns.zone, dns.record))[0])
