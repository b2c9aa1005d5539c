"""What the lab gives pgBackRest, checked without it: the S3 bucket `cc-pitr` over TLS (`s3-tls`, nginx in front of
moto, a certificate for `localhost` from the lab's CA) and each cluster's private Unix socket folder, where the lab
user logs in by peer authentication."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import SSLError
from cryptography import x509
from lifeline.configs.loading import load_plan
from lifeline.infra.lab import aws as lab_aws
from lifeline.infra.lab import components, heal, postgres, up
from lifeline.infra.lab.ports import Ports
from lifeline.infra.lab.processes import run, wait_until

from tests.lab_fixtures import Lab


def pitr_bucket_client(lab: Lab, verify: str | bool) -> Any:
    context = lab.context
    key_id, secret_key = lab_aws.credentials(context.paths)
    return boto3.client("s3", endpoint_url=f"https://localhost:{context.state.ports.s3_tls}",
                        region_name=lab_aws.REGION, aws_access_key_id=key_id, aws_secret_access_key=secret_key,
                        verify=verify, config=Config(s3={"addressing_style": "path"},
                                                     retries={"max_attempts": 1}))


@pytest.mark.lab
def test_the_pitr_bucket_answers_over_tls_that_the_labs_ca_verifies(lab: Lab) -> None:
    context = lab.context
    assert lab.status().components["s3-tls"].up
    s3 = pitr_bucket_client(lab, str(context.paths.tls_ca_file))
    key = f"probe/{time.time_ns()}"
    s3.put_object(Bucket=lab_aws.PITR_BUCKET, Key=key, Body=b"through nginx")
    assert s3.get_object(Bucket=lab_aws.PITR_BUCKET, Key=key)["Body"].read() == b"through nginx"
    s3.delete_object(Bucket=lab_aws.PITR_BUCKET, Key=key)
    with pytest.raises(SSLError):  # the public CAs do not vouch for the lab's certificate
        pitr_bucket_client(lab, True).head_bucket(Bucket=lab_aws.PITR_BUCKET)
    served = x509.load_pem_x509_certificates((context.paths.tls_dir / "server.pem").read_bytes())[0]
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]  # a DNS name: pgBackRest refuses IP names
    server_key = context.paths.tls_dir / "server.key"
    assert server_key.stat().st_mode & 0o777 == 0o600 and server_key.stat().st_uid == context.user.uid



@pytest.mark.lab
def test_heal_starts_a_killed_s3_tls_again(lab: Lab) -> None:
    context = lab.context
    killed = components.pid(context, "s3-tls")
    assert killed is not None
    os.kill(killed, signal.SIGKILL)  # one nginx process: nothing of it keeps the port
    assert wait_until(lambda: not components.listening(context, "s3-tls"), 5)
    assert "s3-tls: started" in heal(lab.home, log=lambda message: None)
    assert components.is_up(context, "s3-tls") and components.pid(context, "s3-tls") != killed

@pytest.mark.lab
@pytest.mark.parametrize("site", ["main", "dr"])
def test_the_lab_user_logs_in_through_the_clusters_socket_folder_by_peer(lab: Lab, site: str) -> None:
    context = lab.context
    sockets = context.paths.socket_dir(site)
    assert sockets.stat().st_mode & 0o777 == 0o700 and sockets.stat().st_uid == context.user.uid
    completed = run([postgres.tool("psql"), "-X", "-w", "-A", "-t", "-F", " ", "-h", str(sockets),
                     "-p", str(postgres.port(context, site)), "-U", context.user.name, "-d", postgres.CRM_DATABASE,
                     "-c", "SELECT current_user, inet_server_addr() IS NULL, current_setting('archive_mode'), "
                           "current_setting('track_commit_timestamp')"],
                    user=context.user, timeout=20)  # no passfile in the environment: peer or nothing
    assert completed.stdout.split() == [context.user.name, "t", "on", "on"]


@pytest.mark.lab
def test_the_plan_points_pgbackrest_at_the_labs_folders_socket_and_bucket(lab: Lab) -> None:
    context = lab.context
    database = load_plan(lab.plan).plan.databases["crm"]
    assert {site: instance.socket_dir for site, instance in database.instances.items()} == \
        {site: context.paths.socket_dir(site) for site in ("main", "dr")}
    pitr = database.pitr
    assert pitr is not None and pitr.stanza == "crm" and pitr.dataset == "crm-db"
    assert pitr.staging_port == context.state.ports.postgres_staging
    folder, bucket = pitr.repositories
    assert folder.path == context.paths.pgbackrest_repository_dir
    assert bucket.s3 is not None and (bucket.s3.bucket, bucket.s3.endpoint, bucket.s3.port) == \
        (lab_aws.PITR_BUCKET, "localhost", context.state.ports.s3_tls)
    assert bucket.s3.ca_file == context.paths.tls_ca_file
    for owned in (pitr.work_dir, context.paths.pgbackrest_repository_dir):
        assert owned.stat().st_uid == context.user.uid


@pytest.mark.lab
def test_up_restarts_a_cluster_still_running_without_the_pitr_settings(lab: Lab) -> None:
    context = lab.context
    settings = context.paths.data_dir("main") / "lab.conf"
    older = [line for line in postgres.lab_settings(context, "main").splitlines()
             if not line.startswith(("archive_mode", "track_commit_timestamp", "unix_socket_directories"))]
    settings.write_text("\n".join([*older, "unix_socket_directories = ''", ""]), encoding="utf-8")
    postgres.stop(context, "main")
    postgres.start(context, "main")
    assert lab.query("main", "SHOW archive_mode") == [("off",)]
    said: list[str] = []
    up(lab.home, log=said.append)
    assert "postgres-main: restarted to apply archive_mode, track_commit_timestamp, unix_socket_directories" in said
    assert lab.query("main", "SELECT current_setting('archive_mode'), current_setting('track_commit_timestamp')") \
        == [("on", "on")]
    lab.wait_normal()

def test_a_state_json_from_before_pitr_gets_the_new_ports() -> None:
    older = {name: port for name, port in Ports().model_dump().items() if name not in ("s3_tls", "postgres_staging")}
    ports = Ports.model_validate(json.loads(json.dumps(older)))
    assert (ports.s3_tls, ports.postgres_staging) == (Ports().s3_tls, Ports().postgres_staging)
    assert ports.intake == older["intake"]
