"""AWS adapter (boto3): Route 53 records, SNS messages, and whether the credentials are accepted.

Knows nothing of Prefect. Works against real AWS or any endpoint that speaks its APIs (the lab's
moto). Credentials come from the plan's KEY=VALUE file; they are handed to boto3 directly and never
appear in a message: errors name the service, the call, the endpoint and AWS's error code.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from lifeline.tasks.adapters.deadline import within_step
from lifeline.tasks.adapters.environment_file import read_environment_file
from lifeline.tasks.adapters.errors import LifelineError

CREDENTIAL_ERROR_CODES = frozenset({
    "InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException",
    "UnrecognizedClientException", "InvalidAccessKeyId", "AuthFailure", "ExpiredToken", "ExpiredTokenException",
    "InvalidSignatureException", "MissingAuthenticationToken", "IncompleteSignature", "NotAuthorized",
})
UNAVAILABLE_ERROR_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "SlowDown",
    "PriorRequestNotComplete", "ServiceUnavailable", "InternalError", "InternalFailure", "RequestTimeout",
    "RequestTimeoutException", "Unavailable",
})
PHONE_NUMBER = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164


class AwsError(LifelineError):
    """One line: service, call, endpoint and AWS's error code; never a secret."""


class AwsCredentialsRefused(AwsError):
    user_error = True


class AwsUnavailable(AwsError):
    """The endpoint cannot be reached, is throttling, or answered 5xx: retrying later may succeed."""

    transient = True


class AwsRequestRejected(AwsError):
    """AWS refused the request itself (bad phone number, invalid change batch...)."""

    user_error = True


class DnsZoneMissing(AwsError):
    user_error = True


class DnsChangeNotInSync(AwsError):
    transient = True


class DnsRecordMismatch(AwsError):
    """After an INSYNC change the record reads back with other values (someone else changed it)."""


class RecordSet(NamedTuple):
    values: tuple[str, ...]  # empty when the record does not exist
    ttl: int | None


@dataclass(frozen=True)
class CallerIdentity:
    account: str
    arn: str
    user_id: str


@dataclass(frozen=True)
class RecordSwitch:
    zone: str
    record: str
    value: str
    changed: bool  # False: the record already held exactly this value and TTL
    change_id: str | None
    seconds: float


@dataclass(frozen=True)
class AwsTimeouts:
    connect_seconds: float = 2.0
    read_seconds: float = 5.0
    max_attempts: int = 3  # botocore "standard" retries: total attempts, first one included


def _normalised_name(name: str) -> str:
    return name.rstrip(".").lower().replace("\\052", "*")


def _one_line(text: str, secret: str | None) -> str:
    text = " ".join(str(text).split())
    if secret:
        text = text.replace(secret, "***")
    return text[:300]


_SHARED: dict[tuple, AwsSession] = {}
_SHARED_LOCK = threading.Lock()


