"""The communication plan: roster and references validated by field path, both languages render, on-call
from the rotation's recurrence, real deliveries with fallback, masking, acknowledgement."""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime

import pytest
from lifeline.configs.loading import PlanInvalid, load_plan
from lifeline.tasks.run.deliveries import mask_phone

from tests.helpers import ledger, run_cli, write_password, write_plan
from tests.servers import free_port

pytestmark = pytest.mark.usefixtures("prefect_server", "lifeline_home")


def roster_document(smtp_port: int, chat_url: str) -> dict:
    return {
        "name": "cc",
        "repositories": {"local": {"url": "./repo", "password_file": "./pw", "init": True}},
        "datasets": {"recordings": {"repository": "local", "paths": ["/srv/recordings"]}},
        "hotline": "+861012345678",
        "contacts": {
            "wang": {"name": "Wang Fang", "role": "emergency-liaison", "phones": ["+8613800000042"],
                     "email": "wang@cc.example", "language": "zh", "deputy": "li"},
            "li": {"name": "Li Wei", "role": "leader", "phones": ["+8613800000043"], "email": "li@cc.example",
                   "language": "en"},
            "chen": {"name": "Chen Jie", "role": "oncall-engineer", "email": "chen@cc.example", "language": "en"},
            "zhao": {"name": "Zhao Min", "role": "oncall-engineer", "email": "zhao@cc.example", "language": "zh"},
        },
        "oncall": {"engineer": {"members": ["chen", "zhao"], "start": "2026-01-05T09:00:00", "every": "week"}},
        "channels": {
            "chat-down": {"type": "chat", "url": f"http://127.0.0.1:{free_port()}/nobody", "attempts": 2,
                          "backoff_seconds": 0.05},
            "chat": {"type": "chat", "url": chat_url},
            "email": {"type": "email", "host": "127.0.0.1", "port": smtp_port, "security": "none",
                      "sender": "lifeline@cc.example"},
        },
        "audiences": {
            "liaison": {"members": ["wang"], "channels": ["chat-down", "email"]},
            "leadership": {"members": ["role:leader"], "channels": ["chat"]},
            "oncall": {"members": ["oncall:engineer"], "channels": ["email"]},
        },
    }


def test_every_reference_and_template_problem_is_named_by_its_field(tmp_path):
    write_password(tmp_path / "pw")
    document = roster_document(25, "http://127.0.0.1:1/hook")
    document["contacts"]["wang"]["deputy"] = "nobody"
    document["contacts"]["li"]["phones"] = ["13800000043"]
    document["audiences"]["leadership"]["members"] = ["role:leader", "ghost"]
    document["audiences"]["oncall"]["channels"] = ["pager"]
    document["templates"] = {"recovered": {"all": {"zh": {"body": "{{ plan }} 恢复 {{ sitee }}"},
                                                   "en": {"body": "{{ plan }} recovered at {{ site }}"}}}}
    with pytest.raises(PlanInvalid) as raised:
        load_plan(write_plan(tmp_path, document))
    found = {problem.field: problem.message for problem in raised.value.problems}
    assert "no contact named 'nobody'" in found["contacts.wang.deputy"]
    assert "contacts.li.phones.0" in found
    assert "no contact named 'ghost'" in found["audiences.leadership.members.1"]
    assert "no channel named 'pager'" in found["audiences.oncall.channels.0"]
    assert "sitee" in found["templates.recovered.all.zh.body"]
    assert "templates.recovered.all.en.body" not in found
    validate = run_cli("validate", "--plan", str(tmp_path / "plan.yaml"))
    assert validate.returncode == 2 and "templates.recovered.all.zh.body" in validate.stderr


