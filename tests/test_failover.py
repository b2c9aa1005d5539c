"""Failover and service verification on the lab (issue 4), checked the way an operator would.

Each test that fails over runs a write monitor at both databases for its whole length and fails
back before it ends, so it leaves the lab normal for the next; a test that breaks midway is
repaired by the `normal_lab` fixture (heal and fail back, or rebuild as the last resort). Both, and
the other helpers shared with test_failback.py, are in tests/lab_fixtures.py.
Figures in the run records are checked against the call log and the databases, not against
the code that computed them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from lifeline.configs.loading import load_plan
from lifeline.flows.failover import failover_flow
from lifeline.infra.lab import fault, load_faults, power
from lifeline.infra.lab.aws import sent_sms
from lifeline.infra.lab.smtp import received_messages
from lifeline.tasks.report.after_action import communications_of, render_markdown
from lifeline.tasks.run.ledger import Deliveries
from lifeline.tasks.steps.status_page import page_url

from tests.helpers import ledger, one_line_error, run_cli, step_named, wait_for
from tests.lab_fixtures import (
    Lab,
    WriteMonitor,
    back_to_main_with_one_primary_at_a_time,
    call_log,
    in_recovery,
    settle_call_log,
    wait_for_dr_answering,
)
from tests.reliability.convergence import twice_told_problems

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound but not listening, so nothing else takes it meanwhile)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def plan_copy(lab: Lab, directory: Path, change: Callable[[dict], None]) -> Path:
    """The lab's plan (absolute paths throughout) with one change, written to `directory`."""
    document = yaml.safe_load(lab.plan.read_text())
    change(document)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "plan.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def cli_process(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True)


def assert_nothing_changed(lab: Lab) -> None:
    current = lab.status()
    assert (current.databases["main"], current.databases["dr"]) == ("primary", "standby")
    assert current.replication.streaming and current.dns.points_at == "main"


# --- verification and refusals: nothing is failed over ---------------------------------------------

def test_verify_site_exits_0_when_healthy_and_1_naming_the_unhealthy_service(normal_lab: Lab) -> None:
    plan = str(normal_lab.plan)
    healthy = run_cli("verify", "--plan", plan, "--site", "main", "--json")
    assert healthy.returncode == 0, healthy.stderr
    record = json.loads(healthy.stdout)
    assert (record["kind"], record["status"]) == ("verify", "completed")
    assert sorted((step["name"], step["status"]) for step in record["steps"]) == [
        ("crm-main: crm main health", "completed"), ("phone-main: test call answered at main", "completed")]

    fault("main-service-down", normal_lab.home)
    broken = run_cli("verify", "--plan", plan, "--site", "main", "--json")
    assert broken.returncode == 1, broken.stderr
    record = json.loads(broken.stdout)
    assert record["status"] == "failed" and "crm-main" in record["error"]
    steps = {step["name"]: step for step in record["steps"]}
    assert (steps["crm-main: crm main health"]["status"], steps["crm-main: crm main health"]["detail"]["critical"]) \
        == ("failed", True)
    # main's PBX cannot record the call in its CRM: the test call is refused, and the phone service fails with it
    assert steps["phone-main: test call answered at main"]["status"] == "failed"
    assert "crm-main" in one_line_error(broken.stderr)
    normal_lab.restore_normal()


def test_unknown_host_key_is_refused_with_a_clear_message_and_nothing_changes(
    normal_lab: Lab, monitor: WriteMonitor, tmp_path: Path
) -> None:
    lab = normal_lab
    dr = load_plan(lab.plan).plan.hosts["dr"]
    lines = Path(dr.known_hosts_file).read_text().splitlines()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(f"{line}\n" for line in lines if not line.startswith(f"[{dr.address}]:{dr.port} ")))
    assert len(known_hosts.read_text().splitlines()) == len(lines) - 1  # dr's key, and only it, is gone

    def trust_only_main(document: dict) -> None:
        document["hosts"]["dr"]["known_hosts_file"] = str(known_hosts)

    plan = str(plan_copy(lab, tmp_path / "plan", trust_only_main))
    preflight, failover = cli_process("preflight", "--plan", plan), cli_process("failover", "--yes", "--plan", plan)
    (readiness, _), (_, refusal) = preflight.communicate(timeout=180), failover.communicate(timeout=180)
    assert preflight.returncode == 1 and "NOT READY" in readiness
    [reason] = [line for line in readiness.splitlines() if line.strip().startswith("- host dr")]
    assert "known_hosts" in reason and "refusing" in reason

    assert failover.returncode == 2, refusal  # a host key is bad input: exit 2 (README, exit codes)
    message = one_line_error(refusal)
    assert "NOT READY" in message and "host dr" in message and "known_hosts" in message
    assert_nothing_changed(lab)
    monitor.finish()
    monitor.assert_one_primary_at_a_time(["main"])


