"""The lab: real sshd, PostgreSQL, moto, SMTP, services and call generator."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import boto3
import paramiko
import psycopg
import pytest
from botocore.exceptions import ClientError
from lifeline.infra.lab import (
    LabUsageError,
    components,
    down,
    fault,
    heal,
    kamailio,
    load_faults,
    open_lab,
    postgres,
    power,
    site_files,
    status,
    up,
)
from lifeline.infra.lab import aws as lab_aws
from lifeline.infra.lab import smtp as lab_smtp
from lifeline.infra.lab.processes import boot_clock, is_alive, port_open, run, started_before, wait_until
from lifeline.infra.lab.smtp import received_messages
from lifeline.infra.lab.state import COMPONENT_SIDES, site_components
from lifeline.tasks.adapters.sip import SipEndpoint, place_call

from tests.lab_fixtures import Lab, new_lab_home

pytestmark = pytest.mark.lab

QUIET = {"log": lambda message: None}


def ssh_client(lab_dir: Path, port: int, known_hosts: Path | None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if known_hosts is not None:
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    context = open_lab(lab_dir.parent)
    client.connect("127.0.0.1", port=port, username=context.state.user, key_filename=str(context.paths.client_key),
                   passphrase=context.paths.client_key_passphrase_file.read_text().strip(), sock=sock,
                   look_for_keys=False, allow_agent=False, timeout=5)
    return client


def all_pids(home: Path) -> dict[str, list[int]]:
    context = open_lab(home)
    return {name: components.processes(context, name) for name in COMPONENT_SIDES}


def assert_nothing_left(home: Path, pids: dict[str, list[int]]) -> None:
    context = open_lab(home)
    alive = [pid for group in pids.values() for pid in group if is_alive(pid)]
    assert not alive, f"processes left after down: {alive}"
    ports = [name for name in COMPONENT_SIDES
             if (port := components.port(context, name)) and port_open("127.0.0.1", port)]
    assert not ports, f"ports still listening after down: {ports}"


def test_up_twice_down_twice_repair_and_a_replaced_primary_stays_down() -> None:
    """Its own home: cold up, idempotent up, down, warm up, repair of killed components,
    then a failover that heal, power on and up must not undo; down leaves nothing each time."""
    home = new_lab_home("lifeline-lab-own-")
    try:
        started = time.monotonic()
        plan = up(home, free_ports=True, **QUIET)
        cold = time.monotonic() - started
        assert plan == home / "lab" / "plan.yaml" and plan.is_file()
        first = all_pids(home)
        assert all(first.values()), f"components not running: {[n for n, p in first.items() if not p]}"
        up(home, **QUIET)
        assert {name: pids[0] for name, pids in all_pids(home).items()} == \
            {name: pids[0] for name, pids in first.items()}, "a second up restarted something"

        started = time.monotonic()
        stopped = down(home, **QUIET)
        first_down = time.monotonic() - started
        assert set(stopped) >= {pids[0] for pids in first.values()}
        assert_nothing_left(home, first)

        started = time.monotonic()
        up(home, **QUIET)
        warm = time.monotonic() - started
        assert status(home).normal or wait_until(lambda: status(home).normal, 15, 0.3)

        # a lab with killed components is repaired by the next up
        context = open_lab(home)
        victims = ["service-main", "postgres-dr", "sshd-dr", "callgen"]
        for name in victims:
            os.kill(components.pid(context, name), signal.SIGKILL)
        assert wait_until(lambda: all(components.pid(context, name) is None for name in victims), 5)
        up(home, **QUIET)
        assert wait_until(lambda: status(home).normal, 15, 0.3), status(home).not_normal_because

        # failover: main's database dies, dr is promoted; nothing may start main as a primary again
        fault("main-db-down", home)
        run([postgres.tool("pg_ctl"), "-D", str(context.paths.data_dir("dr")), "promote", "-w"],
                     user=context.user)
        notes = heal(home, **QUIET)
        assert any("promoted" in note for note in notes), notes
        power("main", "off", home)
        power_notes = power("main", "on", home)
        assert any("left stopped" in note for note in power_notes), power_notes
        up(home, **QUIET)
        assert postgres.pid(context, "main") is None
        roles = status(home).databases
        assert roles["main"] == "down" and roles["dr"] == "primary"

        everything = all_pids(home)
        started = time.monotonic()
        down(home, **QUIET)
        second_down = time.monotonic() - started
        assert_nothing_left(home, everything)
        print(f"\nlab timings: cold up {cold:.1f}s, warm up {warm:.1f}s, "
              f"down {first_down:.1f}s / {second_down:.1f}s")
        assert cold < 60 and first_down < 10 and second_down < 10
    finally:
        down(home, purge=True, **QUIET)
        home.rmdir()


def test_every_component_answers(lab: Lab) -> None:
    current = lab.wait_normal()
    assert all(component.up for component in current.components.values())
    assert current.dns.record == "crm.callcenter.lab" and current.dns.points_at == "main"
    assert current.databases == {"main": "primary", "dr": "standby", "calllog": "primary"}
    assert current.services["main"].http_status == 200
    assert current.services["dr"].http_status == 503, "a read-only standby must not be healthy"
    context = lab.context
    for site in ("main", "dr"):
        client = ssh_client(lab.lab_dir, context.state.ports.for_component(f"sshd-{site}"), context.paths.known_hosts)
        _, stdout, _ = client.exec_command("id -un && echo $0")
        assert stdout.read().decode().split() == [context.state.user, "sh"]
        client.close()
    assert lab.query("main", "SELECT count(*) FROM customers")[0][0] == 2000
    assert lab.query("main", "SELECT count(*) FROM agents")[0][0] == 50
    assert lab.query("main", "SELECT count(*) FROM calls")[0][0] >= 10_000
    s3 = lab_aws.client(context.paths, context.state, "s3")
    assert s3.head_bucket(Bucket="cc-backups")["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_smtp_sink_and_sms_are_kept(lab: Lab) -> None:
    context = lab.context
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "lifeline@lab", "oncall@lab", "drill ✓ passed"
    message.set_content("RTO 42 s")
    with smtplib.SMTP("127.0.0.1", context.state.ports.smtp, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPSenderRefused):  # the sink wants its login, like a real relay
            smtp.send_message(message)
        smtp.login(*lab_smtp.login(context.paths))
        smtp.send_message(message)
    assert any(received["Subject"] == "drill ✓ passed" for received in received_messages(context.paths))
    sns = lab_aws.client(context.paths, context.state, "sns")
    sns.publish(PhoneNumber="+8613800000001", Message="failover done")
    assert {"phone_number": "+8613800000001", "message": "failover done"}.items() <= \
        lab_aws.sent_sms(context.paths)[-1].items()


def test_dr_streams_from_main(lab: Lab) -> None:
    rows = lab.query("main", "SELECT application_name, state FROM pg_stat_replication", database="postgres")
    assert ("dr", "streaming") in rows
    marker = f"replication probe {time.time_ns()}"
    lab.query("main", "CREATE TABLE IF NOT EXISTS replication_probe (note text)")
    lab.query("main", "INSERT INTO replication_probe VALUES (%s)", parameters=(marker,))
    try:
        assert wait_until(lambda: bool(lab.query("dr", "SELECT 1 FROM replication_probe WHERE note = %s",
                                                 parameters=(marker,))), 5, 0.05)
    finally:
        lab.query("main", "DROP TABLE replication_probe")


def test_calls_go_where_the_sbc_routes_them_and_are_logged(lab: Lab) -> None:
    context = lab.context

    def answered_at_main() -> list[int]:
        rows = lab.query("calllog", "SELECT call_id FROM calls_log WHERE site = 'main' AND outcome = 'answered' "
                                    "ORDER BY id DESC LIMIT 20", database="calls")
        return [row[0] for row in rows]

    assert wait_until(lambda: len(answered_at_main()) == 20, 10, 0.2), (
        lab.query("calllog", "SELECT site, outcome, count(*), max(detail) FROM calls_log GROUP BY 1, 2",
                  database="calls"),
        context.paths.log_file("callgen").read_text()[-2000:])
    ids = answered_at_main()
    assert lab.query("main", "SELECT count(*) FROM calls WHERE id = ANY(%s)", parameters=(ids,))[0][0] == 20

    def logged_since(site: str, since: float, outcome: str) -> bool:
        return bool(lab.query("calllog", "SELECT 1 FROM calls_log WHERE site = %s AND outcome = %s "
                                         "AND placed_at > to_timestamp(%s) LIMIT 1",
                              database="calls", parameters=(site, outcome, since)))

    flipped = time.time()
    kamailio.set_routing(context, "dr", "a")
    kamailio.set_routing(context, "main", "i")
    try:  # the carrier routes the calls to dr at once; dr's CRM is a read-only standby, so its PBX refuses them
        assert kamailio.routing(context) == {"main": "inactive", "dr": "active"}
        assert wait_until(lambda: logged_since("dr", flipped, "failed"), 5, 0.2)
        assert lab.status().not_normal_because  # routing away from main is not the lab's normal state
    finally:
        kamailio.set_routing(context, "main", "a")
        kamailio.set_routing(context, "dr", "i")
    back = time.time()
    assert wait_until(lambda: logged_since("main", back, "answered"), 5, 0.2)


@pytest.mark.parametrize("name", ["main-db-down", "main-service-down", "main-ssh-down", "recordings-lost"])
def test_fault_does_what_it_says_and_heal_undoes_it(lab: Lab, name: str) -> None:
    context = lab.context
    watched = {"main-db-down": "postgres-main", "main-service-down": "service-main",
               "main-ssh-down": "sshd-main"}.get(name)
    before = components.processes(context, watched) if watched else []
    at, _ = fault(name, lab.home)
    try:
        assert load_faults(context.paths)[name] == at
        assert not status(lab.home).normal
        if watched:
            assert not any(is_alive(pid) for pid in before), f"{watched} is not really gone"
            assert not port_open("127.0.0.1", components.port(context, watched))
        if name == "main-db-down":
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(**postgres.connection_parameters(context, "main"))
            assert lab.query("dr", "SELECT pg_is_in_recovery()")[0][0] is True
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                lab.query("dr", "INSERT INTO health (site, beat, at) VALUES ('probe', 1, now())")
        if name == "recordings-lost":
            assert not context.paths.recordings_dir("main").exists()
        lab.restore_normal()
        assert load_faults(context.paths) == {}
        if name == "recordings-lost":  # heal never restores data
            assert not context.paths.recordings_dir("main").exists()
    finally:
        if name == "recordings-lost":
            site_files.seed_recordings(context)
        lab.restore_normal()


def test_netns_faults_are_refused_in_loopback_mode(lab: Lab) -> None:
    with pytest.raises(LabUsageError):
        fault("site-link-cut", lab.home)
    with pytest.raises(LabUsageError):
        fault("no-such-fault", lab.home)


@pytest.mark.parametrize("site", ["main", "dr"])
def test_power_off_stops_every_process_of_a_site(lab: Lab, site: str) -> None:
    context = lab.context
    pids = [pid for name in site_components(site) for pid in components.processes(context, name)]
    assert len(pids) >= 5  # sshd, postmaster and its helpers, the service
    power(site, "off", lab.home)
    try:
        assert not [pid for pid in pids if is_alive(pid)]
        for name in site_components(site):
            assert not port_open("127.0.0.1", components.port(context, name)), name
        assert site in open_lab(lab.home).state.powered_off
    finally:
        power(site, "on", lab.home)
    lab.wait_normal()


def test_wrong_aws_credentials_are_refused(lab: Lab) -> None:
    context = lab.context
    key_id, _ = lab_aws.credentials(context.paths)
    for access_key in (("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), (key_id, "wrong")):
        for service, call in (("s3", "list_buckets"), ("route53", "list_hosted_zones"), ("sns", "list_topics")):
            client = lab_aws.client(context.paths, context.state, service, access_key=access_key)
            with pytest.raises(ClientError) as refused:
                getattr(client, call)()
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    default = boto3.client("s3", endpoint_url=lab_aws.endpoint_url(context.state), region_name="us-east-1",
                           aws_access_key_id="anonymous", aws_secret_access_key="anonymous")
    with pytest.raises(ClientError):
        default.list_objects_v2(Bucket="cc-backups")
    assert oct(context.paths.aws_environment_file.stat().st_mode & 0o777) == "0o600"


def test_paramiko_refuses_a_host_not_in_known_hosts(lab: Lab, tmp_path: Path) -> None:
    context = lab.context
    main_port = context.state.ports.ssh_main
    with pytest.raises(paramiko.SSHException):
        ssh_client(lab.lab_dir, main_port, None)
    impostor = tmp_path / "known_hosts"  # dr's key filed under main's address: a changed host key
    dr_key = context.paths.host_key("dr").with_suffix(".pub").read_text().split()[:2]
    impostor.write_text(f"[127.0.0.1]:{main_port} {' '.join(dr_key)}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_client(lab.lab_dir, main_port, impostor)
    ssh_client(lab.lab_dir, main_port, context.paths.known_hosts).close()


def test_rendered_plan_validates_and_names_the_lab(lab: Lab) -> None:
    from lifeline.configs.loading import load_plan

    plan = load_plan(lab.plan).plan
    context = lab.context
    assert plan.repositories["offsite"].url == f"s3:http://127.0.0.1:{context.state.ports.moto}/cc-backups"
    assert plan.datasets["recordings"].paths == [context.paths.recordings_dir("main")]
    assert plan.datasets["crm-db"].postgres.dsn.endswith(f":{context.state.ports.postgres_main}/crm")
    assert plan.hosts["dr"].port == context.state.ports.ssh_dr
    assert plan.dns.values == {"main": "127.0.0.1", "dr": "127.0.0.2"}
    if "fencing" in type(plan).model_fields:  # the recovery keys, once the schema has them
        assert plan.fencing["main"].command[-3:] == ["power", "main", "off"]
        assert plan.databases["crm"].instances["dr"].data_dir == context.paths.data_dir("dr")
        assert plan.services["crm-main"].checks[0].url.endswith(f":{context.state.ports.service_main}/health")
    for secret in (context.paths.restic_password_file, context.paths.postgres_passfile):
        assert secret.stat().st_mode & 0o077 == 0


def test_cli_prints_only_results_on_stdout(lab: Lab) -> None:
    command = [sys.executable, "-m", "lifeline.infra.lab", "--home", str(lab.home)]
    upped = subprocess.run([*command, "up"], capture_output=True, text=True, timeout=60)
    assert upped.returncode == 0, upped.stderr
    assert upped.stdout == f"{lab.plan}\n"
    shown = subprocess.run([*command, "status", "--json"], capture_output=True, text=True, timeout=60)
    report = json.loads(shown.stdout)
    assert report["dns"] == {"record": "crm.callcenter.lab", "value": "127.0.0.1", "points_at": "main"}
    assert set(report["components"]) == set(COMPONENT_SIDES)
    refused = subprocess.run([*command, "fault", "no-such-fault"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stdout == "" and len(refused.stderr.splitlines()) == 1
    missing = subprocess.run([sys.executable, "-m", "lifeline.infra.lab", "--home", str(lab.home / "nowhere"),
                              "status"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1


def listening_sockets() -> set[str]:
    """Local address:port of every TCP socket listening in this (the root) network namespace."""
    listed = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in listed.splitlines() if line.strip()}


@pytest.mark.skipif(os.geteuid() != 0, reason="--netns needs root")
def test_netns_lab_reaches_sites_from_ops_and_cuts_links() -> None:
    from lifeline.infra.lab import netns

    if netns.OWNER_FILE.exists() or any(netns.namespace_exists(name) for name in netns.NAMESPACES):
        pytest.skip("the namespaces main/dr/ops are in use (another --netns lab runs on this machine)")
    home = new_lab_home("lifeline-lab-netns-")
    already_listening = listening_sockets()  # a demo's lab may hold the default ports the netns lab uses inside
    try:
        up(home, netns=True, **QUIET)
        assert wait_until(lambda: status(home).normal, 20, 0.3), status(home).not_normal_because
        context = open_lab(home)
        opened_outside = listening_sockets() - already_listening
        assert not [address for address in opened_outside if address.startswith("10.77.")], opened_outside
        lab_ports = {str(port) for port in context.state.ports.model_dump().values()}
        assert not [address for address in opened_outside if address.rsplit(":", 1)[1] in lab_ports], opened_outside

        validate = [sys.executable, "-m", "lifeline.flows.cli", "validate", "--plan", str(context.paths.plan_file)]
        outside = subprocess.run(validate, capture_output=True, text=True, timeout=60, env={**os.environ, "LIFELINE_HOME": str(home)})
        assert outside.returncode == 2 and len(outside.stderr.splitlines()) == 1, outside.stderr
        assert "ip netns exec ops" in outside.stderr
        inside = subprocess.run(["ip", "netns", "exec", "ops", *validate], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "LIFELINE_HOME": str(home)})
        assert inside.returncode == 0, inside.stderr

        def ssh_main_from_ops() -> str:
            client = paramiko.SSHClient()
            client.load_host_keys(str(context.paths.known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(context.address("main"), port=context.state.ports.ssh_main, username=context.state.user,
                           key_filename=str(context.paths.client_key), look_for_keys=False, allow_agent=False,
                           passphrase=context.paths.client_key_passphrase_file.read_text().strip(),
                           timeout=5)
            try:
                return str(client.exec_command("id -un")[1].read().decode().strip())
            finally:
                client.close()

        assert context.in_ops(ssh_main_from_ops) == context.state.user
        sbc = SipEndpoint(context.address("ops"), context.state.ports.sip)
        fault("replication-cut", home)
        assert netns.link_states() == {"main-ops": True, "dr-ops": True, "main-dr": False, "main-trunk": True,
                                       "dr-trunk": True}
        assert context.in_ops(ssh_main_from_ops) == context.state.user  # ops still reaches main
        heal(home, **QUIET)
        answered = context.in_ops(lambda: place_call(sbc, "4008001234", "+8613800000001", answer_timeout=3))
        assert answered.outcome == "answered" and answered.headers["x-lifeline-site"] == "main", answered.summary
        fault("trunk-cut", home)  # the carrier's trunk to main only: calls to main fail, main's SSH still answers
        assert netns.link_states()["main-trunk"] is False and netns.link_states()["main-ops"] is True
        cut = context.in_ops(lambda: place_call(sbc, "4008001234", "+8613800000001", answer_timeout=3))
        assert cut.outcome != "answered" and context.in_ops(ssh_main_from_ops) == context.state.user
        heal(home, **QUIET)
        fault("site-link-cut", home)
        assert status(home).services["main"].http_status is None  # unreachable from ops
        heal(home, **QUIET)
        assert wait_until(lambda: status(home).normal, 20, 0.3), status(home).not_normal_because
        down(home, **QUIET)
        assert not any(netns.namespace_exists(name) for name in netns.NAMESPACES)
    finally:
        down(home, purge=True, **QUIET)
        home.rmdir()


def test_a_pid_handed_out_again_after_lab_down_stopped_it_is_not_taken_for_a_survivor() -> None:
    """`lab down` counts as left behind only processes older than the down itself: pids come round again."""
    before = boot_clock()
    time.sleep(0.05)
    newcomer = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.05)
        assert not started_before(newcomer.pid, before)  # started after: somebody else's, not a survivor
        assert started_before(newcomer.pid, boot_clock())
        assert started_before(os.getpid(), before)
    finally:
        newcomer.kill()
        newcomer.wait()
    assert not started_before(newcomer.pid, boot_clock())  # gone