def test_on_call_follows_the_weekly_rotation_and_its_override(tmp_path, smtp_sink, webhook):
    write_password(tmp_path / "pw")
    document = roster_document(smtp_sink[0], webhook.url)
    document["oncall"]["engineer"]["overrides"] = [{"contact": "chen", "start": "2026-01-27T00:00:00",
                                                    "end": "2026-01-28T00:00:00"}]
    rotation = load_plan(write_plan(tmp_path, document)).plan.oncall["engineer"]
    shanghai = "Asia/Shanghai"
    assert rotation.holder(datetime(2026, 1, 5, 9, 0), shanghai) == "chen"
    assert rotation.holder(datetime(2026, 1, 12, 8, 59), shanghai) == "chen"
    assert rotation.holder(datetime(2026, 1, 12, 9, 0), shanghai) == "zhao"
    assert rotation.holder(datetime(2026, 1, 19, 9, 0), shanghai) == "chen"
    assert rotation.holder(datetime(2026, 1, 26, 12, 0), shanghai) == "zhao"
    assert rotation.holder(datetime(2026, 1, 27, 12, 0), shanghai) == "chen"  # the override, in zhao's week
    assert rotation.holder(datetime(2026, 1, 28, 12, 0), shanghai) == "zhao"


def test_notify_reaches_everyone_in_their_language_falls_back_and_masks_numbers(tmp_path, smtp_sink, webhook):
    write_password(tmp_path / "pw")
    port, maildir = smtp_sink
    plan = write_plan(tmp_path, roster_document(port, webhook.url))
    sent = run_cli("notify", "--plan", str(plan), "--audience", "liaison", "--audience", "leadership",
                   "--audience", "oncall", "--template", "incident_declared", "--json")
    assert sent.returncode == 0, sent.stderr
    result = json.loads(sent.stdout)
    assert result["messages"] == result["reached"] == 3
    by_contact: dict[str, list[dict]] = {}
    for delivery in result["deliveries"]:
        by_contact.setdefault(delivery["contact"], []).append(delivery)
    # the liaison's chat is down: two failed attempts there, then email carried it
    assert [(d["channel"], d["status"], d["attempt"]) for d in by_contact["wang"]] == [
        ("chat-down", "failed", 1), ("chat-down", "failed", 2), ("email", "delivered", 1)]
    assert by_contact["wang"][-1]["fallback"] is True and "connection refused" in by_contact["wang"][0]["answer"]
    assert [d["channel"] for d in by_contact["li"]] == ["chat"]
    assert len(by_contact) == 3 and set(by_contact) & {"chen", "zhao"}  # who is on call now
    # what arrived: Chinese for Wang, English for the leader
    mails = [mailbox.MaildirMessage(m) for m in mailbox.Maildir(str(maildir))]
    to_wang = [m for m in mails if m["To"] == "wang@cc.example"]
    assert len(to_wang) == 1 and "宣布事件" in to_wang[0].get_payload(decode=True).decode()
    [chat] = webhook.received
    assert "declared an incident" in chat["message"] and "+861012345678" in chat["message"]
    # masked: the ledger never holds an address whole
    kept = json.dumps([d.model_dump(mode="json") for d in _deliveries(result["run_id"])])
    assert "wang@cc.example" not in kept and "w***@cc.example" in kept
    assert mask_phone("+8613800000042") == "+86138****0042"


def _deliveries(run_id: str):
    from lifeline.tasks.run.ledger import Deliveries

    return Deliveries(ledger()).of_run(run_id)


def test_one_message_reaches_200_recipients(tmp_path, smtp_sink, webhook):
    write_password(tmp_path / "pw")
    document = roster_document(smtp_sink[0], webhook.url)
    for number in range(200):
        document["contacts"][f"agent{number:03d}"] = {
            "name": f"Agent {number}", "role": "agent", "email": f"agent{number:03d}@cc.example",
            "phones": [f"+86138{number:08d}"], "language": "zh" if number % 2 else "en"}
    document["audiences"]["staff"] = {"members": ["role:agent"], "channels": ["email", "chat"]}
    plan = write_plan(tmp_path, document)
    sent = run_cli("notify", "--plan", str(plan), "--audience", "staff", "--message", "Drill at 15:00", "--json")
    assert sent.returncode == 0, sent.stderr
    result = json.loads(sent.stdout)
    assert result["messages"] == result["reached"] == 200
    assert len(list(mailbox.Maildir(str(smtp_sink[1])))) == 200