def test_a_step_that_keeps_failing_ends_the_run_as_failed_naming_the_step(
    normal_lab: Lab, monitor: WriteMonitor, tmp_path: Path
) -> None:
    lab = normal_lab
    with closed_port() as port:
        def announce_first(document: dict) -> None:
            document.setdefault("recovery", {})["failover"] = [
                {"name": "tell", "steps": [
                    {"type": "notify", "name": "tell partners", "audiences": ["partners"],
                     "message": "CRM moves from {{ from_site }} to {{ to_site }}: {{ reason }}"},
                    {"type": "notify", "name": "tell staff", "template": "failover_started", "audiences": ["staff"]}]},
                {"name": "announce", "steps": [{"type": "http", "name": "announce the outage on the IVR",
                                                "url": f"http://127.0.0.1:{port}/announcements",
                                                "json": {"text": "we are moving"}, "retries": 1,
                                                "retry_delay_seconds": 0.2, "timeout_seconds": 5}]},
                {"name": "promote", "steps": [{"type": "postgres_promote", "database": "crm"}]},
                {"name": "switch", "steps": [{"type": "dns_switch"}]},
            ]

        plan = str(plan_copy(lab, tmp_path, announce_first))
        with pytest.raises(Exception, match="announce the outage on the IVR"):
            failover_flow(plan_path=plan, approval="yes", reason="main database lost")

    [record] = ledger().runs(kind="failover", last=1)
    assert record.status == "failed"
    assert "'announce the outage on the IVR' failed" in record.error and "Connection refused" in record.error
    assert "main is fenced" in record.error and "run the failover again" in record.error  # what to do now
    announce = step_named(record, "announce the outage on the IVR")
    assert (announce.status, announce.attempts) == ("failed", 2)  # retries: 1
    assert not any(step.name.startswith(("promote", "switch")) for step in record.steps)
    # The runbook's notify steps ran first: a message by hand to partners, a template to staff, both delivered.
    told = Deliveries(ledger()).of_run(record.id)
    for name, audience, event in (("tell partners", "partners", "test"), ("tell staff", "staff", "failover_started")):
        step = step_named(record, name)
        assert step.status == "completed" and step.detail["reached"] == step.detail["recipients"] >= 1, step
        assert {(d.audience, d.event) for d in told if d.status == "delivered"} >= {(audience, event)}
    mailed = [message.get_payload(decode=True).decode() for message in received_messages(lab.context.paths)]
    assert any("CRM moves from main to dr: main database lost" in body for body in mailed)
    assert in_recovery(lab, "dr") is True and lab.status().dns.points_at == "main"
    # main was fenced before the runbook ran; nothing replaced it, so the lab's heal may start it again.
    lab.restore_normal()
    monitor.finish()
    monitor.assert_one_primary_at_a_time(["main"])


def test_not_ready_preflight_refuses_without_force_and_force_proceeds_recording_the_override(
    normal_lab: Lab, monitor: WriteMonitor, tmp_path: Path
) -> None:
    lab = normal_lab

    def want_ivr_backups_60_ms_old(document: dict) -> None:
        document["datasets"]["ivr-config"]["rpo_minutes"] = 0.001  # no snapshot is ever that fresh

    plan = str(plan_copy(lab, tmp_path, want_ivr_backups_60_ms_old))
    refused = run_cli("failover", "--yes", "--plan", plan, "--json")
    assert refused.returncode == 1, refused.stderr
    message = one_line_error(refused.stderr)
    assert "NOT READY" in message and "backup ivr-config" in message and "--force" in message
    record = json.loads(refused.stdout)
    assert record["status"] == "failed" and [step["name"] for step in record["steps"]] == ["probe main", "preflight"]
    assert_nothing_changed(lab)

    forced = ledger().run(failover_flow(plan_path=plan, approval="yes", force=True))
    assert forced.status == "completed", forced.error
    assert forced.milestones["forced"] <= forced.milestones["approved"] <= forced.milestones["fenced"]
    preflight = step_named(forced, "preflight")
    assert preflight.detail["ready"] is False
    assert [reason.split(":")[0] for reason in preflight.detail["forced_past"]] == ["backup ivr-config"]
    assert lab.status().dns.points_at == "dr"

    back_to_main_with_one_primary_at_a_time(lab, monitor)


