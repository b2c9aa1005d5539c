"""Kill points in the suite: a planned failover and its failback, each cut off by SIGKILL in the middle of
its longest step (the points read from the journals of an uncut failover and failback), then started again.
Every point of every flow is tried by `make soak` (tests/reliability/kill_matrix.py); this keeps the two
most telling ones in every test run."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from lifeline.tasks.run.record import RunRecord

from tests.helpers import ledger, run_cli
from tests.lab_fixtures import Lab, WriteMonitor, settle_call_log
from tests.reliability.convergence import (
    closed_problems,
    lost_call_problems,
    lost_row_problems,
    serving_problems,
    twice_told_problems,
)
from tests.reliability.kill_points import KillPoint, kill_at, kill_points

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]

SERVES_AFTER = {"failover": "dr", "failback": "main"}


def arguments(kind: str, plan: str) -> list[str]:
    return [kind, "--yes", "--plan", plan, "--reason", "kill point"]


def completed_run(kind: str, plan: str) -> RunRecord:
    result = run_cli(*arguments(kind, plan), "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = ledger().run(json.loads(result.stdout)["id"])
    assert record is not None and record.status == "completed", record and record.error
    return record


def longest_middle(points: list[KillPoint]) -> KillPoint:
    return max((point for point in points if point.moment == "middle"), key=lambda point: point.after_seconds)


def cut_and_converge(lab: Lab, monitor: WriteMonitor, point: KillPoint) -> list[str]:
    plan, since = str(lab.plan), datetime.now(UTC)
    cut = kill_at(point, arguments(point.kind, plan), ledger())
    assert cut.killed, f"{point.kind} ended ({cut.returncode}) before '{point}': {cut.stderr[-2000:]}"
    rerun = completed_run(point.kind, plan)
    settle_call_log()
    site = SERVES_AFTER[point.kind]
    return [*closed_problems(ledger(), cut.record_id, rerun), *serving_problems(lab, site),
            *lost_row_problems(lab, monitor, site), *lost_call_problems(lab, site, since),
            *twice_told_problems(lab, ledger(), [cut.record_id, rerun.id])]


def test_a_failover_and_a_failback_killed_in_their_longest_step_converge_when_run_again(
    normal_lab: Lab, monitor: WriteMonitor
) -> None:
    lab, plan = normal_lab, str(normal_lab.plan)
    failover_points = kill_points(completed_run("failover", plan))
    failback_points = kill_points(completed_run("failback", plan))
    step_names = [point.step for point in failover_points]
    assert "fence main" in step_names and "promote crm at dr" in step_names, step_names
    print({kind: [str(point) for point in points] for kind, points in
           (("failover", failover_points), ("failback", failback_points))})

    assert cut_and_converge(lab, monitor, longest_middle(failover_points)) == []
    assert cut_and_converge(lab, monitor, longest_middle(failback_points)) == []
    monitor.finish()
    monitor.assert_one_primary_at_a_time(["main", "dr", "main", "dr", "main"])