def test_ack_records_who_and_when_and_refuses_a_stranger(tmp_path, smtp_sink, webhook):
    write_password(tmp_path / "pw")
    plan = write_plan(tmp_path, roster_document(smtp_sink[0], webhook.url))
    from lifeline.tasks.run.record import RunRecord

    record = RunRecord(kind="failover", plan="cc", plan_sha256="0" * 64, status="failed")
    ledger().save_run(record)
    stranger = run_cli("ack", record.id, "--by", "mallory", "--plan", str(plan))
    assert stranger.returncode == 2 and "mallory" in stranger.stderr
    done = run_cli("ack", record.id, "--by", "li", "--plan", str(plan), "--json")
    assert done.returncode == 0, done.stderr
    acknowledged = json.loads(done.stdout)
    assert acknowledged["contact"] == "li" and datetime.fromisoformat(acknowledged["at"]) <= datetime.now(UTC)
    again = run_cli("ack", record.id, "--by", "wang", "--plan", str(plan))
    assert "already acknowledged by li" in again.stdout


def test_escalation_reaches_level_2_without_an_ack_and_stops_once_acknowledged(tmp_path, smtp_sink, webhook):
    """A failed backup pages on-call; nobody answers, so leadership is told; an ack ends the foreground wait."""
    import subprocess
    import sys
    import time

    write_password(tmp_path / "pw")
    document = roster_document(smtp_sink[0], webhook.url)
    document["datasets"] = {"crm": {"repository": "local", "command": ["false"], "stdin_filename": "crm.sql"}}
    document["escalation"] = {"levels": [{"notify": ["oncall"], "after_minutes": 0},
                                         {"notify": ["leadership"], "after_minutes": 0.05},
                                         {"notify": ["liaison"], "after_minutes": 10}]}
    plan = write_plan(tmp_path, document)
    backup = subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", "backup", "--plan", str(plan)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 150
        while not any("[Escalation 2]" in posted["message"] for posted in webhook.received):
            assert backup.poll() is None, backup.communicate()
            assert time.monotonic() < deadline, "level 2 never reached leadership"
            time.sleep(0.3)
        [record] = ledger().runs(kind="backup")
        assert record.status == "failed"
        acknowledged = run_cli("ack", record.id, "--by", "li", "--plan", str(plan))
        assert acknowledged.returncode == 0, acknowledged.stderr
        _, stderr = backup.communicate(timeout=60)
    finally:
        if backup.poll() is None:
            backup.kill()
    assert backup.returncode == 1 and "lifeline ack" in stderr
    levels = [d.level for d in _deliveries(record.id) if d.status == "delivered"]
    assert 2 in levels and 3 not in levels  # the ack came before level 3's ten minutes