def test_a_silent_site_whose_database_still_takes_writes_after_self_fencing_is_refused_naming_it(
    normal_lab: Lab, monitor: WriteMonitor, tmp_path: Path
) -> None:
    lab = normal_lab

    def self_fencing_only(document: dict) -> None:
        document["fencing"]["main"] = {"self_fence_seconds": 30}  # no fence command

    plan = str(plan_copy(lab, tmp_path, self_fencing_only))
    fault("main-ssh-down", lab.home)  # main cannot be reached to stop its database, which still takes writes
    incident_at = datetime.now(UTC) - timedelta(seconds=40)  # its 30 s of self-fencing are over already

    refused = run_cli("failover", "--yes", "--plan", plan, "--incident-at", incident_at.isoformat(), "--json")

    assert refused.returncode == 1, refused.stderr
    message = one_line_error(refused.stderr)
    assert "refusing to promote" in message and "database crm" in message and "site main" in message
    assert "still accepts writes" in message
    assert "stop it" in message and "fencing.main.command" in message and "--force" in message
    record = ledger().run(json.loads(refused.stdout)["id"])
    assert record.status == "failed" and "database crm" in record.error and "refusing to promote" in record.error
    fence = step_named(record, "fence main")
    assert fence.status == "failed" and "database crm" in fence.detail["error"]
    assert (fence.ended_at - fence.started_at).total_seconds() < 30  # no second wait counted from the step's start
    assert not any(step.name.startswith(("promote", "switch")) for step in record.steps)
    assert "fenced" not in record.milestones
    assert_nothing_changed(lab)

    lab.restore_normal()
    monitor.finish()
    monitor.assert_one_primary_at_a_time(["main"])


# --- failovers --------------------------------------------------------------------------------------

