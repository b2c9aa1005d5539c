"""`lifeline serve` (issue 5): what it registers, a failover declined in its form, a run started by a schedule.

Everything runs against the session's Prefect server and is checked through its REST API, the way the
operator's UI sees it. A one-minute cron deployment is served from the module's start, so the minute
it needs passes while the other tests run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from lifeline.configs.loading import load_plan
from lifeline.tasks.run.ledger import Deliveries
from lifeline.tasks.run.record import RunRecord

from tests.helpers import files_plan, ledger, make_recordings, step_named, write_password, write_plan
from tests.lab_fixtures import Lab, back_to_normal
from tests.serve_fixtures import Api, ServedPlan, parse_time, start_serving, stop_serving

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server", "every_minute")]

FIRST_RUN_WAIT = 180.0  # seconds to wait for a one-minute cron's first run; a wait, not a speed goal


def record(record_id: str) -> RunRecord:
    found = ledger().run(record_id)
    assert found is not None, f"no record {record_id} in the ledger"
    return found


def assert_lab_unchanged(lab: Lab) -> None:
    status = lab.status()
    assert status.dns.points_at == "main"
    assert (status.databases["main"], status.databases["dr"]) == ("primary", "standby")
    assert status.replication.streaming
    assert status.normal, status.not_normal_because


def start_to_running(api: Api, run: dict) -> float:
    """Seconds from the run's creation (a click, a POST) to RUNNING, both stamped by the server."""
    return api.first_state_at(run["id"], "RUNNING") - parse_time(run["created"])


# --- the one-minute cron ---------------------------------------------------------------------------

EVERY_MINUTE_SERVER = """
import sys
from lifeline.flows.backup import backup_flow
from prefect import serve

# trigger "ui" on purpose: the record must say "schedule" because the run was auto-scheduled
serve(backup_flow.to_deployment(name="every-minute-test", cron="* * * * *",
                                parameters={"plan_path": sys.argv[1], "trigger": "ui"}),
      query_seconds=0.5, limit=None)
"""


@pytest.fixture(scope="module")
def every_minute(api: Api, tmp_path_factory) -> Iterator[tuple[ServedPlan, float]]:
    """A backup of a small folder served with cron "* * * * *"; (the server, when it was registered)."""
    root = tmp_path_factory.mktemp("every-minute")
    write_password(root / "restic.pw")
    document = files_plan(root, make_recordings(root / "recordings"))
    document["name"] = "every-minute-test"
    plan = write_plan(root, document)
    served = start_serving(api, [sys.executable, "-c", EVERY_MINUTE_SERVER, str(plan)],
                           root / "serve.log", {"every-minute-test": "backup"})
    try:
        yield served, parse_time(served.registered["every-minute-test"]["updated"])
    finally:
        stop_serving(api, served)


# --- tests -----------------------------------------------------------------------------------------

