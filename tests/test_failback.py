"""Failback on the lab (issue 4): after a failover, Lifeline's own failback returns the call centre to
main without losing a call, checked the way an operator would.

The lab, the write monitor and the call-log helpers are tests/lab_fixtures.py's, shared with
test_failover.py: the test fails back before it ends, so it leaves the lab normal for the next, and
`normal_lab` repairs it when it breaks midway. Figures in the run records are checked against the call
log and the databases, not against the code that computed them.
"""

from __future__ import annotations

import contextlib
import json
import socket

import pytest
from lifeline.configs.loading import load_plan
from lifeline.flows.failback import failback_flow
from lifeline.flows.failover import failover_flow
from lifeline.infra.lab import fault, heal
from lifeline.tasks.adapters.postgres.connection import ConnectionInfo
from lifeline.tasks.adapters.replication import failback as replication_failback
from lifeline.tasks.adapters.replication.failback import SwitchBackAborted
from lifeline.tasks.adapters.replication.split import SPARE_PORT_OFFSET

from tests.helpers import ledger, one_line_error, run_cli, step_named
from tests.lab_fixtures import Lab, WriteMonitor, call_log, in_recovery, settle_call_log, wait_for_dr_answering
from tests.reliability.convergence import lost_row_problems

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

    # Something else holds the port the moved-aside copy of main would take (a client's ephemeral port on a busy
    # host): the copy takes the next one.
    main_dsn = load_plan(lab.plan).plan.databases["crm"].instances["main"].dsn
    with socket.socket() as holder:
        with contextlib.suppress(OSError):  # already held by something else: the case this is about
            holder.bind(("127.0.0.1", ConnectionInfo.from_dsn(main_dsn).port + SPARE_PORT_OFFSET))
            holder.listen()
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


def assert_dr_still_serves(lab: Lab) -> None:
    status = lab.status()
    assert (status.databases["main"], status.databases["dr"], status.dns.points_at) == ("down", "primary", "dr")


def test_failback_dry_run_changes_nothing_and_not_ready_refuses_without_force_naming_the_host(
    normal_lab: Lab, monitor: WriteMonitor
) -> None:
    lab = normal_lab
    plan = str(lab.plan)
    assert ledger().run(failover_flow(plan_path=plan, approval="yes", reason="failback test")).status == "completed"
    assert_dr_still_serves(lab)

    described = run_cli("failback", "--dry-run", "--plan", plan)
    assert described.returncode == 0, described.stderr
    text = described.stdout
    assert "dry run: nothing is changed" in text and "dr → main" in text
    assert "rebuild crm at main as standby" in text and "pg_basebackup" in text and ".split-" in text
    assert "switch crm back to main" in text and "pg_ctl promote" in text
    assert "Route 53 UPSERT" in text and "verify main: 3 healthy rounds" in text
    assert_dr_still_serves(lab)

    # main's sshd is down: it could not be rebuilt, so the failback refuses before touching anything.
    fault("main-ssh-down", lab.home)
    refused = run_cli("failback", "--yes", "--plan", plan, "--json")
    assert refused.returncode == 1, refused.stderr
    message = one_line_error(refused.stderr)
    assert "NOT READY to fail back to main" in message and "host main" in message and "--force" in message
    record = json.loads(refused.stdout)
    assert record["status"] == "failed" and [step["name"] for step in record["steps"]] == ["preflight"]
    assert_dr_still_serves(lab)

    heal(lab.home, log=lambda message: None)
    back = ledger().run(failback_flow(plan, approval="yes"))
    assert back.status == "completed", back.error
    preflight = step_named(back, "preflight")
    assert preflight.detail["ready"] is True and "forced" not in back.milestones
    assert lab.wait_normal(30).normal
    monitor.finish()
    monitor.assert_one_primary_at_a_time(["main", "dr", "main"])


def test_a_failback_cut_short_between_stopping_dr_and_promoting_main_resumes_and_loses_nothing(
    normal_lab: Lab, monitor: WriteMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kill matrix cut a drill's failback there: dr stopped cleanly, main still its standby. Run again, the
    failback must not refuse ("dr does not answer: nothing to rebuild main from"): it promotes main."""
    lab = normal_lab
    plan = str(lab.plan)
    assert ledger().run(failover_flow(plan_path=plan, approval="yes", reason="failback test")).status == "completed"

    def cut_here(*arguments: object, **keywords: object) -> None:
        raise SwitchBackAborted("cut short here, as a SIGKILL of the process would")

    monkeypatch.setattr(replication_failback, "promote", cut_here)
    before = {record.id for record in ledger().runs(kind="failback")}
    with pytest.raises(SwitchBackAborted, match="cut short here"):
        failback_flow(plan, approval="yes")
    monkeypatch.undo()
    [cut] = [record for record in ledger().runs(kind="failback") if record.id not in before]
    assert cut.status == "failed" and step_named(cut, "switch crm back to main").status == "failed"
    assert (in_recovery(lab, "main"), in_recovery(lab, "dr")) == (True, None)  # dr stopped, main its standby

    resumed = ledger().run(failback_flow(plan, approval="yes"))
    assert resumed.status == "completed", resumed.error
    assert step_named(resumed, "preflight").detail["ready"] is True
    assert step_named(resumed, "switch crm back to main").detail["already_done"] is False
    assert not any(step.name.startswith("rebuild") for step in resumed.steps)  # nothing rebuilt: main had it all
    assert (in_recovery(lab, "main"), in_recovery(lab, "dr")) == (False, True)
    assert ("dr", "streaming") in lab.query("main", "SELECT application_name, state FROM pg_stat_replication")
    monitor.finish()
    assert lost_row_problems(lab, monitor, "main") == []
    monitor.assert_one_primary_at_a_time(["main", "dr", "main"])
    assert lab.wait_normal(30).normal