def test_main_database_down_failover_dr_takes_calls_and_the_record_matches_the_call_log(
    normal_lab: Lab, monitor: WriteMonitor
) -> None:
    lab = normal_lab
    fault("main-db-down", lab.home)
    incident_at = datetime.fromisoformat(load_faults(lab.context.paths)["main-db-down"])

    record = ledger().run(failover_flow(plan_path=str(lab.plan), approval="yes"))

    assert record.status == "completed", record.error
    assert lab.status().dns.points_at == "dr" and in_recovery(lab, "dr") is False
    first_at_dr = wait_for_dr_answering(lab, incident_at)
    settle_call_log()

    # RTO runs from the lab's fault time to the first of the healthy verification rounds.
    assert record.incident_at == incident_at
    assert record.recovered_at == record.milestones["recovered"]
    assert record.rto_seconds == pytest.approx((record.recovered_at - incident_at).total_seconds(), abs=0.001)
    milestones = [record.milestones[name] for name in ("incident", "detected", "fenced", "promoted", "dns_switched")]
    assert milestones == sorted(milestones) and milestones[-1] <= record.recovered_at <= record.ended_at
    # The liaison and leadership were told, on real channels, and the liaison's first message is `notified`.
    told = Deliveries(ledger()).of_run(record.id)
    delivered = {(d.event, d.audience) for d in told if d.status == "delivered"}
    assert {("incident_declared", "liaison"), ("incident_declared", "leadership"), ("recovered", "leadership"),
            ("recovered", "liaison")} <= delivered
    notified = (record.milestones["notified"] - record.milestones["declared"]).total_seconds()
    assert 0 <= notified <= load_plan(lab.plan).plan.targets.notify_minutes * 60
    liaison = load_plan(lab.plan).plan.contacts["wang-fang"].phones[0]
    assert any(sms["phone_number"] == liaison and record.id in sms["message"] for sms in sent_sms(lab.context.paths))
    assert liaison not in json.dumps([d.model_dump(mode="json") for d in told])  # masked in the ledger
    report = render_markdown(record, load_plan(lab.plan).plan, (), (), *communications_of(ledger(), record))
    assert "Communications" in report and "Time to notify the liaison" in report and "(target met)" in report
    assert liaison not in report and f"{liaison[:6]}****{liaison[-4:]}" in report
    # Customers read the public status page over plain HTTP: the incident, both updates, resolved.
    page = httpx.get(page_url(load_plan(lab.plan).plan, "status.json"), timeout=10).json()
    [incident] = [incident for incident in page["incidents"] if incident["id"] == record.id]
    assert incident["resolved"] and not incident["exercise"]
    assert [update["text"]["en"].split(" ")[:2] for update in incident["updates"]] == [["Our", "service"], ["We", "are"]]
    assert all(component["status"] == "operational" for component in page["components"])
    assert "服务已在备用站点恢复正常" in httpx.get(page_url(load_plan(lab.plan).plan), timeout=10).text
    # The call log tells the same story: calls failed from the fault on, none was answered anywhere until
    # dr answered, and dr began answering within a DNS TTL (plus a probe interval) of the recorded recovery.
    [(first_failed,)] = call_log(lab, "SELECT min(placed_at) FROM calls_log WHERE outcome <> 'answered' "
                                      "AND placed_at >= %s", incident_at)
    assert first_failed is not None and (first_failed - incident_at).total_seconds() < 2
    [(answered_meanwhile,)] = call_log(lab, "SELECT count(*) FROM calls_log WHERE outcome = 'answered' "
                                            "AND placed_at > %s AND placed_at < %s", first_failed, first_at_dr)
    assert answered_meanwhile == 0
    ttl = load_plan(lab.plan).plan.dns.ttl
    assert abs((first_at_dr - record.recovered_at).total_seconds()) <= ttl + 2

    # Affected customers: distinct callers whose calls failed or were abandoned from incident to recovery.
    [(callers, failed_calls)] = call_log(
        lab, "SELECT count(DISTINCT caller_id), count(*) FROM calls_log WHERE outcome IN ('failed', 'abandoned') "
             "AND placed_at BETWEEN %s AND %s", incident_at, record.recovered_at)
    assert record.impact_source == "call_log"
    assert callers > 0 and record.affected_customers == callers
    assert step_named(record, "measure").detail["failed_calls"] == failed_calls

    # RPO: the calls main acknowledged (per the call log) that dr does not have, as time before the incident.
    acknowledged = dict(call_log(lab, "SELECT call_id, placed_at FROM calls_log WHERE site = 'main' "
                                      "AND outcome = 'answered' AND call_id IS NOT NULL AND placed_at >= %s",
                                 incident_at - timedelta(hours=1)))
    at_dr = {row[0] for row in lab.query("dr", "SELECT id FROM calls WHERE id = ANY(%s)",
                                         parameters=(list(acknowledged),))}
    lost = set(acknowledged) - at_dr
    assert step_named(record, "measure").detail["lost_calls_crm"] == len(lost)
    expected_rpo = max([0.0, *((incident_at - acknowledged[call]).total_seconds() for call in lost)])
    assert record.rpo_seconds == pytest.approx(expected_rpo, abs=0.001)
    assert record.met_targets is True

    back_to_main_with_one_primary_at_a_time(lab, monitor)


def test_failover_with_main_powered_off_fences_it_with_the_fence_command(
    normal_lab: Lab, monitor: WriteMonitor
) -> None:
    lab = normal_lab
    power("main", "off", lab.home)
    powered_off_at = datetime.fromisoformat(load_faults(lab.context.paths)["main-power-off"])

    record = ledger().run(failover_flow(plan_path=str(lab.plan), approval="yes"))

    assert record.status == "completed", record.error
    fence = step_named(record, "fence main")
    assert (fence.status, fence.detail["method"]) == ("completed", "fence_command")
    assert fence.ended_at <= step_named(record, "promote crm at dr").started_at
    assert record.incident_at == powered_off_at
    assert lab.status().dns.points_at == "dr"
    wait_for_dr_answering(lab, powered_off_at)

    back_to_main_with_one_primary_at_a_time(lab, monitor)