def test_serve_registers_each_deployment_with_the_plans_schedules_and_typed_parameters(
    served_lab: ServedPlan, api: Api, lab: Lab
) -> None:
    plan = load_plan(lab.plan).plan
    assert all(name.startswith(f"{plan.name}-") for name in served_lab.registered)  # two plans never collide
    registered = {name.removeprefix(f"{plan.name}-"): deployment for name, deployment in served_lab.registered.items()}
    assert {"backup", "failover", "failback", "restore", "verify", "escalation"} <= set(registered)
    assert plan.schedules.backup == "0 2 * * *"  # the lab's plan sets none: the default
    assert plan.timezone == "Asia/Shanghai"

    [nightly] = registered["backup"]["schedules"]
    assert (nightly["schedule"]["cron"], nightly["schedule"]["timezone"], nightly["active"]) == \
        ("0 2 * * *", "Asia/Shanghai", True)
    [verify] = registered["verify"]["schedules"]
    assert (verify["schedule"]["cron"], verify["schedule"]["timezone"], verify["active"]) == \
        (plan.schedules.verify, "Asia/Shanghai", True)
    for one_at_a_time in ("backup", "verify"):  # the next scheduled one is cancelled while one still runs
        limit = registered[one_at_a_time]["global_concurrency_limit"]
        strategy = registered[one_at_a_time]["concurrency_options"]["collision_strategy"]
        assert (limit["limit"], strategy) == (1, "CANCEL_NEW"), one_at_a_time
    for unscheduled in ("failover", "failback", "restore", "escalation", "pitr-restore"):
        assert registered[unscheduled]["schedules"] == [], unscheduled
    pitr = plan.databases["crm"].pitr
    for kind in ("full", "diff", "incr"):  # pgBackRest's backups, each on its own schedule
        [scheduled] = registered[f"pitr-crm-{kind}"]["schedules"]
        assert scheduled["schedule"]["cron"] == getattr(pitr.schedules, kind), kind
        assert registered[f"pitr-crm-{kind}"]["parameters"]["kind"] == kind
    assert registered["pitr-restore"]["parameters"]["approval"] == "ui"  # a replace waits for its form

    for deployment in registered.values():
        assert deployment["parameters"]["plan_path"] == str(lab.plan)
        assert f"plan:{plan.name}" in deployment["tags"] and deployment["description"]
    assert registered["failover"]["parameters"]["approval"] == "ui"  # Quick run pauses for the form

    # Typed parameters: the UI renders a form with a description under every field.
    for name in ("failover", "failback"):
        schema = registered[name]["parameter_openapi_schema"]
        properties = schema["properties"]
        assert (properties["reason"]["type"], properties["reason"]["default"]) == ("string", ""), name
        assert (properties["dry_run"]["type"], properties["dry_run"]["default"]) == ("boolean", False), name
        assert (properties["force"]["type"], properties["force"]["default"]) == ("boolean", False), name
        for parameter in ("reason", "dry_run", "force"):
            assert len(properties[parameter].get("description", "")) > 10, (name, parameter)
        # The UI's Quick run starts a run with one click only when the schema requires nothing.
        assert not schema.get("required"), name
        # What nobody chooses is not in the form: the deployment supplies it.
        assert not {"plan_path", "trigger", "record_id"} & set(properties), name
        # The form is the safety catch: no run of this deployment can say it is already approved.
        assert (properties["approval"]["enum"], properties["approval"].get("readOnly")) == (["ui"], True), name
        with pytest.raises(httpx.HTTPStatusError) as refused:
            api.create_run(registered[name]["id"], {"approval": "yes", "dry_run": True})
        assert refused.value.response.status_code == 409 and "approval" in refused.value.response.text

    restore = registered["restore"]["parameter_openapi_schema"]
    assert {"dataset", "target", "snapshot", "as_of"} <= set(restore["properties"])
    assert restore["properties"]["dataset"]["enum"] == sorted(plan.datasets)  # a choice, not a name to type
    assert registered["pitr-restore"]["parameter_openapi_schema"]["properties"]["database"]["enum"] == ["crm"]
    assert registered["drill"]["parameter_openapi_schema"]["properties"]["scenario"]["enum"] == \
        ["", *sorted(plan.scenarios)]
    for deployment in registered.values():
        assert not {"plan_path", "trigger", "record_id", "parent_id"} & set(
            deployment["parameter_openapi_schema"]["properties"]), deployment["name"]
    assert set(restore["required"]) == {"dataset", "target"}  # Quick run asks for them in a form
    assert restore["properties"]["snapshot"]["default"] == "latest"
    assert all(restore["properties"][name].get("description") for name in ("dataset", "target", "snapshot", "as_of"))