def test_under_serve_an_escalation_is_a_flow_run_that_a_restart_carries_on_and_its_form_acknowledges(
        tmp_path, smtp_sink, webhook, api):
    """A served backup fails; its escalation runs as a flow run of its own; `serve` restarts between levels 2 and 3,
    the new `serve` carries on without repeating a level, and the form on the run's page acknowledges it."""
    import sys

    from lifeline.configs.loading import load_plan
    from lifeline.flows.serve import deployments
    from lifeline.tasks.run.ledger import Deliveries, Escalations

    from tests.helpers import wait_for
    from tests.serve_fixtures import start_serving, stop_serving, switch_schedules_off

    write_password(tmp_path / "pw")
    document = roster_document(smtp_sink[0], webhook.url)
    document["datasets"] = {"crm": {"repository": "local", "command": ["false"], "stdin_filename": "crm.sql"}}
    document["escalation"] = {"levels": [{"notify": ["oncall"], "after_minutes": 0},
                                         {"notify": ["leadership"], "after_minutes": 0.05},
                                         {"notify": ["liaison"], "after_minutes": 0.6},
                                         {"notify": ["leadership"], "after_minutes": 30}]}
    plan = write_plan(tmp_path, document)
    expected = {deployment.name: deployment.flow_name for deployment in deployments(load_plan(plan))}
    argv = [sys.executable, "-m", "lifeline.flows.cli", "serve", "--plan", str(plan)]

    def escalation_run(record_id: str) -> str | None:
        state = Escalations(ledger()).get(record_id)
        return state.flow_run_id if state else None

    def levels_told(record_id: str) -> list[int]:
        return [d.level for d in Deliveries(ledger()).of_run(record_id) if d.status == "delivered" and d.level]

    served = start_serving(api, argv, tmp_path / "serve-1.log", expected)
    try:
        for deployment in served.registered.values():
            switch_schedules_off(api, deployment)
        backup = api.create_run(served.deployment_id("backup"))
        api.wait_for_state(backup["id"], {"FAILED"}, 120)
        record_id = api.record_id(backup["id"], "backup")
        first = wait_for(lambda: escalation_run(record_id), 30, "the escalation's flow run")
        assert api.flow_run(first)["name"] == f"escalation-{record_id}"
        api.wait_for_state(first, {"PAUSED"}, 60)
        wait_for(lambda: 2 in levels_told(record_id), 60, "level 2 told")
        assert 3 not in levels_told(record_id)
    finally:
        served.stop()  # `serve` goes away between level 2 and level 3
    served = start_serving(api, argv, tmp_path / "serve-2.log", expected)
    try:
        second = wait_for(lambda: escalation_run(record_id) not in (None, first) and escalation_run(record_id), 60,
                          "a new escalation flow run")
        assert api.flow_run(first)["state_type"] in ("CANCELLED", "CRASHED")
        assert f"escalation of run {record_id} carried on in flow run {second}" in served.log_tail(200)
        api.wait_for_state(second, {"PAUSED"}, 60)
        wait_for(lambda: 3 in levels_told(record_id), 90, "level 3 told after the restart")
        api.wait_for_input_form(second, 30)
        api.post(f"/flow_runs/{second}/resume", {"run_input": {"contact": "li", "note": "calling the DBA"}})
        api.wait_for_state(second, {"COMPLETED"}, 60)
    finally:
        stop_serving(api, served)
    acknowledged = Deliveries(ledger()).acknowledgement(record_id)
    assert (acknowledged.contact, acknowledged.via, acknowledged.note) == ("li", "ui", "calling the DBA")
    assert Escalations(ledger()).get(record_id).status == "acknowledged"
    # Each level's message went out once per recipient: the restart repeated nothing, and level 4 never came.
    told = [d for d in Deliveries(ledger()).of_run(record_id) if d.status == "delivered" and d.level]
    per_level = {level: sorted(d.contact for d in told if d.level == level) for level in (1, 2, 3, 4)}
    assert per_level == {1: [], 2: ["li"], 3: ["wang"], 4: []}  # level 1's on-call had the event itself


def test_a_message_a_kill_cut_off_mid_send_is_not_sent_again_by_the_run_that_carries_on(tmp_path, smtp_sink, webhook):
    """At most once: the killed run wrote `sending` for Wang's notice and died before the answer. Nobody knows
    if it went, so the run taking over does not send it again (an escalation reaches Wang if nobody acks);
    the others, never attempted, are told. The killed run's report shows the message as cut off."""
    from lifeline.configs.messages import unknown_fields
    from lifeline.tasks.report.after_action import communications_of
    from lifeline.tasks.run.deliveries import Delivery
    from lifeline.tasks.run.ledger import Deliveries
    from lifeline.tasks.run.record import Journal, RunRecord
    from lifeline.tasks.steps.communication import RunCommunications

    write_password(tmp_path / "pw")
    path = write_plan(tmp_path, roster_document(smtp_sink[0], webhook.url))
    plan = load_plan(path).plan
    killed = RunRecord(kind="failover", plan=plan.name, plan_sha256="-", status="failed")
    Deliveries(ledger()).record(Delivery(message_id="cut-off-1", run_id=killed.id, event="incident_declared",
                                         audience="liaison", contact="wang", channel="email", channel_type="email",
                                         recipient="w***@cc.example", status="sending", attempt=1))
    journal = Journal(RunRecord(kind="failover", plan=plan.name, plan_sha256="-"))
    communications = RunCommunications(plan, str(path), journal, ledger(), carries_on=[killed.id])
    communications.announce("incident_declared", **unknown_fields("incident_declared"))
    communications.notifier.wait()
    told = {delivery.contact for delivery in Deliveries(ledger()).of_run(journal.record.id)}
    assert told and "wang" not in told, told
    mails = [mailbox.MaildirMessage(m) for m in mailbox.Maildir(str(smtp_sink[1]))]
    assert not [mail for mail in mails if mail["To"] == "wang@cc.example"]
    assert Deliveries(ledger()).cut_off(journal.record.id) == []  # every send of the new run has its outcome
    [cut_off], _ = communications_of(ledger(), killed)
    assert cut_off.status == "sending" and cut_off.contact == "wang"
