"""Failback on the lab (issue 4): after a failover, Lifeline's own failback returns the call centre to
main without losing a call, checked the way an operator would.

The lab, the write monitor and the call-log helpers are tests/lab_fixtures.py's, shared with
test_failover.py: the test fails back before it ends, so it leaves the lab normal for the next, and
`normal_lab` repairs it when it breaks midway. Figures in the run records are checked against the call
log and the databases, not against the code that computed them.
"""

from __future__ import annotations

import pytest
from lifeline.flows.failback import failback_flow
from lifeline.flows.failover import failover_flow
from lifeline.infra.lab import heal

from tests.helpers import ledger, step_named
from tests.lab_fixtures import Lab, WriteMonitor, call_log, in_recovery, settle_call_log, wait_for_dr_answering

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]


def test_failover_while_main_is_up_fences_it_first_and_failback_keeps_every_call(
    normal_lab: Lab, monitor: WriteMonitor
) -> None:
    lab = normal_lab
    record = ledger().run(failover_flow(plan_path=str(lab.plan), approval="yes", reason="planned test"))
    assert record.status == "completed", record.error

    fence, promote = step_named(record, "fence main"), step_named(record, "promote crm at dr")
    assert (fence.status, fence.detail["method"]) == ("completed", "ssh")
    assert fence.ended_at <= promote.started_at
    # Not only the record says so: main acknowledged its last write before dr's promotion began,
    # and main's database is down, not merely refusing writes.
    assert monitor.last_acknowledged_at("main") < promote.started_at
    assert lab.status().databases == {"main": "down", "dr": "primary", "calllog": "primary"}
    assert lab.status().dns.points_at == "dr"
    outage_began = record.started_at
    wait_for_dr_answering(lab, outage_began)

    failback = ledger().run(failback_flow(str(lab.plan), approval="yes"))
    assert failback.status == "completed", failback.error
    settle_call_log()
    assert (in_recovery(lab, "main"), in_recovery(lab, "dr")) == (False, True)
    assert ("dr", "streaming") in lab.query("main", "SELECT application_name, state FROM pg_stat_replication")
    assert lab.status().dns.points_at == "main"
    # Every call dr answered while it served (per the call log) is in main's database now ...
    answered_at_dr = {row[0] for row in call_log(
        lab, "SELECT call_id FROM calls_log WHERE site = 'dr' AND outcome = 'answered' AND placed_at >= %s",
        outage_began)}
    at_main = {row[0] for row in lab.query("main", "SELECT id FROM calls WHERE site = 'dr' AND id = ANY(%s)",
                                           parameters=(list(answered_at_dr),))}
    assert answered_at_dr and answered_at_dr == at_main
    # ... main, fenced cleanly, had nothing dr lacked, and the switch back lost nothing either.
    rebuild = step_named(failback, "rebuild crm at main as standby")
    assert not any(rebuild.detail["rows_only_at_old_primary"].values()), rebuild.detail
    assert failback.rpo_seconds == 0 and step_named(failback, "measure").detail["lost_calls_crm"] == 0
    heal(lab.home, log=lambda message: None)
    assert lab.wait_normal(10).normal
    monitor.finish()
    monitor.assert_one_primary_at_a_time(["main", "dr", "main"])
