"""`make soak` part 1: every kill point of every flow, on a lab of its own, with the table of point × outcome.

    uv run python -m tests.reliability.kill_matrix                          # every flow
    uv run python -m tests.reliability.kill_matrix --flows failover,restore  # some
    uv run python -m tests.reliability.kill_matrix --parallel 3             # three labs side by side

For each flow: one uncut run gives its journal, and so its kill points (tests/reliability/kill_points.py).
Then, for each point: the lab is brought to the state the flow starts from, a write monitor writes at both
databases every 50 ms, the flow is started and SIGKILLed at the point, started again, and the outcome is
judged (tests/reliability/convergence.py): the second run completed, the killed run's record is closed,
the lab serves from the right site and is otherwise normal, no acknowledged write or answered call is
missing there, nobody was told one event twice, there were never two writable primaries, and nothing the
killed run left lies about. Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lifeline.tasks.adapters.deadline import wait_until

from tests.benchmarks.common import bench_tmpdir, log, print_table
from tests.benchmarks.lab import backed_up_lab

BACKED_UP_AT = time.monotonic()  # `backed_up_lab` backs every dataset up as it starts: fresh for a day


@dataclass
class FlowCase:
    """How to start a flow, from which state, and what it leaves serving."""

    name: str
    arguments: Callable[[str, int], list[str]]  # (plan, case number) -> the lifeline command
    starts_from_dr: bool = False  # a failback starts with dr serving
    serves: str = "main"  # the site that serves once it converged (before the case's own clean-up)
    both_boundaries: bool = True  # points before *and* after each step (else: before each, after the last)
    again_with: tuple[str, ...] = ()  # what the operator adds when starting it again
    served: bool = False  # a warning drill: `lifeline serve` and `lifeline intake` run beside it, as in production


@dataclass
class Outcome:
    flow: str
    point: str
    killed: bool
    late_ms: float | None
    rerun_code: int | None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def flow_cases(work: Path, plan: Path) -> dict[str, FlowCase]:
    """The failover, the failback, a restore, a point-in-time repair, and a drill of every scenario the lab's
    plan has (the notifications and escalations run inside them: `lifeline notify` by hand keeps no record). A
    warning's drill posts to `lifeline intake`, whose preparedness run `lifeline serve` runs: the matrix starts
    both for it, and cuts the drill (the preparedness run is the served process's, which a drill's kill leaves)."""
    from lifeline.configs.loading import load_plan

    cases = {
        "failover": FlowCase("failover", lambda plan, _: ["failover", "--yes", "--plan", plan, "--reason", "soak"],
                             serves="dr"),
        "failback": FlowCase("failback", lambda plan, _: ["failback", "--yes", "--plan", plan, "--reason", "soak"],
                             starts_from_dr=True),
        "restore": FlowCase("restore", lambda plan, n: ["restore", "recordings", "--plan", plan,
                                                        "--target", str(work / f"restored-{n}")],
                             again_with=("--replace",)),
        # PITR repair of a table nobody writes in the lab, to a moment just before the case starts
        "pitr-restore": FlowCase("pitr-restore", lambda plan, _: [
            "restore", "crm", "--to-time", (datetime.now(UTC) - timedelta(seconds=2)).isoformat(),
            "--tables", "customers", "--yes", "--reason", "soak", "--plan", plan]),
    }
    for scenario, rehearsed in load_plan(plan).plan.scenarios.items():
        cases[f"drill {scenario}"] = FlowCase(f"drill {scenario}", lambda plan, _, s=scenario: [
            "drill", "--scenario", s, "--plan", plan], both_boundaries=False, served=rehearsed.recovery.alert is not None)
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kill_matrix", description=__doc__.splitlines()[0])
    parser.add_argument("--flows", default="", help="comma-separated: failover, failback, restore, drill SCENARIO")
    parser.add_argument("--parallel", type=int, default=1, choices=range(1, 5), metavar="1-4",
                        help="labs side by side, each with its share of the flows")
    parser.add_argument("--share", help=argparse.SUPPRESS)  # K/N: run only the K-th of N shares of the flows
    parser.add_argument("--outcomes-to", type=Path, help=argparse.SUPPRESS)  # then write the outcomes as JSON
    options = parser.parse_args(argv)
    if options.parallel > 1:
        outcomes = side_by_side(options.flows, options.parallel)
        if outcomes is None:
            return 2
        print_outcomes(outcomes)
        return 0 if all(not outcome.problems for outcome in outcomes) else 1
    with bench_tmpdir("lifeline-kill-matrix-") as root:
        work = root / "work"
        work.mkdir()
        with backed_up_lab(root) as lab_run:
            cases = flow_cases(work, lab_run.plan)
            wanted = [name.strip() for name in options.flows.split(",") if name.strip()] or list(cases)
            unknown = [name for name in wanted if name not in cases]
            if unknown:
                print(f"kill_matrix: unknown flows {unknown}; known: {list(cases)}", file=sys.stderr)
                return 2
            every = wanted
            if options.share:
                share, shares = (int(number) for number in options.share.split("/"))
                wanted = share_of(every, share, shares)
            outcomes: list[Outcome] = []

            def save(running: str) -> None:  # a share writes what it has at every point: a failure keeps it
                if options.outcomes_to:
                    options.outcomes_to.write_text(json.dumps({"flows": every, "running": running, "outcomes": [
                        dataclasses.asdict(kept) for kept in outcomes]}))

            def keep(outcome: Outcome) -> None:
                outcomes.append(outcome)
                save(outcome.flow)

            for name in wanted:
                save(name)
                try:
                    with serving(lab_run.plan, root, cases[name].served):
                        matrix_of(cases[name], lab_run.home, work, keep)
                except Exception as error:  # noqa: BLE001 - its services did not start: this flow's problem
                    keep(Outcome(name, "(serve and intake)", False, None, None, [f"they did not start: {error}"]))
            save("")
    if options.outcomes_to:
        return 0
    print_outcomes(outcomes)
    return 0 if all(not outcome.problems for outcome in outcomes) else 1


# Kill points per flow in the last whole run, to share the flows out evenly; a flow not listed counts as 20.
EXPECTED_POINTS = {"failover": 29, "failback": 24, "drill site-loss": 25, "drill network-outage": 26,
                   "drill system-crash": 23, "drill data-leak": 22, "drill logical-corruption": 15,
                   "drill data-corruption": 11, "pitr-restore": 11, "restore": 9, "drill staff-shortage": 7,
                   "drill comms-failure": 6, "drill severe-weather": 8}


def share_of(wanted: list[str], share: int, shares: int) -> list[str]:
    """The flows of one share: the largest first, each to the share with the fewest expected points."""
    points: list[list[str]] = [[] for _ in range(shares)]
    for name in sorted(wanted, key=lambda name: -EXPECTED_POINTS.get(name, 20)):
        min(points, key=lambda flows: sum(EXPECTED_POINTS.get(flow, 20) for flow in flows)).append(name)
    return points[share]


def side_by_side(flows: str, parallel: int) -> list[Outcome] | None:
    """Each share of the flows in a process of its own with a lab of its own; the outcomes in the flows' order."""
    with bench_tmpdir("lifeline-kill-shares-") as root:
        files = [root / f"share-{share}.json" for share in range(parallel)]
        processes = [subprocess.Popen([sys.executable, "-m", "tests.reliability.kill_matrix", "--flows", flows,
                                       "--share", f"{share}/{parallel}", "--outcomes-to", str(file)])
                     for share, file in enumerate(files)]
        codes = [process.wait() for process in processes]
        if any(code == 2 for code in codes):
            return None
        written = {share: json.loads(file.read_text()) for share, file in enumerate(files) if file.exists()}
    order = next(iter(written.values()))["flows"] if written else []
    found = [Outcome(**outcome) for share in written.values() for outcome in share["outcomes"]]
    for share, code in enumerate(codes):
        if code != 0:  # a share that failed: the flow it was in and those after it, or the share if none is known
            flows = share_of(order, share, parallel) if order else []
            running = written.get(share, {}).get("running")
            missing = flows[flows.index(running):] if running in flows else flows
            found += [Outcome(name, "(its share of the matrix failed here)", False, None, code, ["no outcome"])
                      for name in missing or [f"share {share + 1} of {parallel}"]]
    return sorted(found, key=lambda outcome: order.index(outcome.flow) if outcome.flow in order else len(order))


