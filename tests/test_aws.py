"""The AWS adapter against the lab's moto (authentication on): Route 53, SNS, refused credentials."""

from __future__ import annotations

import json
import secrets
import socket
import time

import pytest
from lifeline.configs.loading import load_plan
from lifeline.tasks.adapters import aws

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def plan(lab):
    return load_plan(lab.plan).plan


@pytest.fixture(scope="module")
def session(plan) -> aws.AwsSession:
    return aws.AwsSession.from_credentials_file(
        region=plan.aws.region, endpoint_url=plan.aws.endpoint_url, credentials_file=plan.aws.credentials_file
    )


def session_with(session: aws.AwsSession, **credentials: str) -> aws.AwsSession:
    return aws.AwsSession(region=session.region, endpoint_url=session.endpoint_url,
                          credentials={**session.credentials, **credentials})


def unique_record(plan) -> str:
    return f"test-{secrets.token_hex(4)}.{plan.dns.zone}"


def test_the_lab_credentials_are_accepted(session):
    identity = session.credentials_accepted()
    assert identity.arn.endswith(":user/lifeline-lab") and identity.account


@pytest.mark.parametrize("call", ["sts", "route53", "sns"])
def test_a_wrong_secret_is_refused_without_showing_it(session, plan, call):
    wrong_secret = "canary-" + secrets.token_hex(16)
    refused = session_with(session, AWS_SECRET_ACCESS_KEY=wrong_secret)
    attempt = {
        "sts": refused.credentials_accepted,
        "route53": lambda: refused.record_value(plan.dns.zone, plan.dns.record),
        "sns": lambda: refused.publish_sms("+8613800000000", "never sent"),
    }[call]
    with pytest.raises(aws.AwsCredentialsRefused) as raised:
        attempt()
    message = str(raised.value)
    assert wrong_secret not in message and "\n" not in message
    assert f"at {session.endpoint_url}" in message and "refused" in message
    assert raised.value.user_error and not raised.value.transient


def test_an_unknown_access_key_is_refused(session):
    with pytest.raises(aws.AwsCredentialsRefused, match="InvalidClientTokenId"):
        session_with(session, AWS_ACCESS_KEY_ID="AKIA" + "X" * 16).credentials_accepted()


def test_an_endpoint_that_does_not_answer_is_unavailable_and_transient(session):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    down = aws.AwsSession(region=session.region, endpoint_url=f"http://127.0.0.1:{closed_port}",
                          credentials=session.credentials)
    started = time.monotonic()
    with pytest.raises(aws.AwsUnavailable) as raised:
        down.credentials_accepted()
    assert time.monotonic() - started < 3
    assert raised.value.transient and not raised.value.user_error


def test_upsert_waits_until_in_sync_and_reads_back(session, plan):
    record = unique_record(plan)
    assert session.record_value(plan.dns.zone, record) == aws.RecordSet((), None)
    change_id = session.upsert_record(plan.dns.zone, record, "127.0.0.42", ttl=7)
    assert change_id
    assert session.wait_in_sync(change_id, timeout=10, poll=0.1) < 10
    values, ttl = session.record_value(plan.dns.zone, record)
    assert (values, ttl) == (("127.0.0.42",), 7)


def test_switch_record_is_idempotent(session, plan):
    record = unique_record(plan)
    first = session.switch_record(plan.dns.zone, record, "127.0.0.2", ttl=5, timeout=10, poll=0.1)
    assert first.changed and first.change_id
    again = session.switch_record(plan.dns.zone, record, "127.0.0.2", ttl=5, timeout=10, poll=0.1)
    assert not again.changed and again.change_id is None
    moved = session.switch_record(plan.dns.zone, record, "127.0.0.1", ttl=5, timeout=10, poll=0.1)
    assert moved.changed and session.record_value(plan.dns.zone, record).values == ("127.0.0.1",)


def test_the_lab_record_names_main(session, plan):
    assert session.record_value(plan.dns.zone, plan.dns.record) == aws.RecordSet((plan.dns.values["main"],), plan.dns.ttl)


def test_the_hosted_zone_id_is_looked_up_once(session, plan):
    zone_id = session.hosted_zone_id(plan.dns.zone)
    assert zone_id.startswith("/hostedzone/")
    assert session.hosted_zone_id(plan.dns.zone + ".") == zone_id
    assert session.hosted_zone_id(zone_id) == zone_id


def test_a_missing_zone_is_a_user_error(session):
    with pytest.raises(aws.DnsZoneMissing, match="no hosted zone named nowhere.invalid") as raised:
        session.record_value("nowhere.invalid", "crm.nowhere.invalid")
    assert raised.value.user_error and not raised.value.transient


def test_an_sms_is_published(session, lab):
    message = f"Lifeline test {secrets.token_hex(4)}: failover started"
    message_id = session.publish_sms("+8613800000042", message)
    sent = [json.loads(line) for line in lab.context.paths.sms_file.read_text().splitlines()]
    assert {"phone_number": "+8613800000042", "message": message, "message_id": message_id}.items() <= sent[-1].items()


def test_a_bad_phone_number_is_rejected_before_any_call(session):
    with pytest.raises(aws.AwsRequestRejected, match="not an E.164 phone number"):
        session.publish_sms("13800000042", "x")


def test_the_session_repr_hides_credentials(session):
    assert session.credentials["AWS_SECRET_ACCESS_KEY"] not in repr(session)