def test_failover_killed_after_the_promotion_converges_when_run_again_closes_its_record_and_reports_dr_serves(
    normal_lab: Lab, monitor: WriteMonitor
) -> None:
    lab = normal_lab
    plan = str(lab.plan)
    fault("main-db-down", lab.home)
    before = {record.id for record in ledger().runs(kind="failover")}

    killed = cli_process("failover", "--yes", "--plan", plan)
    try:
        wait_for(lambda: in_recovery(lab, "dr") is False or killed.poll() is not None, 120, "dr's promotion", 0.02)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.communicate(timeout=10)
    assert killed.returncode == -signal.SIGKILL  # still running when dr had just been promoted
    [cut_off] = [record for record in ledger().runs(kind="failover") if record.id not in before]
    assert (cut_off.status, cut_off.ended_at, cut_off.recovered_at) == ("running", None, None)

    record = ledger().run(failover_flow(plan_path=plan, approval="yes"))
    assert record.status == "completed", record.error
    assert step_named(record, "promote crm at dr").detail["promoted"] is False  # the killed run had done it
    assert record.recovered_at is not None
    # The killed run's record no longer says "running": the next holder of the plan's lock closed it.
    cut_off = ledger().run(cut_off.id)
    assert (cut_off.status, cut_off.ended_at is not None) == ("failed", True)
    assert cut_off.error.startswith("interrupted") and record.id in cut_off.error
    assert lab.status().dns.points_at == "dr" and lab.status().services["dr"].healthy
    wait_for_dr_answering(lab, record.started_at)

    after = run_cli("failover", "--yes", "--plan", plan, "--json", env={"PREFECT_LOGGING_LEVEL": "INFO"})
    assert after.returncode == 0, after.stderr
    done = json.loads(after.stdout)
    # Each step is one log line an operator reads, with its time in the plan's zone; so is each verification round.
    zone, rounds = load_plan(Path(plan)).plan.timezone, load_plan(Path(plan)).plan.recovery.verification.rounds
    assert re.search(rf"fence main: completed at \d\d:\d\d:\d\d {zone} \(\d+\.\d s\)", after.stderr), after.stderr
    assert re.search(rf"verify dr: round \d+ healthy: {rounds} of {rounds} in a row", after.stderr), after.stderr
    assert done["status"] == "completed"
    skipped = [step for step in done["steps"] if step["status"] == "skipped"]
    assert [step["name"] for step in skipped] == ["fail over"]
    assert "dr already serves" in skipped[0]["detail"]["reason"]
    assert not any(step["name"].startswith(("promote", "switch")) for step in done["steps"])
    # One incident: nobody is told of it twice, by the killed run, the one that finished it, or the one after.
    assert twice_told_problems(lab, ledger(), [cut_off.id, record.id, done["id"]]) == []

    back_to_main_with_one_primary_at_a_time(lab, monitor)


def test_two_failovers_started_together_one_runs_the_other_refuses_naming_it(
    normal_lab: Lab, monitor: WriteMonitor
) -> None:
    lab = normal_lab
    plan = str(lab.plan)
    fault("main-db-down", lab.home)
    before = {record.id for record in ledger().runs(kind="failover")}

    first, second = cli_process("failover", "--yes", "--plan", plan), cli_process("failover", "--yes", "--plan", plan)
    errors = {process.pid: process.communicate(timeout=300)[1] for process in (first, second)}
    (code_a, winner), (code_b, loser) = sorted((process.returncode, process.pid) for process in (first, second))
    assert (code_a, code_b) == (0, 2), {pid: stderr[-2000:] for pid, stderr in errors.items()}
    message = one_line_error(errors[loser])
    [record] = [r for r in ledger().runs(kind="failover") if r.id not in before]  # the refused one left none
    assert f"failover run {record.id} (Prefect run 'failover-{record.id}' " in message and "refusing" in message
    assert f", pid {winner}, started " in message
    assert record.status == "completed"
    assert lab.status().dns.points_at == "dr"

    back_to_main_with_one_primary_at_a_time(lab, monitor)