@contextmanager
def serving(plan: Path, root: Path, wanted: bool) -> Iterator[None]:
    """`lifeline serve` (its schedules off: no nightly backup fires into a cut) and `lifeline intake`."""
    if not wanted:
        yield
        return
    from lifeline.configs.loading import load_plan
    from lifeline.flows.serve import deployments
    from prefect.settings import PREFECT_API_URL

    from tests.benchmarks.warning import healthy, start
    from tests.serve_fixtures import Api, start_serving, stop_serving, switch_schedules_off

    api = Api(PREFECT_API_URL.value())
    loaded = load_plan(plan)
    served = start_serving(api, [sys.executable, "-m", "lifeline.flows.cli", "serve", "--plan", str(plan)],
                           root / "serve.log", {d.name: d.flow_name for d in deployments(loaded)})
    intake = start([sys.executable, "-m", "lifeline.flows.cli", "intake", "--plan", str(plan)], root / "intake.log")
    try:
        for deployment in served.registered.values():
            switch_schedules_off(api, deployment)
        url = f"http://{loaded.plan.intake.host}:{loaded.plan.intake.port}"
        if not wait_until(lambda: healthy(url) or intake.poll() is not None, timeout=90, interval=0.2) \
                or intake.poll() is not None:
            raise RuntimeError(f"lifeline intake did not answer at {url}; see {root / 'intake.log'}")
        yield
    finally:
        os.killpg(intake.pid, signal.SIGTERM)
        intake.wait(30)
        stop_serving(api, served)


