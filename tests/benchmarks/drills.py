"""Drill benchmark: wall time of each built-in drill on a lab of its own, with RTO and RPO from its record.

    uv run python -m tests.benchmarks.run drills [--runs 1] [--scenario NAME ...]

One lab (free ports, its own LIFELINE_HOME under $TMPDIR), one Prefect server started here, and one
untimed backup (preflight wants each dataset's newest snapshot within its RPO target; datasets whose
target is short are backed up again, untimed, between drills). Then every built-in scenario in turn,
`drill_flow(plan, scenario)` IN this process, the way `lifeline drill` runs it:

- wall: the whole drill, from the normal state back to the normal state (normal-state check, sentinel,
  fault, detection, recovery, sentinel check, score, and the return to normal: undo, failback,
  sentinels removed);
- RTO, RPO and met targets: the run record's (RTO from the fault's own time to the first of the
  healthy verification rounds, or to the restored data in place; RPO: the data lost, or for a
  restore the age of the snapshot restored at the incident);
- detect: fault to the `detected` milestone; back: the `return to normal` step.

data-leak's new repository is removed after each run. After each drill the lab must be normal again;
when it is not, that is reported and the lab is repaired (heal, failback) or rebuilt before the next one.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.benchmarks.common import bench_tmpdir, log, print_table, quiet_prefect_environment, spread
from tests.benchmarks.lab import LabRun, backed_up_lab, quiet

SCENARIOS = ["site-loss", "network-outage", "system-crash", "data-corruption", "data-leak"]


@dataclass
class Outcome:
    scenario: str
    wall: float
    status: str
    rto: float | None = None
    rpo: float | None = None
    met: bool | None = None
    detect: float | None = None
    back: float | None = None
    rto_target: float | None = None
    rpo_target: float | None = None
    error: str | None = None
    left_not_normal: list[str] = field(default_factory=list)


def repair(lab: LabRun) -> None:
    """Heal and fail back; rebuild from scratch when that is not enough (reported as a finding)."""
    from lifeline.flows.failback import failback_flow
    from lifeline.infra.lab import heal, status

    try:
        heal(lab.home, log=quiet)
        if status(lab.home).databases.get("dr") == "primary":
            failback_flow(str(lab.plan), approval="yes", reason="benchmark repair")
        heal(lab.home, log=quiet)
        problems = lab.normal_problems()
        if not problems:
            return
        log(f"still not normal after heal + failback: {problems}")
    except Exception as error:  # noqa: BLE001 - rebuilt below
        log(f"repair failed: {type(error).__name__}: {error}")
    lab.rebuild()


def remove_clean_repository(plan_path: Path) -> None:
    """The data-leak drill's new repository and password: a later data-leak drill creates them again."""
    from lifeline.configs.loading import load_plan

    leak = load_plan(plan_path).plan.scenarios["data-leak"].recovery.leak
    if leak is not None:
        shutil.rmtree(leak.new_repository_url, ignore_errors=True)
        Path(leak.new_password_file).unlink(missing_ok=True)


def run_drill(lab: LabRun, scenario: str) -> Outcome:
    from lifeline.configs.settings import load_settings
    from lifeline.flows.drill import drill_flow
    from lifeline.tasks.run.ledger import Ledger

    lab.refresh_backups()
    if lab.normal_problems():
        repair(lab)
    ledger = Ledger(load_settings().ledger)
    record_id = uuid.uuid4().hex[:12]  # this drill's own record, never an earlier one's
    started = time.perf_counter()
    error = None
    try:
        drill_flow(str(lab.plan), scenario, record_id=record_id)
    except Exception as raised:  # noqa: BLE001 - the record says what failed
        error = f"{type(raised).__name__}: {raised}"
    wall = time.perf_counter() - started
    record = ledger.run(record_id)
    if record is None:
        raise RuntimeError(f"drill {scenario} saved no record: {error}")
    if scenario == "data-leak":
        remove_clean_repository(lab.plan)
    milestones = record.milestones
    back = [step for step in record.steps if step.name == "return to normal"]
    outcome = Outcome(
        scenario=scenario, wall=wall, status=record.status, rto=record.rto_seconds, rpo=record.rpo_seconds,
        met=record.met_targets, rto_target=record.rto_target_seconds, rpo_target=record.rpo_target_seconds,
        detect=(milestones["detected"] - milestones["incident"]).total_seconds()
        if {"detected", "incident"} <= set(milestones) else None,
        back=back[-1].seconds if back else None,
        error=record.error or error,
    )
    outcome.left_not_normal = lab.normal_problems(timeout=10)
    if outcome.left_not_normal:
        log(f"{scenario}: the lab is NOT normal after the drill: {outcome.left_not_normal}")
        repair(lab)
    return outcome


