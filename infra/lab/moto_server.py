"""moto's server for S3, Route 53 and SNS, with IAM authentication switched on.

Runs as ``python -m lifeline.infra.lab.moto_server --lab-dir DIR`` (on the ops side). It starts
with ``INITIAL_NO_AUTH_ACTION_COUNT=3``: moto lets exactly three requests through
unauthenticated, and this process spends them itself on CreateUser, PutUserPolicy and
CreateAccessKey. From then on every request must be signed with that key; anything else gets an
auth error. The key is written to ``secrets/aws.env`` and ``secrets/aws-credentials`` (0600),
then the bucket, the hosted zone and its record (naming main) are created, and ``run/moto.ready``
gets this process's pid. moto keeps everything in memory: if this process dies, the next
``lab up`` starts a fresh one (new key, empty bucket, record naming main).

Three patches to moto 5.2, all in this process only:
- Route 53 GET requests (ListHostedZones, ListResourceRecordSets...) fail IAM signature checks:
  moto re-signs them with the request headers as a form body. An empty GET/HEAD/DELETE body is
  signed as empty, which is what the client signed.
- Every SMS published through SNS is also appended as one JSON line to ``ops/sms.jsonl``.
- An unsigned GET or HEAD of an object is allowed when its bucket's policy lets anyone (`Principal: "*"`)
  `s3:GetObject`, as S3 does: the public status page is read over plain HTTP. moto would fail such a request.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .aws import BUCKET, IAM_USER, PITR_BUCKET, REGION, STATUS_BUCKET, ZONE, client, endpoint_url, set_record
from .state import LabPaths, LabState, load_state, now_iso, write_secret

FREE_BOOTSTRAP_REQUESTS = 3  # CreateUser, PutUserPolicy, CreateAccessKey
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def _sign_empty_bodies_as_empty() -> None:
    from moto.iam.access_control import IAMRequestBase

    original = IAMRequestBase._create_aws_request

    def create_aws_request(self: Any) -> Any:
        if not self._body and self._method in ("GET", "HEAD", "DELETE"):
            self._data = {}
        return original(self)

    IAMRequestBase._create_aws_request = create_aws_request  # type: ignore[method-assign]


def _public_reads_allowed() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin

    original = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action

    def authorize(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        if (key_name and bucket_name and self.method in ("GET", "HEAD") and "Authorization" not in self.headers
                and "X-Amz-Signature" not in self.uri and _anyone_may_read(self.current_account, bucket_name)):
            return None
        return original(self, bucket_name, key_name)

    ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = authorize  # type: ignore[method-assign]


def _anyone_may_read(account_id: str, bucket_name: str) -> bool:
    from moto.s3.models import s3_backends

    try:
        policy = json.loads(s3_backends[account_id]["aws"].get_bucket(bucket_name).policy or b"{}")
    except Exception:  # noqa: BLE001 - no such bucket, no policy: not public
        return False
    for statement in policy.get("Statement", []):
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") == "Allow" and statement.get("Principal") in ("*", {"AWS": "*"}) \
                and ("s3:GetObject" in actions or "s3:*" in actions):
            return True
    return False


def _record_sms_to(sms_file: Path) -> None:
    """Wrap SNS publish so SMS land in a file tests and flows can read."""
    from moto.sns.models import SNSBackend

    original = SNSBackend.publish
    lock = threading.Lock()

    def publish(self: Any, *args: Any, **kwargs: Any) -> Any:
        message_id = original(self, *args, **kwargs)
        phone_number = kwargs.get("phone_number")
        if phone_number:
            message = args[0] if args else kwargs.get("message")
            line = json.dumps({"at": now_iso(), "phone_number": phone_number,
                               "message": message, "message_id": message_id}, ensure_ascii=False)
            with lock, open(sms_file, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        return message_id

    SNSBackend.publish = publish  # type: ignore[method-assign]


def _bootstrap(paths: LabPaths, state: LabState) -> None:
    import boto3

    anonymous = ("bootstrap", "bootstrap")  # accepted only for the first FREE_BOOTSTRAP_REQUESTS requests
    iam = boto3.client("iam", endpoint_url=endpoint_url(state), region_name=REGION,
                       aws_access_key_id=anonymous[0], aws_secret_access_key=anonymous[1])
    iam.create_user(UserName=IAM_USER)
    iam.put_user_policy(UserName=IAM_USER, PolicyName="lab-admin", PolicyDocument=json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(UserName=IAM_USER)["AccessKey"]
    write_secret(paths.aws_environment_file,
                 f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}\nAWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}\n"
                 f"AWS_DEFAULT_REGION={REGION}\n")
    write_secret(paths.aws_credentials_file,
                 f"[default]\naws_access_key_id = {key['AccessKeyId']}\n"
                 f"aws_secret_access_key = {key['SecretAccessKey']}\nregion = {REGION}\n")
    signed = (key["AccessKeyId"], key["SecretAccessKey"])
    s3 = client(paths, state, "s3", access_key=signed)
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=STATUS_BUCKET)
    s3.create_bucket(Bucket=PITR_BUCKET)
    s3.put_bucket_policy(Bucket=STATUS_BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{STATUS_BUCKET}/*"}]}))
    route53 = client(paths, state, "route53", access_key=signed)
    zone_id = route53.create_hosted_zone(Name=ZONE, CallerReference=f"lab-{now_iso()}")["HostedZone"]["Id"]
    set_record(route53, zone_id, state.dns_values["main"])


def serve(lab_dir: Path) -> None:
    paths = LabPaths(lab_dir)
    state = load_state(paths)
    if state is None:
        raise SystemExit(f"no lab state in {lab_dir}")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(FREE_BOOTSTRAP_REQUESTS)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    from moto import settings
    from moto.server import ThreadedMotoServer

    settings.INITIAL_NO_AUTH_ACTION_COUNT = FREE_BOOTSTRAP_REQUESTS
    _sign_empty_bodies_as_empty()
    _record_sms_to(paths.sms_file)
    _public_reads_allowed()
    ready_file = paths.run_dir / "moto.ready"
    ready_file.unlink(missing_ok=True)
    server = ThreadedMotoServer(ip_address=state.addresses.ops, port=state.ports.moto, verbose=False)
    server.start()
    _bootstrap(paths, state)
    ready_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
    print(f"moto ready on {endpoint_url(state)}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    os._exit(0)  # everything is in memory: nothing to flush, no reason to wait for the server thread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the lab's moto server (S3, Route 53, SNS, IAM)")
    parser.add_argument("--lab-dir", type=Path, required=True)
    arguments = parser.parse_args(argv)
    serve(arguments.lab_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