def matrix_of(case: FlowCase, home: Path, work: Path, keep: Callable[[Outcome], None]) -> None:
    from tests.helpers import ledger
    from tests.lab_fixtures import Lab
    from tests.reliability.kill_points import kill_points

    lab = Lab(home)
    try:
        to_start(lab, case)
        reference = run(case.arguments(str(lab.plan), 0))
        cleaned_up(lab, case, work)
    except Exception as error:  # noqa: BLE001 - this flow's problem: the share goes on with the next one
        log(f"{case.name}: its uncut run failed: {error}")
        keep(Outcome(case.name, "(its uncut run)", False, None, None, [f"the uncut run failed: {error}"]))
        return
    points = kill_points(reference)
    if not case.both_boundaries:
        last = points[-1]
        points = [point for point in points if point.moment != "end"] + [last]
    log(f"{case.name}: {len(points)} kill points from the journal of run {reference.id}")
    for number, point in enumerate(points, start=1):
        began = time.monotonic()
        outcome = cut_case(lab, case, point, number, ledger())
        outcome.seconds = time.monotonic() - began
        log(f"{case.name} {number}/{len(points)} {point}: "
            f"{'converged' if not outcome.problems else '; '.join(outcome.problems)} ({outcome.seconds:.0f} s)")
        keep(outcome)


def cut_case(lab, case: FlowCase, point, number: int, ledger) -> Outcome:  # noqa: ANN001 - test helpers
    from tests.lab_fixtures import settle_call_log
    from tests.reliability.convergence import (
        closed_problems,
        held_problems,
        lost_call_problems,
        lost_row_problems,
        open_exercise_problems,
        serving_problems,
        twice_told_problems,
    )
    from tests.reliability.kill_points import kill_at

    try:
        monitor = start_monitor(lab)  # its table is made at main: a normal lab's primary
    except Exception as error:  # noqa: BLE001 - this point's problem; the next one starts from a healed lab
        return Outcome(case.name, str(point), False, None, None, [f"setting up the start failed: {error}"])
    try:
        try:
            to_start(lab, case)
        except Exception as error:  # noqa: BLE001 - as above
            return Outcome(case.name, str(point), False, None, None, [f"setting up the start failed: {error}"])
        since = datetime.now(UTC)
        arguments = case.arguments(str(lab.plan), number)
        cut = kill_at(point, arguments, ledger)
        outcome = Outcome(case.name, str(point), cut.killed, cut.late_by_ms, None)
        rerun, code, error = run_anyway([*arguments, *case.again_with])
        outcome.rerun_code = code
        if rerun is None:
            outcome.problems.append(f"the run after the kill failed ({code}): {error}")
            return outcome
        settle_call_log()
        problems = [*closed_problems(ledger, cut.record_id, rerun), *twice_told_problems(lab, ledger, taken_over(
            ledger, cut.record_id, rerun.id))]
        if case.name in ("failover", "failback"):
            problems += [*serving_problems(lab, case.serves), *lost_row_problems(lab, monitor, case.serves, ledger, since),
                         *lost_call_problems(lab, case.serves, since)]
        elif not lab.status().normal:
            problems.append(f"the lab is not normal: {lab.status().not_normal_because}")
        else:
            problems += lost_row_problems(lab, monitor, "main", ledger, since)
        problems += held_problems(ledger) + (open_exercise_problems(lab) if case.served else [])
        cleaned_up(lab, case, Path(arguments[-1]).parent if case.name == "restore" else None)
        outcome.problems = problems + two_primaries(monitor)
        return outcome
    finally:
        monitor.finish()