def run_benchmark(root: Path, scenarios: list[str], runs: int) -> tuple[list[Outcome], int]:
    outcomes: list[Outcome] = []
    with backed_up_lab(root) as lab:
        for number in range(1, runs + 1):
            for scenario in scenarios:
                outcome = run_drill(lab, scenario)
                outcomes.append(outcome)
                log(f"run {number}/{runs} {scenario}: {outcome.status} in {outcome.wall:.1f} s, "
                    f"RTO {format_seconds(outcome.rto)} s, RPO {format_seconds(outcome.rpo)} s, met {outcome.met}"
                    + (f": {outcome.error}" if outcome.error else ""))
    return outcomes, lab.rebuilds


def format_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def median_of(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def report(outcomes: list[Outcome], scenarios: list[str], runs: int, rebuilds: int) -> None:
    by_scenario: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_scenario[outcome.scenario].append(outcome)
    rows = []
    for scenario in scenarios:
        done = by_scenario[scenario]
        completed = [o for o in done if o.status == "completed"]
        met = [o.met for o in done]
        rows.append([
            scenario,
            median_of([o.wall for o in done]),
            spread([o.wall for o in done]) if runs > 1 else None,
            median_of([o.rto for o in completed]),
            median_of([o.rpo for o in completed]),
            "yes" if met and all(met) else ("no" if any(m is False for m in met) else "-"),
            median_of([o.detect for o in completed]),
            median_of([o.back for o in done]),
            f"{len(completed)}/{len(done)}",
            "/".join(f"{(o.rto_target or 0) / 60:g}m" for o in done[:1]) + " / "
            + "/".join(f"{(o.rpo_target or 0) / 60:g}m" for o in done[:1]),
        ])
    notes = [
        f"{runs} run(s) per scenario" + (" (medians)" if runs > 1 else "") + "; wall = normal state to normal state, "
        "including the return to normal (back); detect = fault to the detected milestone.",
        "RTO and RPO are the run records'; met = every run met the scenario's targets (RTO / RPO targets shown).",
    ]
    if rebuilds:
        notes.append(f"FINDING: the lab had to be rebuilt {rebuilds} time(s) after a drill left it not normal.")
    for outcome in outcomes:
        if outcome.status != "completed" or outcome.left_not_normal:
            notes.append(f"FINDING: {outcome.scenario}: {outcome.status}: {outcome.error or ''} "
                         f"{'; left not normal: ' + '; '.join(outcome.left_not_normal) if outcome.left_not_normal else ''}")
    print_table(["scenario", "wall s", "wall range", "RTO s", "RPO s", "met targets", "detect s", "back s", "completed", "targets"],
                rows, title="Drills on the lab (built-in scenarios)", notes=notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drills", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="drills of each scenario (default 1)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="only these (repeatable)")
    arguments = parser.parse_args(argv)
    if arguments.runs < 1:
        parser.error("--runs must be at least 1")
    scenarios = arguments.scenario or list(SCENARIOS)
    quiet_prefect_environment()
    started = time.perf_counter()
    with bench_tmpdir("lifeline-bench-drills-") as root:
        outcomes, rebuilds = run_benchmark(root, scenarios, arguments.runs)
    report(outcomes, scenarios, arguments.runs, rebuilds)
    log(f"drills: {time.perf_counter() - started:.0f} s in all")
    failed = [o for o in outcomes if o.status != "completed" or o.left_not_normal]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
