"""A PostgreSQL dataset: pg_dump streamed into restic, restored into a fresh database, row counts proven."""

from __future__ import annotations

import json

import pytest
from lifeline.configs.settings import load_settings
from lifeline.flows.backup import backup_flow
from lifeline.flows.restore import restore_flow
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import RunRecord

from tests.helpers import write_password, write_plan

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def crm(postgres_server):
    postgres_server.execute("postgres", "DROP DATABASE IF EXISTS crm_flow", "CREATE DATABASE crm_flow")
    postgres_server.execute(
        "crm_flow",
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL)",
        "CREATE TABLE calls (id serial PRIMARY KEY, customer_id int REFERENCES customers, note text)",
        "INSERT INTO customers (name) SELECT '客户 ' || g FROM generate_series(1, 300) g",
        "INSERT INTO calls (customer_id, note) SELECT 1 + g % 300, 'call ' || g FROM generate_series(1, 1200) g",
    )
    yield postgres_server
    for name in ("crm_flow", "crm_flow_restored"):
        postgres_server.execute("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_plan(tmp_path, lifeline_home, crm):
    write_password(tmp_path / "plan" / "restic.pw")
    return write_plan(
        tmp_path / "plan",
        {
            "name": "db-test",
            "repositories": {
                "local": {"url": "./repo", "password_file": "./restic.pw", "init": True},
                "offsite": {"url": "./offsite", "password_file": "./restic.pw", "init": True},
            },
            "datasets": {
                "crm-db": {
                    "repository": "local",
                    "postgres": {"dsn": crm.dsn("crm_flow"), "passfile": str(crm.passfile)},
                    "copy_to": ["offsite"],
                }
            },
        },
    )


def test_database_backup_records_row_counts_and_restore_proves_them(database_plan, crm):
    ledger = Ledger(load_settings().ledger)
    record = ledger.run(backup_flow(str(database_plan)))
    assert record.status == "completed", record.error
    assert {s.name for s in record.steps} >= {"backup crm-db", "copy crm-db to offsite", "check local"}
    facts = ledger.snapshot_facts(record.snapshots[0])
    assert facts.row_counts == {"public.customers": 300, "public.calls": 1200}

    target = crm.dsn("crm_flow_restored")
    restored = ledger.run(restore_flow(str(database_plan), "crm-db", target))
    assert restored.status == "completed", restored.error
    step = next(s for s in restored.steps if s.name.startswith("restore crm-db"))
    assert step.detail["rows_verified"] == 1500
    assert crm.query("crm_flow_restored", "SELECT count(*) FROM calls") == [(1200,)]


def test_restore_into_an_existing_database_is_refused_without_replace(database_plan, crm):
    backup_flow(str(database_plan))
    crm.execute("crm_flow", "INSERT INTO customers (name) VALUES ('after the backup')")
    with pytest.raises(Exception, match="exists"):
        restore_flow(str(database_plan), "crm-db", crm.dsn("crm_flow"))
    assert crm.query("crm_flow", "SELECT count(*) FROM customers") == [(301,)]


def test_ledger_works_on_a_real_postgresql_server(crm, tmp_path):
    crm.execute("postgres", "DROP DATABASE IF EXISTS ledger_test", "CREATE DATABASE ledger_test")
    url = crm.dsn("ledger_test").replace("postgresql://", "postgresql+psycopg://")
    import os

    os.environ["PGPASSFILE"] = str(crm.passfile)
    try:
        ledger = Ledger(url)
        record = RunRecord(kind="backup", plan="p", plan_sha256="0" * 64, snapshots=["abc"], bytes=42)
        ledger.save_run(record)
        record.status = "completed"
        ledger.save_run(record)
        (stored,) = ledger.runs(kind="backup")
        assert stored.status == "completed" and stored.bytes == 42
        assert json.loads(stored.model_dump_json())["snapshots"] == ["abc"]
    finally:
        del os.environ["PGPASSFILE"]
        ledger.engine.dispose()
        crm.execute("postgres", "DROP DATABASE ledger_test WITH (FORCE)")