@dataclass
class AwsSession:
    """boto3 clients (one per service, thread-safe once built) signed with the given credentials."""

    region: str
    endpoint_url: str | None = None
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeouts: AwsTimeouts = field(default_factory=AwsTimeouts)
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _zone_ids: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_credentials_file(
        cls, *, region: str, endpoint_url: str | None = None, credentials_file: Path | None = None,
        timeouts: AwsTimeouts | None = None,
    ) -> AwsSession:
        """Without a file, boto3's own chain applies (environment, instance role...).

        Sessions are shared per process for the same endpoint and credentials: building boto3
        clients costs up to a second, and a failover asks several times within it.
        """
        credentials = read_environment_file(credentials_file)
        key = (region, endpoint_url, tuple(sorted(credentials.items())), timeouts)
        with _SHARED_LOCK:
            if key not in _SHARED:
                _SHARED[key] = cls(region=region, endpoint_url=endpoint_url, credentials=credentials,
                                   timeouts=timeouts or AwsTimeouts())
            return _SHARED[key]

    @property
    def where(self) -> str:
        return self.endpoint_url or f"AWS {self.region}"

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                import boto3  # imported at first use: a served flow run starts ~0.1 s sooner without it
                from botocore.config import Config

                session = boto3.session.Session(
                    aws_access_key_id=self.credentials.get("AWS_ACCESS_KEY_ID"),
                    aws_secret_access_key=self.credentials.get("AWS_SECRET_ACCESS_KEY"),
                    aws_session_token=self.credentials.get("AWS_SESSION_TOKEN"),
                    region_name=self.region,
                )
                config = Config(
                    connect_timeout=self.timeouts.connect_seconds,
                    read_timeout=self.timeouts.read_seconds,
                    retries={"mode": "standard", "max_attempts": self.timeouts.max_attempts},
                    user_agent_extra="lifeline",
                )
                self._clients[service] = session.client(service, endpoint_url=self.endpoint_url, config=config)
            return self._clients[service]

    def call(self, service: str, operation: str, **parameters: Any) -> dict[str, Any]:
        """One API call with every failure translated into an AwsError."""
        try:
            return getattr(self.client(service), operation)(**parameters)  # type: ignore[no-any-return]
        except Exception as error:  # noqa: BLE001 - botocore raises many unrelated types; unknown ones re-raised
            raise self._translate(error, service, operation) from None

    def _translate(self, error: Exception, service: str, operation: str) -> Exception:
        import botocore.exceptions

        secret = self.credentials.get("AWS_SECRET_ACCESS_KEY")
        prefix = f"AWS {service} {operation} at {self.where}"
        if isinstance(error, botocore.exceptions.ClientError):
            details = error.response.get("Error", {})
            code = str(details.get("Code") or "")
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = _one_line(details.get("Message") or "", secret)
            said = f"{code or f'HTTP {status}'}" + (f": {message}" if message else "")
            if code in CREDENTIAL_ERROR_CODES or (status == 403 and not code):
                key_id = self.credentials.get("AWS_ACCESS_KEY_ID", "")
                whose = f"access key …{key_id[-4:]}" if len(key_id) > 8 else "the credentials"
                return AwsCredentialsRefused(f"{prefix}: {whose} refused ({said})")
            if code in UNAVAILABLE_ERROR_CODES or status >= 500 or status == 429:
                return AwsUnavailable(f"{prefix}: unavailable ({said})")
            if code in ("NoSuchHostedZone", "HostedZoneNotFound"):
                return DnsZoneMissing(f"{prefix}: hosted zone not found ({said})")
            return AwsRequestRejected(f"{prefix}: {said}")
        if isinstance(error, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
            return AwsCredentialsRefused(f"{prefix}: no usable credentials (set AWS_ACCESS_KEY_ID and "
                                         "AWS_SECRET_ACCESS_KEY in the plan's aws.credentials_file)")
        if isinstance(error, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError,
                              botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError,
                              botocore.exceptions.ConnectionClosedError)):
            return AwsUnavailable(f"{prefix}: cannot reach the endpoint ({type(error).__name__})")
        if isinstance(error, botocore.exceptions.ParamValidationError):
            return AwsRequestRejected(f"{prefix}: {_one_line(str(error), secret)}")
        return error

    # Credentials

    def credentials_accepted(self) -> CallerIdentity:
        """Who the credentials are (STS GetCallerIdentity); AwsCredentialsRefused when AWS refuses them."""
        answer = self.call("sts", "get_caller_identity")
        return CallerIdentity(account=str(answer.get("Account", "")), arn=str(answer.get("Arn", "")),
                              user_id=str(answer.get("UserId", "")))

    # Route 53

    def hosted_zone_id(self, zone: str) -> str:
        """The id of the hosted zone named zone (cached); a zone given as /hostedzone/ID is taken as is."""
        if zone.startswith("/hostedzone/"):
            return zone
        wanted = _normalised_name(zone)
        with self._lock:
            if wanted in self._zone_ids:
                return self._zone_ids[wanted]
        answer = self.call("route53", "list_hosted_zones_by_name", DNSName=wanted, MaxItems="10")
        matches = [str(hosted["Id"]) for hosted in answer.get("HostedZones", [])
                   if _normalised_name(hosted["Name"]) == wanted]
        if not matches:
            raise DnsZoneMissing(f"AWS route53 at {self.where}: no hosted zone named {wanted}")
        if len(matches) > 1:
            raise DnsZoneMissing(f"AWS route53 at {self.where}: {len(matches)} hosted zones are named {wanted} "
                                 f"({', '.join(matches)}); name the zone by its id")
        with self._lock:
            self._zone_ids[wanted] = matches[0]
        return matches[0]

    def record_value(self, zone: str, record: str, record_type: str = "A") -> RecordSet:
        """The record's values and TTL as Route 53 holds them (an alias reads as its target's DNS name)."""
        wanted = _normalised_name(record)
        answer = self.call("route53", "list_resource_record_sets", HostedZoneId=self.hosted_zone_id(zone),
                           StartRecordName=wanted, StartRecordType=record_type, MaxItems="1")
        for record_set in answer.get("ResourceRecordSets", []):
            if _normalised_name(record_set["Name"]) == wanted and record_set["Type"] == record_type:
                if "AliasTarget" in record_set:
                    return RecordSet((_normalised_name(record_set["AliasTarget"]["DNSName"]),), None)
                values = tuple(str(item["Value"]) for item in record_set.get("ResourceRecords", []))
                return RecordSet(values, int(record_set["TTL"]) if "TTL" in record_set else None)
        return RecordSet((), None)

    def upsert_record(self, zone: str, record: str, value: str, ttl: int, record_type: str = "A",
                      comment: str = "lifeline") -> str:
        """UPSERT the record to one value; returns the change id to wait on."""
        answer = self.call(
            "route53", "change_resource_record_sets", HostedZoneId=self.hosted_zone_id(zone),
            ChangeBatch={"Comment": comment[:256], "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
                "Name": _normalised_name(record), "Type": record_type, "TTL": ttl,
                "ResourceRecords": [{"Value": value}]}}]},
        )
        return str(answer["ChangeInfo"]["Id"])

    def wait_in_sync(self, change_id: str, timeout: float = 120.0, poll: float = 1.0) -> float:
        """boto3's own waiter (GetChange until INSYNC), asking every `poll` s for at most `timeout` s and
        never beyond the step's time limit; returns the seconds waited."""
        import botocore.exceptions

        started = time.monotonic()
        timeout = within_step(timeout) or timeout
        delay = max(poll, 0.05)
        attempts = max(0, math.floor(timeout / delay + 1e-9)) + 1  # the first at once, then one every `delay`
        try:
            waiter = self.client("route53").get_waiter("resource_record_sets_changed")
            waiter.wait(Id=change_id, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
        except botocore.exceptions.WaiterError as error:
            answer = error.last_response or {}
            if "Error" in answer:  # AWS refused the GetChange itself
                refused = botocore.exceptions.ClientError(answer, "GetChange")  # type: ignore[arg-type]
                raise self._translate(refused, "route53", "get_change") from None
            status = answer.get("ChangeInfo", {}).get("Status") or "not INSYNC"
            raise DnsChangeNotInSync(f"AWS route53 at {self.where}: change {change_id} still {status} "
                                     f"after {timeout:g} s") from None
        except Exception as error:  # noqa: BLE001 - unreachable endpoint, no credentials...: translated
            raise self._translate(error, "route53", "get_change") from None
        return time.monotonic() - started

    def switch_record(self, zone: str, record: str, value: str, ttl: int, *, timeout: float = 120.0,
                      poll: float = 1.0, record_type: str = "A", comment: str = "lifeline") -> RecordSwitch:
        """Make the record hold exactly value (idempotent): UPSERT, wait until INSYNC, read it back."""
        started = time.monotonic()
        if self.record_value(zone, record, record_type) == RecordSet((value,), ttl):
            return RecordSwitch(zone, record, value, False, None, time.monotonic() - started)
        change_id = self.upsert_record(zone, record, value, ttl, record_type, comment)
        self.wait_in_sync(change_id, timeout=max(0.0, timeout - (time.monotonic() - started)), poll=poll)
        found = self.record_value(zone, record, record_type)
        if found.values != (value,):
            raise DnsRecordMismatch(f"AWS route53 at {self.where}: {record} reads {', '.join(found.values) or 'nothing'} "
                                    f"after change {change_id} set it to {value}")
        return RecordSwitch(zone, record, value, True, change_id, time.monotonic() - started)

    # SNS

    def publish_sms(self, phone_number: str, message: str, *, sender_id: str | None = None) -> str:
        """Send one transactional SMS; returns the message id."""
        if not PHONE_NUMBER.match(phone_number):
            raise AwsRequestRejected(f"AWS sns publish: {phone_number!r} is not an E.164 phone number (+8613800000000)")
        attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
        if sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": sender_id}
        answer = self.call("sns", "publish", PhoneNumber=phone_number, Message=message, MessageAttributes=attributes)
        return str(answer["MessageId"])

    # S3

    def put_object(self, bucket: str, key: str, body: bytes, content_type: str, cache_seconds: int = 30) -> str:
        """Write one object (a status page's file); returns its ETag. Readers get it fresh within `cache_seconds`."""
        answer = self.call("s3", "put_object", Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                           CacheControl=f"public, max-age={cache_seconds}")
        return str(answer.get("ETag", "")).strip('"')

    def object_url(self, bucket: str, key: str) -> str:
        """The object's path-style URL at this endpoint (AWS's own regional one when there is none)."""
        base = self.endpoint_url or f"https://s3.{self.region}.amazonaws.com"
        return f"{base.rstrip('/')}/{bucket}/{key}"