def test_a_failover_declined_in_its_form_ends_cancelled_and_changes_nothing(
    served_lab: ServedPlan, api: Api, normal_lab: Lab, no_run_left_behind, capsys
) -> None:
    lab = normal_lab
    run = api.create_run(served_lab.deployment_id("failover"), {"reason": "rejection test"})
    api.wait_for_state(run["id"], {"PAUSED"}, 60)
    latency = start_to_running(api, run)

    # The form: operator, reason (prefilled), a decision; the preflight result is its description.
    schema, description = api.wait_for_input_form(run["id"], 30)
    assert {name: field["type"] for name, field in schema["properties"].items()} == \
        {"operator": "string", "reason": "string", "decision": "string"}
    assert schema["properties"]["decision"]["enum"] == ["Approve", "Reject"]
    assert {"operator", "decision"} <= set(schema["required"])
    assert schema["properties"]["reason"]["default"] == "rejection test"
    assert all(field.get("description") for field in schema["properties"].values())
    assert "**READY** to fail over to `dr`" in description and "| check | ready | detail |" in description
    assert "Awaiting approval until " in description and f"({load_plan(lab.plan).plan.timezone})" in description

    # An unsigned answer is refused by the server, naming the field; the run stays paused for a signed one.
    for unsigned in ({"reason": "x", "decision": "Approve"}, {"operator": " ", "reason": "x", "decision": "Approve"},
                     {"operator": "Zhou Lin", "reason": "", "decision": "Approve"}, {"operator": "Zhou Lin"}):
        refused = api.post(f"/flow_runs/{run['id']}/resume", {"run_input": unsigned})
        assert refused["status"] == "REJECT", (unsigned, refused)
        assert "Validation failed" in refused["details"]["reason"], refused
    assert api.get(f"/flow_runs/{run['id']}")["state"]["type"] == "PAUSED"

    answer = api.post(f"/flow_runs/{run['id']}/resume",
                      {"run_input": {"operator": "Zhou Lin", "reason": "not today", "decision": "Reject"}})
    assert answer["status"] == "ACCEPT", answer
    done = api.wait_for_state(run["id"], {"CANCELLED"}, 30)
    assert "not approved" in done["state"]["message"]
    assert_lab_unchanged(lab)

    declined = record(api.record_id(run["id"], "failover"))
    assert (declined.status, declined.trigger) == ("cancelled", "ui")
    assert step_named(declined, "approval").detail | {"waited_seconds": 0} == \
        {"approved": False, "operator": "Zhou Lin", "reason": "not today", "waited_seconds": 0}
    # The person who answered knows of the incident: their answer acknowledges the run (by contact name or id).
    acknowledged = Deliveries(ledger()).acknowledgement(declined.id)
    assert (acknowledged.contact, acknowledged.via) == ("zhou-lin", "approval")
    assert "rejected" in declined.milestones and "fenced" not in declined.milestones
    assert not any(step.name.startswith(("fence", "promote")) for step in declined.steps)
    # The wait for a person is its own stretch of the record: the step spans it, between two milestones.
    approval = step_named(declined, "approval")
    waited = (declined.milestones["rejected"] - declined.milestones["awaiting_approval"]).total_seconds()
    assert waited == pytest.approx(approval.seconds, abs=0.25)
    assert waited == pytest.approx(approval.detail["waited_seconds"], abs=0.25) and waited > 0.1
    with capsys.disabled():
        print(f"\n[latency] failover deployment run created through the API -> RUNNING: {latency:.2f} s "
              f"({api.start_breakdown(run['id'], parse_time(run['created']))})")


def test_a_failover_nobody_answers_ends_cancelled_at_the_plans_approval_timeout(
    served_lab: ServedPlan, api: Api, normal_lab: Lab, no_run_left_behind
) -> None:
    lab = normal_lab
    # The same plan with a 3-second approval timeout, beside it (its paths are relative to its folder).
    document = yaml.safe_load(lab.plan.read_text())
    document.setdefault("recovery", {})["approval_timeout_seconds"] = 3
    impatient = lab.plan.with_name("plan-approval-timeout.yaml")
    impatient.write_text(yaml.safe_dump(document, sort_keys=False))
    try:
        run = api.create_run(served_lab.deployment_id("failover"), {"plan_path": str(impatient)})
        api.wait_for_state(run["id"], {"PAUSED"}, 60)
        paused_at = time.time()
        done = api.wait_for_state(run["id"], {"CANCELLED"}, 30)  # never FAILED, though the pause expires
        assert 2.5 <= time.time() - paused_at <= 20
        assert "no answer within 3 s" in done["state"]["message"]
    finally:
        impatient.unlink()
    assert_lab_unchanged(lab)
    declined = record(api.record_id(run["id"], "failover"))
    assert declined.status == "cancelled"
    assert step_named(declined, "approval").detail["approved"] is False


