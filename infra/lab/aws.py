"""The lab's AWS (moto): names, endpoint, credentials and the boto3 calls the lab makes.

The server process itself is moto_server.py. Clients sign with the key it generated, kept in
``secrets/aws.env`` (KEY=VALUE, the plan's ``credentials_file``/``environment_file``) and
``secrets/aws-credentials`` (boto3's shared-credentials format), both 0600.
"""

from __future__ import annotations

import json
from typing import Any

from lifeline.tasks.adapters.environment_file import read_environment_file

from .state import LabPaths, LabState

BUCKET = "cc-backups"
STATUS_BUCKET = "cc-status"  # the public status page; anyone may read it
PITR_BUCKET = "cc-pitr"  # pgBackRest's off-site repository (through s3-tls)
ZONE = "callcenter.lab"
RECORD = "crm.callcenter.lab"
RECORD_TTL = 5
REGION = "us-east-1"
IAM_USER = "lifeline-lab"
# The `sms-down` fault: an explicit Deny beats the user's admin policy, as in a real account whose
# key lost sns:Publish (moto answers 403 AccessDenied "... is not authorized to perform: sns:Publish").
SMS_DENY_POLICY_NAME = "lab-fault-sms-down"
SMS_DENY_POLICY = {"Version": "2012-10-17",
                   "Statement": [{"Effect": "Deny", "Action": "sns:Publish", "Resource": "*"}]}


def endpoint_url(state: LabState) -> str:
    return f"http://{state.addresses.ops}:{state.ports.moto}"


def credentials(paths: LabPaths) -> tuple[str, str]:
    values = read_environment_file(paths.aws_environment_file)
    return values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]


def client(paths: LabPaths, state: LabState, service: str, *, access_key: tuple[str, str] | None = None) -> Any:
    """A boto3 client for the lab's moto (signed with the lab key unless ``access_key`` given)."""
    import boto3
    from botocore.config import Config

    key_id, secret = access_key or credentials(paths)
    return boto3.client(
        service,
        endpoint_url=endpoint_url(state),
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2}),
    )


def hosted_zone_id(route53: Any, zone: str = ZONE) -> str:
    for hosted in route53.list_hosted_zones_by_name(DNSName=zone)["HostedZones"]:
        if hosted["Name"].rstrip(".") == zone:
            return str(hosted["Id"])
    raise LookupError(f"hosted zone {zone} not found")


def record_value(route53: Any, zone_id: str, record: str = RECORD) -> tuple[str | None, int]:
    """The A record's first value and its TTL (None if there is no such record)."""
    answer = route53.list_resource_record_sets(
        HostedZoneId=zone_id, StartRecordName=record, StartRecordType="A", MaxItems="1"
    )
    for record_set in answer["ResourceRecordSets"]:
        if record_set["Name"].rstrip(".") == record and record_set["Type"] == "A":
            values = [item["Value"] for item in record_set.get("ResourceRecords", [])]
            return (values[0] if values else None), int(record_set.get("TTL", RECORD_TTL))
    return None, RECORD_TTL


def set_record(route53: Any, zone_id: str, value: str, record: str = RECORD, ttl: int = RECORD_TTL) -> None:
    route53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Comment": "lifeline lab",
            "Changes": [{
                "Action": "UPSERT",
                "ResourceRecordSet": {"Name": record, "Type": "A", "TTL": ttl, "ResourceRecords": [{"Value": value}]},
            }],
        },
    )


def deny_sms(paths: LabPaths, state: LabState) -> None:
    """Take sns:Publish away from the lab's key (an inline Deny policy on its IAM user)."""
    client(paths, state, "iam").put_user_policy(UserName=IAM_USER, PolicyName=SMS_DENY_POLICY_NAME,
                                                PolicyDocument=json.dumps(SMS_DENY_POLICY))


def allow_sms(paths: LabPaths, state: LabState) -> bool:
    """Give sns:Publish back; returns whether it had been taken away."""
    iam = client(paths, state, "iam")
    if SMS_DENY_POLICY_NAME not in iam.list_user_policies(UserName=IAM_USER)["PolicyNames"]:
        return False
    iam.delete_user_policy(UserName=IAM_USER, PolicyName=SMS_DENY_POLICY_NAME)
    return True


def sent_sms(paths: LabPaths) -> list[dict[str, str]]:
    """Every SMS sent through the lab's SNS (phone_number, message, message_id, at)."""
    if not paths.sms_file.exists():
        return []
    return [json.loads(line) for line in paths.sms_file.read_text(encoding="utf-8").splitlines() if line.strip()]
