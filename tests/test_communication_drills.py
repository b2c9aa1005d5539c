"""The drills that rehearse the communication plan (issue 13), and the preparedness warnings start, on the lab.

severe-weather runs the whole chain as in production: the drill posts a CAP exercise to a running
`lifeline intake`, which starts the alert deployment that `lifeline serve` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from lifeline.configs.loading import load_plan
from lifeline.flows.alert import alert_flow
from lifeline.flows.drill import drill_flow
from lifeline.infra.lab.aws import sent_sms
from lifeline.infra.lab.smtp import received_messages
from lifeline.tasks.adapters.alerts.plain import parse_plain
from lifeline.tasks.run.ledger import Deliveries
from lifeline.tasks.run.public import Modes
from lifeline.tasks.run.record import Journal
from lifeline.tasks.steps.approvers import STAFF_SHORTAGE, approvers_for
from lifeline.tasks.steps.status_page import page_url

from tests.helpers import ledger, run_cli, step_named, wait_for
from tests.lab_fixtures import Lab
from tests.reliability.kill_points import KillPoint, kill_at
from tests.serve_fixtures import ServedPlan
from tests.test_drills import assert_back_to_normal, normal_lab  # noqa: F401 - the drills' own fixture

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]


def test_comms_failure_the_fallback_carries_the_message_within_the_target(normal_lab: Lab) -> None:  # noqa: F811
    lab = normal_lab
    plan = load_plan(lab.plan).plan

    record = ledger().run(drill_flow(str(lab.plan), "comms-failure"))

    assert record.status == "completed" and record.met_targets is True, record.error
    told = step_named(record, "notify liaison, leadership through the fallback").detail
    assert told["channels"] == ["email"] and told["first_channel_failed"] == told["recipients"] == told["reached"]
    notified = (record.milestones["notified"] - record.incident_at).total_seconds()
    assert 0 <= notified <= plan.targets.notify_minutes * 60
    message = plan.scenarios["comms-failure"].recovery.notify.message
    assert not [sms for sms in sent_sms(lab.context.paths) if message in sms["message"]]  # SMS was down
    leaders = {plan.contacts[c].email for c in plan.contacts if plan.contacts[c].role in ("leader", "emergency-liaison")}
    mailed = {mail["To"] for mail in received_messages(lab.context.paths) if message in mail.get_content()}
    assert leaders <= mailed
    assert_back_to_normal(lab)
    assert not lab.status().channel_faults


def test_staff_shortage_the_deputy_approves_once_the_escalation_reaches_them(normal_lab: Lab) -> None:  # noqa: F811
    lab = normal_lab
    scenario = load_plan(lab.plan).plan.scenarios["staff-shortage"]

    record = ledger().run(drill_flow(str(lab.plan), "staff-shortage"))

    assert record.status == "completed" and record.met_targets is True, record.error
    approval = step_named(record, "approval").detail
    assert (approval["approved"], approval["operator"]) == (True, "zhou-lin")  # wang-fang's deputy
    asked = (record.milestones["deputies_asked"] - record.milestones["awaiting_approval"]).total_seconds()
    assert asked >= scenario.recovery.approval.deputies_after_seconds - 0.1
    told = [d for d in Deliveries(ledger()).of_run(record.id) if d.event == "approval_needed" and d.status == "delivered"]
    assert {(d.contact, d.level) for d in told} >= {("wang-fang", 1), ("zhou-lin", 2)}
    first_to_deputy = min(d.at for d in told if d.contact == "zhou-lin")
    assert record.milestones["deputies_asked"] <= first_to_deputy <= record.milestones["approved"]
    assert_back_to_normal(lab)


@pytest.fixture(scope="module")
def intake_at_the_plan_port(lab: Lab, tmp_path_factory) -> Iterator[str]:
    intake = load_plan(lab.plan).plan.intake
    log = tmp_path_factory.mktemp("intake") / "intake.log"
    process = subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", "intake", "--plan", str(lab.plan)],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://{intake.host}:{intake.port}"

    def listening() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200 or process.poll() is not None
        except httpx.HTTPError:
            return process.poll() is not None

    wait_for(listening, 90, f"intake to listen ({log})")
    assert process.poll() is None, log.read_text()
    yield url
    process.terminate()
    process.wait(10)


def test_severe_weather_a_cap_exercise_gets_the_centre_ready_and_the_page_says_exercise(
    normal_lab: Lab, served_lab: ServedPlan, intake_at_the_plan_port: str  # noqa: F811
) -> None:
    lab = normal_lab
    plan = load_plan(lab.plan).plan

    record = ledger().run(drill_flow(str(lab.plan), "severe-weather"))

    assert record.status == "completed" and record.met_targets is True, record.error
    posted = step_named(record, "post the warning to intake").detail
    prepared = ledger().run(posted["alert_run"])
    assert prepared.kind == "alert" and prepared.trigger == "intake"
    assert {"offsite_snapshot", "preflight_ready", "notified", "ready"} <= set(prepared.milestones)
    assert prepared.milestones["offsite_snapshot"] <= prepared.milestones["ready"] <= record.recovered_at
    copied = [s for s in prepared.steps if s.name.startswith("copy ") and s.name.endswith(" to offsite")]
    assert copied and all(step.status == "completed" for step in copied)
    told = {d.audience for d in Deliveries(ledger()).of_run(prepared.id) if d.status == "delivered"}
    assert {"liaison", "leadership"} <= told
    # The drill cancelled its warning, and the public page marks the incident an exercise, resolved.
    cancelled = ledger().run(step_named(record, "cancel the warning").detail["cancel_run"])
    assert cancelled.status == "completed" and cancelled.scenario == "weather cancel exercise"
    page = httpx.get(page_url(plan, "status.json"), timeout=10).json()
    [incident] = [incident for incident in page["incidents"] if incident["id"] == prepared.id]
    assert incident["exercise"] and incident["resolved"] and len(incident["updates"]) == 2
    assert_back_to_normal(lab)


def test_a_severe_weather_drill_killed_while_it_waits_has_its_exercise_cancelled_by_the_next_drill(
    normal_lab: Lab, served_lab: ServedPlan, intake_at_the_plan_port: str  # noqa: F811
) -> None:
    """Killed after posting its CAP exercise, the drill never cancelled it: the public page would show the
    exercise open for good. The next drill's sweep cancels it."""
    lab = normal_lab
    plan = load_plan(lab.plan).plan
    point = KillPoint("drill", "wait for the preparedness run", "start")

    cut = kill_at(point, ["drill", "--scenario", "severe-weather", "--plan", str(lab.plan)], ledger())
    assert cut.killed, cut.stderr
    killed = ledger().run(cut.record_id)
    prepared_id = step_named(killed, "post the warning to intake").detail["alert_run"]
    again = ledger().run(drill_flow(str(lab.plan), "severe-weather"))

    assert again.status == "completed", again.error
    closed = ledger().run(cut.record_id)
    assert closed.status == "failed" and closed.error.startswith("interrupted")
    page = httpx.get(page_url(plan, "status.json"), timeout=10).json()
    incidents = {incident["id"]: incident for incident in page["incidents"]}
    assert incidents[prepared_id]["exercise"] and incidents[prepared_id]["resolved"], incidents[prepared_id]
    assert not [incident for incident in incidents.values() if incident["exercise"] and not incident["resolved"]]
    assert_back_to_normal(lab)