def test_a_one_minute_cron_runs_its_first_backup_on_the_next_minute_and_it_completes(
    every_minute: tuple[ServedPlan, float], api: Api, capsys
) -> None:
    served, registered_at = every_minute
    deployment_id = served.deployment_id("every-minute-test")

    def first_completed() -> dict | None:
        runs = api.post("/flow_runs/filter", {
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": ["COMPLETED"]}}},
            "sort": "EXPECTED_START_TIME_ASC", "limit": 1})
        return runs[0] if runs else None

    deadline = registered_at + FIRST_RUN_WAIT
    while (run := first_completed()) is None:
        failed = api.post("/flow_runs/filter", {"flow_runs": {
            "deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": ["FAILED", "CRASHED"]}}}})
        assert not failed, f"a scheduled run failed: {failed[0]['state']['message']}\n{served.log_tail()}"
        assert time.time() < deadline, f"no scheduled run completed within {FIRST_RUN_WAIT:g} s"
        time.sleep(0.5)
    assert run["auto_scheduled"] is True and run["created_by"]["type"] == "SCHEDULE"
    expected_start = parse_time(run["expected_start_time"])
    assert expected_start % 60 == 0  # on the minute
    assert 0 < expected_start - registered_at <= 61, "the first run is not the first minute after serving"
    backup = record(api.record_id(run["id"], "backup"))
    assert (backup.status, backup.trigger, backup.plan) == ("completed", "schedule", "every-minute-test")
    completed_after = parse_time(run["end_time"]) - registered_at
    late = parse_time(run["start_time"]) - expected_start
    with capsys.disabled():
        print(f"\n[schedule] one-minute cron: first run completed {completed_after:.1f} s after serving; "
              f"started {late:+.2f} s from its scheduled minute, ran {run['total_run_time']:.1f} s")


def test_a_not_ready_failover_forced_in_its_form_goes_on_and_records_every_reason_it_went_past(
    served_lab: ServedPlan, api: Api, normal_lab: Lab, no_run_left_behind
) -> None:
    lab = normal_lab
    document = yaml.safe_load(lab.plan.read_text())  # ivr-config backups wanted 60 ms old: NOT READY
    document["datasets"]["ivr-config"]["rpo_minutes"] = 0.001
    not_ready = lab.plan.with_name("plan-forced.yaml")
    not_ready.write_text(yaml.safe_dump(document, sort_keys=False))
    try:
        run = api.create_run(served_lab.deployment_id("failover"), {"plan_path": str(not_ready)})
        api.wait_for_state(run["id"], {"PAUSED"}, 60)
        schema, _ = api.wait_for_input_form(run["id"], 30)
        assert schema["properties"]["force"]["type"] == "boolean"  # offered only when NOT READY
        answer = api.post(f"/flow_runs/{run['id']}/resume", {"run_input": {
            "operator": "Wang Fang", "reason": "main is on fire; ivr-config can wait", "decision": "Approve",
            "force": True}})
        assert answer["status"] == "ACCEPT", answer
        api.wait_for_state(run["id"], {"COMPLETED"}, 180)
    finally:
        not_ready.unlink()
    forced = record(api.record_id(run["id"], "failover"))
    approval = step_named(forced, "approval")
    assert approval.detail["forced"] is True and approval.detail["operator"] == "Wang Fang"
    assert [reason.split(":")[0] for reason in approval.detail["forced_past"]] == ["backup ivr-config"]
    assert forced.milestones["forced"] <= forced.milestones["fenced"]
    # Its artifacts give times in the plan's zone, labelled; the run's name carries the record's id.
    zone = load_plan(lab.plan).plan.timezone
    artifacts = {artifact["key"].rsplit("-", 1)[1]: artifact for artifact in api.artifacts(run["id"])}
    rows = json.loads(artifacts["record"]["data"])
    assert {f"started ({zone})", f"ended ({zone})"} <= set(rows[0]) and "started_at" not in rows[0]
    assert f"({zone})" in artifacts["summary"]["data"]
    assert api.flow_run(run["id"])["name"] == f"failover-{forced.id}"
    assert lab.status().dns.points_at == "dr"
    back_to_normal(lab)
    assert lab.status().normal
