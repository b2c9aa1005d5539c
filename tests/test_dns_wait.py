"""Waiting for a Route 53 change to be INSYNC, against a stubbed Route 53 that never gets there or refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.stub import Stubber
from lifeline.tasks.adapters import aws

CHANGE = "/change/C0000000000000000001"


@pytest.fixture
def route53() -> tuple[aws.AwsSession, Stubber]:
    session = aws.AwsSession(region="us-east-1", endpoint_url="http://route53.invalid",
                             credentials={"AWS_ACCESS_KEY_ID": "AKIATESTTESTTEST", "AWS_SECRET_ACCESS_KEY": "not-a-secret"})
    stubber = Stubber(session.client("route53"))
    with stubber:
        yield session, stubber


def change(status: str) -> dict:
    return {"ChangeInfo": {"Id": CHANGE, "Status": status, "SubmittedAt": datetime(2026, 1, 1, tzinfo=UTC)}}


def test_a_change_in_sync_after_a_while_is_waited_for(route53):
    session, stubber = route53
    for status in ("PENDING", "PENDING", "INSYNC"):
        stubber.add_response("get_change", change(status))
    session.wait_in_sync(CHANGE, timeout=5, poll=0.01)
    stubber.assert_no_pending_responses()


def test_a_change_never_in_sync_stops_at_the_timeout(route53):
    session, stubber = route53
    for _ in range(4):  # one ask at once, then one every poll within the timeout; a fifth would find no answer
        stubber.add_response("get_change", change("PENDING"))
    with pytest.raises(aws.DnsChangeNotInSync) as raised:
        session.wait_in_sync(CHANGE, timeout=0.15, poll=0.05)
    assert str(raised.value) == f"AWS route53 at http://route53.invalid: change {CHANGE} still PENDING after 0.15 s"
    assert raised.value.transient
    stubber.assert_no_pending_responses()


def test_a_refused_get_change_is_one_line_and_not_retried(route53):
    session, stubber = route53
    stubber.add_client_error("get_change", "NoSuchChange", "Could not find\nchange with id C1", 404)
    with pytest.raises(aws.AwsRequestRejected) as raised:
        session.wait_in_sync(CHANGE, timeout=5, poll=0.01)
    assert str(raised.value) == ("AWS route53 get_change at http://route53.invalid: NoSuchChange: Could not find change "
                                 "with id C1")
    assert not raised.value.transient
    stubber.assert_no_pending_responses()


def test_refused_credentials_while_waiting_are_named(route53):
    session, stubber = route53
    stubber.add_client_error("get_change", "InvalidClientTokenId", "The security token is invalid", 403)
    with pytest.raises(aws.AwsCredentialsRefused, match="access key …TEST refused") as raised:
        session.wait_in_sync(CHANGE, timeout=5, poll=0.01)
    assert "not-a-secret" not in str(raised.value) and raised.value.user_error
