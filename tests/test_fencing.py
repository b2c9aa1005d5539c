"""Self-fencing of a site that does not answer over SSH: how long failover waits, and what it accepts as proof
that the site's databases take no writes (a refused connection, or a read-only answer)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lifeline.configs.plan import Plan
from lifeline.tasks.run.record import Journal, RunRecord
from lifeline.tasks.steps.failover import FenceFailed, fence_site, self_fence_remaining, writable_databases

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def test_the_self_fence_wait_counts_from_the_incident_not_from_when_fencing_starts() -> None:
    assert self_fence_remaining(30, NOW - timedelta(seconds=40), NOW) == 0  # it fenced itself 10 s ago
    assert self_fence_remaining(30, NOW - timedelta(seconds=12), NOW) == 18
    assert self_fence_remaining(30, NOW, NOW) == 30
    assert self_fence_remaining(30, None, NOW) == 30  # no incident time known: the whole wait from now


def _closed_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _plan_with_main_databases(dsns: dict[str, str], passfile: Path) -> Plan:
    instance = {"host": "main-db", "passfile": str(passfile), "data_dir": "/var/lib/postgresql/15/main"}
    return Plan.model_validate({
        "name": "fencing",
        "repositories": {}, "datasets": {},
        "sites": {"main": {}, "dr": {}},
        "databases": {name: {"primary": "main", "instances": {"main": {**instance, "dsn": dsn}}}
                      for name, dsn in dsns.items()},
        "fencing": {"main": {"self_fence_seconds": 30}},
    })


@pytest.fixture
def read_only_database(postgres_server) -> str:
    name = "fencing_read_only"
    if name not in postgres_server.databases():
        postgres_server.create_database(name)
        postgres_server.execute("postgres", f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    return name


def test_a_database_that_answers_read_write_is_named_and_refused_or_read_only_ones_are_proof(
    postgres_server, read_only_database: str
) -> None:
    server = postgres_server
    plan = _plan_with_main_databases({
        "crm": server.dsn("postgres"),
        "ivr": server.dsn(read_only_database),
        "gone": f"postgresql://{server.user}@127.0.0.1:{_closed_port()}/postgres",
    }, server.passfile)

    [risk] = writable_databases(plan, "main")

    assert "database crm" in risk and "site main" in risk and "host main-db" in risk
    assert f"127.0.0.1:{server.port}/postgres" in risk and "accepts writes" in risk
    assert writable_databases(plan, "dr") == []  # no database has an instance there


def test_a_database_that_refuses_our_login_is_no_proof_it_is_down(postgres_server, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pgpass"
    wrong.write_text("*:*:*:*:not-the-password\n")
    wrong.chmod(0o600)
    plan = _plan_with_main_databases({"crm": postgres_server.dsn("postgres")}, wrong)

    [risk] = writable_databases(plan, "main")

    assert "database crm" in risk and "cannot be checked" in risk and "not-the-password" not in risk


def _journal() -> Journal:
    return Journal(RunRecord(kind="failover", plan="fencing", plan_sha256="0" * 64))


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs")  # a step outside a flow
def test_the_fence_step_refuses_without_proof_and_a_forced_one_records_what_it_went_past(postgres_server) -> None:
    # Site main has no host Lifeline could reach over SSH and no fence command: only self-fencing is left.
    plan = _plan_with_main_databases({"crm": postgres_server.dsn("postgres")}, postgres_server.passfile)
    incident_at = datetime.now(UTC) - timedelta(seconds=40)  # self_fence_seconds (30) ran out 10 s ago

    refused = _journal()
    with pytest.raises(FenceFailed, match="refusing to promote") as refusal:
        fence_site(plan, "main", incident_at, journal=refused, step_name="fence main")
    assert "database crm" in str(refusal.value) and "--force" in str(refusal.value)
    [step] = refused.record.steps
    assert (step.name, step.status, step.attempts) == ("fence main", "failed", 1)  # retrying proves nothing

    forced = _journal()
    outcome = fence_site(plan, "main", incident_at, True, journal=forced, step_name="fence main")
    [step] = forced.record.steps
    assert step.status == "completed" and step.detail["method"] == "self_fencing"
    assert step.detail["waited_seconds"] == 0  # counted from the incident, not from the step's start
    [went_past] = step.detail["forced_past"]
    assert "database crm" in went_past and "accepts writes" in went_past
    assert outcome.detail == step.detail