def test_a_public_health_warning_turns_staff_shortage_on_and_deputies_may_approve_at_once(normal_lab: Lab) -> None:  # noqa: F811
    lab = normal_lab
    plan = load_plan(lab.plan).plan
    warning = parse_plain({"id": "flu-season-1", "kind": "public-health", "severity": "severe",
                           "headline": "Influenza outbreak"})
    record = ledger().run(alert_flow(str(lab.plan), warning.model_dump(mode="json"), approval="yes"))
    try:
        assert record.status == "completed", record.error
        assert Modes(ledger()).active_until(plan.name, STAFF_SHORTAGE) is not None
        shown = json.loads(run_cli("contacts", "--plan", str(lab.plan), "--json").stdout)
        assert shown["staff_shortage_until"] and shown["approvers"] == ["wang-fang"]
        announced = step_named(record, "announce the DR site's agents").detail
        assert announced["agents"] == [plan.contacts[name].name for name in plan.sites["dr"].agents]
        assert announced["reached"] == len(plan.members_of("staff", record.started_at, plan.timezone))
        approvers = approvers_for(plan, ledger(), Journal(record))
        assert approvers.shortage and approvers.refusal("Zhou Lin") is not None  # not before she is asked...
        approvers.deputies_asked.set()
        assert approvers.refusal("Zhou Lin") is None and "may not approve" in approvers.refusal("Sam Lee")
    finally:
        Modes(ledger()).turn_off(plan.name, STAFF_SHORTAGE)


def test_a_security_warning_finds_the_leak_procedure_ready_and_refuses_a_readable_password(
    normal_lab: Lab,  # noqa: F811
) -> None:
    lab = normal_lab
    warning = parse_plain({"id": "intrusion-1", "kind": "security", "severity": "severe", "headline": "Phishing wave"})
    record = ledger().run(alert_flow(str(lab.plan), warning.model_dump(mode="json"), approval="yes"))
    assert record.status == "completed", record.error
    ready = step_named(record, "ready to contain a compromise").detail
    assert ready["ready"] is True and ready["checked"] >= 5
    password = load_plan(lab.plan).plan.repositories["local"].password_file
    password.chmod(0o644)
    try:
        again = parse_plain({"id": "intrusion-2", "kind": "security", "severity": "severe", "headline": "Again"})
        with pytest.raises(Exception, match="0644"):
            alert_flow(str(lab.plan), again.model_dump(mode="json"), approval="yes")
    finally:
        password.chmod(0o600)
