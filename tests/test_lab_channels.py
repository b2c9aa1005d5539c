"""The lab's emergency communication channels: the chat receiver, and the sms/email/chat faults."""

from __future__ import annotations

import http.client
import json
import secrets
import smtplib
from email.message import EmailMessage

import apprise
import pytest
from botocore.exceptions import ClientError
from lifeline.infra.lab import aws as lab_aws
from lifeline.infra.lab import components, fault, heal, load_channel_faults, load_faults
from lifeline.infra.lab import smtp as lab_smtp
from lifeline.infra.lab.chat import sent_chat
from lifeline.infra.lab.context import LabContext
from lifeline.infra.lab.roster import channel_endpoints
from lifeline.infra.lab.smtp import received_messages
from lifeline.tasks.run.measurements import recorded_incident_time

from tests.helpers import wait_for
from tests.lab_fixtures import Lab

pytestmark = pytest.mark.lab

QUIET = {"log": lambda message: None}


def post_json(context: LabContext, path: str, body: bytes) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(context.address("ops"), context.state.ports.chat, timeout=5)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def notify_chat(url: str, text: str, title: str = "Lifeline") -> bool:
    notifier = apprise.Apprise()
    assert notifier.add(url)
    return bool(notifier.notify(body=text, title=title))


def send_mail(context: LabContext, subject: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "lifeline@lab", "oncall@lab", subject
    message.set_content("the call centre is failing over to dr")
    with smtplib.SMTP(context.address("ops"), context.state.ports.smtp, timeout=5) as smtp:
        smtp.login(*lab_smtp.login(context.paths))
        smtp.send_message(message)


def publish_sms(context: LabContext, text: str) -> None:
    sns = lab_aws.client(context.paths, context.state, "sns")
    sns.publish(PhoneNumber="+8613800000002", Message=text)


def test_the_chat_receiver_is_a_component_of_the_ops_side(lab: Lab) -> None:
    context = lab.context
    assert components.is_up(context, "chat")
    assert lab.status().components["chat"].address == f"{context.address('ops')}:{context.state.ports.chat}"


def test_an_apprise_json_notification_reaches_the_chat_file(lab: Lab) -> None:
    context = lab.context
    url = channel_endpoints(context)["chat_url"]
    assert url == f"json://{context.address('ops')}:{context.state.ports.chat}/lifeline"
    title, text = "Failover started", f"crm moves to dr {secrets.token_hex(4)}"
    assert notify_chat(url, text, title)
    received = sent_chat(context.paths)[-1]
    assert received["path"] == "/lifeline"
    assert received["body"]["title"] == title and received["body"]["message"] == text
    assert received["at"]


def test_a_plain_webhook_is_kept_and_a_body_that_is_not_json_is_refused(lab: Lab) -> None:
    context = lab.context
    text = f"plain webhook {secrets.token_hex(4)}"
    assert post_json(context, "/hooks/ops", json.dumps({"text": text}).encode()) == (200, {"ok": True})
    assert sent_chat(context.paths)[-1]["body"] == {"text": text}
    before = len(sent_chat(context.paths))
    status, answer = post_json(context, "/hooks/ops", b"not json {")
    assert status == 400 and answer["ok"] is False
    assert len(sent_chat(context.paths)) == before


def test_channel_endpoints_name_the_smtp_sink(lab: Lab) -> None:
    context = lab.context
    endpoints = channel_endpoints(context)
    assert (endpoints["smtp_host"], endpoints["smtp_port"]) == (context.address("ops"), context.state.ports.smtp)
    subject = f"endpoint check {secrets.token_hex(4)}"
    send_mail(context, subject)  # plain SMTP, no TLS, no login
    assert subject in [message["Subject"] for message in received_messages(context.paths)]


def test_sms_down_refuses_sns_publish_until_heal(lab: Lab) -> None:
    context = lab.context
    text = f"sms after heal {secrets.token_hex(4)}"
    try:
        fault("sms-down", lab.home)
        with pytest.raises(ClientError) as refused:
            publish_sms(context, "never sent")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "sns:Publish" in str(refused.value)
        assert "never sent" not in [sms["message"] for sms in lab_aws.sent_sms(context.paths)]
    finally:
        heal(lab.home, **QUIET)
    publish_sms(context, text)
    assert text in [sms["message"] for sms in lab_aws.sent_sms(context.paths)]


def test_email_down_refuses_smtp_connections_until_heal(lab: Lab) -> None:
    context = lab.context
    subject = f"mail after heal {secrets.token_hex(4)}"
    try:
        fault("email-down", lab.home)
        with pytest.raises(ConnectionRefusedError):
            send_mail(context, "never sent")
        assert "smtp: left stopped" in " ".join(_up_notes(lab))  # `up` does not undo the fault
        assert not components.is_up(context, "smtp")
    finally:
        heal(lab.home, **QUIET)
    send_mail(context, subject)
    wait_for(lambda: subject in [message["Subject"] for message in received_messages(context.paths)], 5,
             "the mail sent after heal in the sink")


def test_chat_down_refuses_posts_until_heal(lab: Lab) -> None:
    context = lab.context
    text = f"chat after heal {secrets.token_hex(4)}"
    try:
        fault("chat-down", lab.home)
        with pytest.raises(ConnectionRefusedError):
            post_json(context, "/lifeline", json.dumps({"text": "never sent"}).encode())
        assert not notify_chat(channel_endpoints(context)["chat_url"], "never sent")
    finally:
        heal(lab.home, **QUIET)
    assert post_json(context, "/lifeline", json.dumps({"text": text}).encode()) == (200, {"ok": True})
    assert sent_chat(context.paths)[-1]["body"] == {"text": text}


def test_channel_faults_are_not_an_incident(lab: Lab) -> None:
    context = lab.context
    try:
        for name in ("sms-down", "email-down", "chat-down"):
            fault(name, lab.home)
        assert set(load_channel_faults(context.paths)) == {"sms-down", "email-down", "chat-down"}
        assert load_faults(context.paths) == {}
        assert recorded_incident_time(context.paths.faults_file) is None
        report = lab.status()
        assert set(report.channel_faults) == {"sms-down", "email-down", "chat-down"} and report.faults == {}
        assert not report.normal
    finally:
        heal(lab.home, **QUIET)
    assert load_channel_faults(context.paths) == {}
    lab.wait_normal(30)


def _up_notes(lab: Lab) -> list[str]:
    from lifeline.infra.lab import up

    notes: list[str] = []
    up(lab.home, log=notes.append)
    return notes