def taken_over(ledger, killed_id: str | None, rerun_id: str) -> list[str]:  # noqa: ANN001 - Ledger
    """The runs whose messages must not repeat: the killed one and its rerun, unless the kill landed after the
    killed run had saved its completion (then the rerun is a run of its own, with its own messages)."""
    killed = ledger.run(killed_id) if killed_id else None
    return [rerun_id] if killed is None or killed.status == "completed" else [killed.id, rerun_id]


def start_monitor(lab):  # noqa: ANN001, ANN201 - test helpers
    from lifeline.configs.loading import load_plan

    from tests.lab_fixtures import MONITOR_TABLE, WriteMonitor, back_to_normal

    if not lab.status().normal:  # what the last point left, if its rerun failed
        back_to_normal(lab)
    lab.query("main", f"CREATE TABLE IF NOT EXISTS {MONITOR_TABLE} (id bigint GENERATED ALWAYS AS IDENTITY "
                      "PRIMARY KEY, site text NOT NULL, sent_at timestamptz)")
    crm = load_plan(lab.plan).plan.databases["crm"]
    return WriteMonitor(dsns={site: crm.instances[site].dsn for site in ("main", "dr")},
                        passfile=str(crm.instances["main"].passfile)).start()


def two_primaries(monitor) -> list[str]:  # noqa: ANN001 - WriteMonitor
    runs = monitor.primaries()
    return [f"{old} acknowledged a write after {new} had taken one: two writable primaries"
            for (old, _, last_acknowledged), (new, first_sent, _) in zip(runs, runs[1:], strict=False)
            if last_acknowledged >= first_sent]


def to_start(lab, case: FlowCase) -> None:  # noqa: ANN001 - Lab
    """Normal, with snapshots and the WAL archive fresh enough for preflight; dr serving for a failback."""
    from tests.lab_fixtures import FreshBackups, back_to_normal

    if not lab.status().normal:
        back_to_normal(lab)
    fresh = FreshBackups(lab, taken_at=BACKED_UP_AT)
    fresh.ensure()
    fresh.ensure_pitr_backup()
    if case.starts_from_dr:
        run(["failover", "--yes", "--plan", str(lab.plan), "--reason", "soak: the state a failback starts from"])


def cleaned_up(lab, case: FlowCase, restored_in: Path | None) -> None:  # noqa: ANN001 - Lab
    from tests.lab_fixtures import back_to_normal

    if restored_in is not None:
        for path in restored_in.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if not lab.status().normal:
        back_to_normal(lab)


def run(arguments: list[str]):  # noqa: ANN201 - RunRecord
    record, code, error = run_anyway(arguments)
    if record is None:
        raise RuntimeError(f"lifeline {' '.join(arguments)} failed ({code}): {error}")
    return record


def run_anyway(arguments: list[str]):  # noqa: ANN201 - (RunRecord | None, exit code, last error line)
    from tests.helpers import ledger, run_cli

    result = run_cli(*arguments, "--json", timeout=600)
    if result.returncode != 0:
        return None, result.returncode, (result.stderr.strip().splitlines() or [""])[-1]
    return ledger().run(json.loads(result.stdout)["id"]), 0, ""


def print_outcomes(outcomes: list[Outcome]) -> None:
    rows = [(o.flow, o.point, "killed" if o.killed else "ended first", o.late_ms, o.rerun_code,
             "converged" if not o.problems else "; ".join(o.problems)[:160], o.seconds) for o in outcomes]
    print_table(["flow", "kill point", "cut", "late ms", "rerun exit", "outcome", "case s"], rows, digits=0,
                title="Kill point x outcome (SIGKILL of the process group, then the same command again)")
    by_flow: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_flow.setdefault(outcome.flow, []).append(outcome)
    print()
    print_table(["flow", "points", "killed", "converged", "problems"],
                [(flow, len(found), sum(o.killed for o in found), sum(not o.problems for o in found),
                  sum(bool(o.problems) for o in found)) for flow, found in by_flow.items()],
                title="Summary", notes=[f"{sum(not o.problems for o in outcomes)} of {len(outcomes)} kill points "
                                        "converged; data lost: "
                                        f"{sum(1 for o in outcomes for p in o.problems if 'missing' in p)} cases"])


if __name__ == "__main__":
    sys.exit(main())
