"""Health checks: the models, and every check type healthy and unhealthy against the lab."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from lifeline.configs.checks import Check, HttpCheck, SqlCheck, SshCheck, TcpCheck
from lifeline.configs.loading import load_plan
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.probes import CheckRunner, redact_url
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import probe, probes
from pydantic import TypeAdapter, ValidationError

CHECKS = TypeAdapter(list[Check])


# The models (no lab needed)


def test_checks_are_told_apart_by_type():
    parsed = CHECKS.validate_python([
        {"type": "http", "url": "http://127.0.0.1:8081/health", "expect_text": "ok"},
        {"type": "tcp", "host": "127.0.0.1", "port": 5433},
        {"type": "sql", "dsn": "postgresql://lifeline@127.0.0.1:5433/crm", "query": "select 1", "expect": "1"},
        {"type": "ssh", "host": "dr", "command": ["pg_isready"]},
    ])
    assert [type(check) for check in parsed] == [HttpCheck, TcpCheck, SqlCheck, SshCheck]
    assert (parsed[0].expect_status, parsed[0].timeout_seconds) == (200, 2.0)
    assert (parsed[2].timeout_seconds, parsed[3].expect_exit, parsed[3].timeout_seconds) == (3.0, 0, 5.0)


@pytest.mark.parametrize("document, complaint", [
    ({"type": "http", "url": "http://x/health", "expect_body": "ok"}, "Extra inputs are not permitted"),
    ({"type": "icmp", "host": "x"}, "does not match any of the expected tags"),
    ({"type": "http", "url": "ftp://x/health"}, "http:// or https://"),
    ({"type": "http", "url": "http://user:secret@x/health"}, "must not contain a password"),
    ({"type": "sql", "dsn": "postgresql://lifeline:secret@db/crm"}, "must not contain a password"),
    ({"type": "sql", "dsn": "host=db password=secret"}, "must start with postgresql://"),
    ({"type": "ssh", "host": "dr", "command": "pg_isready -q"}, "valid list"),
    ({"type": "ssh", "host": "dr", "command": []}, "at least 1 item"),
    ({"type": "tcp", "host": "db", "port": 70000}, "less than or equal to 65535"),
])
def test_bad_checks_are_refused(document, complaint):
    with pytest.raises(ValidationError, match=complaint):
        CHECKS.validate_python([document])


def test_a_passfile_is_relative_to_the_plan(tmp_path):
    check = CHECKS.validate_python(
        [{"type": "sql", "dsn": "postgresql://u@h:1/d", "passfile": "secrets/pgpass"}], context={"base_dir": tmp_path}
    )[0]
    assert check.passfile == tmp_path / "secrets" / "pgpass"


def test_urls_are_shown_without_secrets():
    assert redact_url("http://ops:hunter2@svc:8080/health?token=abc&site=dr") == "http://ops:***@svc:8080/health?token=***&site=dr"
    assert redact_url("https://svc/health") == "https://svc/health"


# Against the lab


@pytest.fixture(scope="module")
def lab_plan(lab):
    return load_plan(lab.plan).plan


@pytest.fixture(scope="module")
def hosts(lab_plan) -> dict[str, ssh.SshTarget]:
    return topology.ssh_targets(lab_plan.hosts, connect_timeout=3)


@pytest.fixture(scope="module")
def ports(lab):
    return lab.context.state.ports


@pytest.fixture(scope="module")
def crm(lab_plan) -> dict:
    source = lab_plan.datasets["crm-db"].postgres
    return {"dsn": source.dsn, "passfile": str(source.passfile)}


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield listener.getsockname()[1]
    stop.set()
    acceptor.join()
    for sock in accepted:
        sock.close()
    listener.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one(document: dict, hosts: dict[str, ssh.SshTarget] | None = None):
    with CheckRunner(hosts) as runner:
        return runner.run([probe(CHECKS.validate_python([document])[0])])[0]


@pytest.mark.lab
def test_http_healthy_with_expected_text(ports):
    result = one({"type": "http", "url": f"http://127.0.0.1:{ports.service_main}/health", "expect_text": '"healthy": true'})
    assert result.healthy and result.detail == "200 OK" and result.type == "http"
    assert result.name == f"http 127.0.0.1:{ports.service_main}/health"
    assert 0 < result.latency_ms < 2000


@pytest.mark.lab
def test_http_wrong_status_is_unhealthy_with_the_body(ports):
    result = one({"type": "http", "url": f"http://127.0.0.1:{ports.service_dr}/health", "name": "dr service"})
    assert not result.healthy and result.name == "dr service"
    assert result.detail.startswith("503 Service Unavailable (expected 200): ")
    assert "read-only" in result.detail  # the standby cannot commit its heartbeat


@pytest.mark.lab
def test_http_missing_text_is_unhealthy(ports):
    result = one({"type": "http", "url": f"http://127.0.0.1:{ports.service_main}/health", "expect_text": "banana"})
    assert not result.healthy and result.detail == "200 OK, but the body lacks 'banana'"


def test_http_refused_and_timed_out_are_results(silent_server):
    refused = one({"type": "http", "url": f"http://127.0.0.1:{closed_port()}/health"})
    assert not refused.healthy and refused.detail == "connection refused"
    started = time.monotonic()
    silent = one({"type": "http", "url": f"http://127.0.0.1:{silent_server}/health", "timeout_seconds": 0.3})
    assert not silent.healthy and silent.detail == "timed out after 0.3 s"
    assert time.monotonic() - started < 1.5 and silent.latency_ms >= 300


@pytest.mark.lab
def test_tcp_open_and_closed(ports):
    assert one({"type": "tcp", "host": "127.0.0.1", "port": ports.postgres_main}).healthy
    closed = one({"type": "tcp", "host": "127.0.0.1", "port": closed_port()})
    assert not closed.healthy and closed.detail == "connection refused"


@pytest.mark.lab
def test_sql_expected_answer(crm):
    result = one({"type": "sql", **crm, "query": "select count(*) > 0 from customers", "expect": "true"})
    assert result.healthy, result.detail
    assert result.target == crm["dsn"] and "answered" in result.detail


@pytest.mark.lab
def test_sql_at_the_standby_reads_true_for_in_recovery(lab_plan, crm, ports):
    dr_dsn = crm["dsn"].replace(f":{ports.postgres_main}/", f":{ports.postgres_dr}/")
    assert one({"type": "sql", "dsn": dr_dsn, "passfile": crm["passfile"],
                "query": "select pg_is_in_recovery()", "expect": "true"}).healthy


@pytest.mark.lab
def test_sql_expect_mismatch_is_unhealthy(crm):
    result = one({"type": "sql", **crm, "query": "select 41 + 1", "expect": "43"})
    assert not result.healthy and result.detail == "answered '42' (expected '43')"


@pytest.mark.lab
def test_sql_no_rows_and_slow_query_are_unhealthy(crm):
    empty = one({"type": "sql", **crm, "query": "select 1 where false", "expect": "1"})
    assert not empty.healthy and empty.detail == "no rows (expected '1')"
    slow = one({"type": "sql", **crm, "query": "select pg_sleep(5)", "timeout_seconds": 0.3})
    assert not slow.healthy and slow.detail == "the query ran longer than 0.3 s"


@pytest.mark.lab
def test_sql_refused_server_is_a_result(crm, ports):
    result = one({"type": "sql", "dsn": crm["dsn"].replace(f":{ports.postgres_main}/", f":{closed_port()}/"),
                  "passfile": crm["passfile"]})
    assert not result.healthy and "refused" in result.detail.lower()


@pytest.mark.lab
def test_ssh_exit_status(hosts):
    ok = one({"type": "ssh", "host": "dr", "command": ["test", "-d", "/tmp"]}, hosts=hosts)
    assert ok.healthy and ok.detail == "exit 0"
    assert ok.target == f"dr {hosts['dr'].address}:{hosts['dr'].port}: test -d /tmp"
    failed = one({"type": "ssh", "host": "main", "command": ["sh", "-c", "echo degraded >&2; exit 2"]}, hosts=hosts)
    assert not failed.healthy and failed.detail == "exit 2 (expected 0): degraded"
    expected = one({"type": "ssh", "host": "main", "command": ["false"], "expect_exit": 1}, hosts=hosts)
    assert expected.healthy


@pytest.mark.lab
def test_ssh_refusals_are_results(hosts, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strangers = {"main": dataclasses.replace(hosts["main"], known_hosts_file=empty)}
    refused = one({"type": "ssh", "host": "main", "command": ["true"]}, hosts=strangers)
    assert not refused.healthy and "refusing to connect" in refused.detail
    unknown = one({"type": "ssh", "host": "nowhere", "command": ["true"]}, hosts=hosts)
    assert not unknown.healthy and unknown.detail == "no host named 'nowhere' in the plan"


@pytest.mark.lab
def test_a_round_runs_its_checks_concurrently_and_keeps_order(ports, crm, hosts, silent_server):
    documents = [
        {"type": "http", "url": f"http://127.0.0.1:{ports.service_main}/health"},
        *[{"type": "http", "url": f"http://127.0.0.1:{silent_server}/slow/{index}", "timeout_seconds": 0.5}
          for index in range(8)],
        {"type": "tcp", "host": "127.0.0.1", "port": ports.ssh_dr},
        {"type": "sql", **crm, "query": "select 1", "expect": "1"},
        {"type": "ssh", "host": "main", "command": ["true"]},
    ]
    started = time.monotonic()
    with CheckRunner(hosts) as runner:
        results = runner.run(probes(CHECKS.validate_python(documents)))
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"8 checks of 0.5 s each took {elapsed:.2f} s: not concurrent"
    assert [result.healthy for result in results] == [True, *[False] * 8, True, True, True]
    assert [result.target.rsplit("/", 1)[-1] for result in results[1:9]] == [str(index) for index in range(8)]


@pytest.mark.lab
def test_a_runner_reuses_its_http_connections_between_rounds(ports):
    checks = probes(CHECKS.validate_python([{"type": "http", "url": f"http://127.0.0.1:{ports.service_main}/health"}] * 4))
    seen: set[int] = set()
    with CheckRunner() as runner:
        pool = runner.http_client._transport._pool  # httpx internals: the connections it keeps alive
        for _ in range(3):
            assert all(result.healthy for result in runner.run(checks))
            seen |= {id(connection) for connection in pool.connections}
    assert 1 <= len(seen) <= 4  # 12 requests, 4 at a time: at most one connection each


def test_no_checks_is_no_results():
    with CheckRunner() as runner:
        assert runner.run([]) == []


def test_a_check_never_raises():
    result = one({"type": "sql", "dsn": "postgresql://u@127.0.0.1:1/d?sslmode=bogus"})
    assert not result.healthy and result.detail
