"""Point-in-time recovery on the lab (issue 14): real pgBackRest archiving the lab's CRM database into a folder and
into S3 (moto behind the lab's TLS), restored by `lifeline restore --to-time` and checked in the databases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lifeline.configs.loading import load_plan
from lifeline.flows.failover import failover_flow
from lifeline.flows.pitr import pitr_backup_flow, pitr_restore_flow
from lifeline.infra.lab import postgres as lab_postgres

from tests.helpers import ledger, one_line_error, run_cli, step_named
from tests.lab_fixtures import FreshBackups, Lab, back_to_normal

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]


def database_now(lab: Lab) -> datetime:
    return lab.query("main", "SELECT clock_timestamp()")[0][0]


def commit_spaced(lab: Lab, sql: str, parameters: tuple = ()) -> datetime:
    """Run `sql` at main; returns a moment strictly between what committed before it and it."""
    time.sleep(0.3)
    between = database_now(lab)
    time.sleep(0.3)
    lab.query("main", sql, parameters=parameters)
    return between


@pytest.fixture(scope="module")
def pitr_lab(lab: Lab) -> Iterator[Lab]:
    """Archiving on and one full backup in each repository."""
    record = ledger().run(pitr_backup_flow(str(lab.plan), "crm", kind="full"))
    assert record.status == "completed", record.error
    lab.query("main", "CREATE TABLE IF NOT EXISTS pitr_marks (mark text PRIMARY KEY, at timestamptz DEFAULT now())")
    lab.query("main", "CREATE TABLE IF NOT EXISTS pitr_notes (note text PRIMARY KEY)")
    yield lab


def staging_rows(lab: Lab, sql: str) -> list[tuple]:
    plan = load_plan(lab.plan).plan
    import psycopg

    parameters = lab_postgres.connection_parameters(lab.context, "main", "crm")
    parameters["port"] = plan.databases["crm"].pitr.staging_port
    with psycopg.connect(autocommit=True, **parameters) as connection:
        return list(connection.execute(sql).fetchall())


def test_archiving_is_configured_checked_and_recorded_with_every_backup(pitr_lab: Lab) -> None:
    lab = pitr_lab
    record = ledger().run(pitr_backup_flow(str(lab.plan), "crm", kind="incr"))
    assert record.status == "completed", record.error
    assert [name for name in (step.name for step in record.steps)] == [
        "archive crm at main", "incr backup of crm into repo1", "incr backup of crm into repo2"]
    facts = [ledger().snapshot_facts(snapshot) for snapshot in record.snapshots]
    assert [fact.repository for fact in facts] == ["pgbackrest repo1", "pgbackrest repo2"]
    assert all(fact.extra["newest_restorable"] and fact.extra["oldest_restorable"] for fact in facts)
    # archive_command at the primary names the host's 0600 config; the secret is only in that file
    command = lab.query("main", "SHOW archive_command")[0][0]
    assert "archive-push %p" in command and "--stanza=crm" in command
    config = Path(command.split("--config=")[1].split()[0].strip("'"))
    assert config.stat().st_mode & 0o777 == 0o600
    assert record.rpo_target_seconds == 60 and record.met_targets, record.rpo_seconds
    status = run_cli("pitr", "status", "--plan", str(lab.plan))
    assert status.returncode == 0 and "OK" in status.stdout, status.stdout + status.stderr
    # preflight holds the unarchived WAL to the 1-minute target, next to the nightly dump's 1500 minutes
    from lifeline.configs.settings import load_settings
    from lifeline.tasks.steps.preflight import assess_readiness

    items = {item.name: item for item in assess_readiness(load_plan(lab.plan).plan, load_settings(), "dr").items}
    assert items["archive crm"].ready and "(target 60 s)" in items["archive crm"].detail, items["archive crm"]


def test_a_restore_between_two_writes_brings_back_exactly_the_first_and_leaves_it_running(pitr_lab: Lab) -> None:
    lab = pitr_lab
    first, second = f"first-{time.time_ns()}", f"second-{time.time_ns()}"
    lab.query("main", "INSERT INTO pitr_marks (mark) VALUES (%s)", parameters=(first,))
    between = commit_spaced(lab, "INSERT INTO pitr_marks (mark) VALUES (%s)", (second,))
    result = run_cli("restore", "crm-db", "--to-time", between.isoformat(), "--plan", str(lab.plan), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "staging cluster left running for inspection: postgresql://" in result.stdout
    marks = {row[0] for row in staging_rows(lab, f"SELECT mark FROM pitr_marks WHERE mark IN ('{first}', '{second}')")}
    assert marks == {first}
    record = ledger().runs(kind="restore")[0]
    proven = step_named(record, "prove the restored point")
    kept_until = datetime.fromisoformat(proven.detail["kept_until"])
    assert kept_until < between and 0 <= record.rpo_seconds == pytest.approx((between - kept_until).total_seconds())
    # the live database was not touched
    assert {row[0] for row in lab.query("main", "SELECT mark FROM pitr_marks")} >= {first, second}


def test_repair_brings_back_the_tables_before_the_bad_write_and_keeps_later_writes_elsewhere(pitr_lab: Lab) -> None:
    lab = pitr_lab
    before = dict(lab.query("main", "SELECT id, email FROM customers WHERE tier = 'gold'"))
    bad_write = commit_spaced(lab, "UPDATE customers SET email = 'oops@invalid' WHERE tier = 'gold'")
    later_note = f"written after the bad write {time.time_ns()}"
    lab.query("main", "INSERT INTO pitr_notes VALUES (%s)", parameters=(later_note,))
    record = ledger().run(pitr_restore_flow(str(lab.plan), "crm", to_time=bad_write, mode="repair",
                                            tables=["customers"]))
    assert record.status == "completed", record.error
    assert dict(lab.query("main", "SELECT id, email FROM customers WHERE tier = 'gold'")) == before
    assert lab.query("main", "SELECT count(*) FROM pitr_notes WHERE note = %s", parameters=(later_note,)) == [(1,)]
    repair = step_named(record, "repair customers at main").detail
    kept = lab.query("main", f"SELECT count(*) FROM {repair['aside_schema']}.customers WHERE email = 'oops@invalid'")
    assert kept[0][0] == len(before) == repair["tables"]["public.customers"]["updated"] > 0
    assert record.rto_seconds > 0 and record.met_targets is not False


def test_a_repair_that_fails_midway_leaves_the_live_database_as_it_was(pitr_lab: Lab) -> None:
    lab = pitr_lab
    moment = commit_spaced(lab, "UPDATE customers SET email = 'later@invalid' WHERE tier = 'platinum'")
    # after T: a new customer with a call: the repair must delete the customer, which the call still references
    lab.query("main", "INSERT INTO customers VALUES (990001, 'New', '+8613999990001', 'n@x', 'Hangzhou', 'standard', "
                      "now())")
    lab.query("main", "INSERT INTO calls (customer_id, caller_id, site, disposition) "
                      "VALUES (990001, '+8613999990001', 'main', 'answered')")
    customers_before = lab.query("main", "SELECT * FROM customers ORDER BY id")
    schemas_before = lab.query("main", "SELECT nspname FROM pg_namespace ORDER BY 1")
    with pytest.raises(Exception) as raised:
        pitr_restore_flow(str(lab.plan), "crm", to_time=moment, mode="repair", tables=["customers"])
    assert "\n" not in str(raised.value) and "violates foreign key constraint" in str(raised.value)
    # the updates the repair had made before the delete failed are gone, and so is its aside schema
    assert lab.query("main", "SELECT * FROM customers ORDER BY id") == customers_before
    assert lab.query("main", "SELECT nspname FROM pg_namespace ORDER BY 1") == schemas_before
    lab.query("main", "DELETE FROM calls WHERE customer_id = 990001")
    lab.query("main", "DELETE FROM customers WHERE id = 990001")


def test_a_time_outside_the_restorable_window_is_exit_2_naming_the_window(pitr_lab: Lab) -> None:
    lab = pitr_lab
    long_ago = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    result = run_cli("restore", "crm-db", "--to-time", long_ago, "--plan", str(lab.plan), timeout=300)
    assert result.returncode == 2, result.stderr
    message = one_line_error(result.stderr)
    assert "outside the restorable window" in message and ".." in message
    # a table the repair could not match rows in is refused before anything is restored
    recently = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    result = run_cli("restore", "crm-db", "--to-time", recently, "--tables", "customers,no_such_table",
                     "--plan", str(lab.plan), timeout=300)
    assert result.returncode == 2 and "no table no_such_table" in one_line_error(result.stderr), result.stderr


def test_replace_rewinds_the_primary_exports_the_rows_it_rewinds_and_rebuilds_the_standby(pitr_lab: Lab) -> None:
    lab = pitr_lab
    kept, rewound = f"kept-{time.time_ns()}", f"rewound-{time.time_ns()}"
    lab.query("main", "INSERT INTO pitr_marks (mark) VALUES (%s)", parameters=(kept,))
    moment = commit_spaced(lab, "INSERT INTO pitr_marks (mark) VALUES (%s)", (rewound,))
    record = ledger().run(pitr_restore_flow(str(lab.plan), "crm", to_time=moment, mode="replace", approval="yes"))
    assert record.status == "completed", record.error
    marks = {row[0] for row in lab.query("main", "SELECT mark FROM pitr_marks")}
    assert kept in marks and rewound not in marks
    rewind = step_named(record, "rewind crm at main")
    assert rewind.detail["rows_only_before_rewind"].get("public.pitr_marks", 0) >= 1
    assert rewound in Path(rewind.detail["rows_after_target_report"]).read_text()
    assert Path(rewind.detail["moved_aside"]).is_dir()
    lab.wait_normal(60)  # dr streams from the rewound main again
    assert lab.query("dr", "SELECT count(*) FROM pitr_marks WHERE mark = %s", parameters=(kept,)) == [(1,)]


def test_archiving_goes_on_from_the_new_primary_after_a_failover(pitr_lab: Lab, fresh_backups: FreshBackups) -> None:
    lab = pitr_lab
    fresh_backups.ensure()  # preflight wants the nightly snapshots younger than their targets
    record = ledger().run(failover_flow(plan_path=str(lab.plan), approval="yes", reason="pitr test"))
    try:
        assert record.status == "completed", record.error
        assert step_named(record, "archive crm at dr").status == "completed"
        # the timeline dr writes now (pg_control's checkpoint still names the old one until its next checkpoint)
        [(segment,)] = lab.query("dr", "SELECT pg_walfile_name(pg_current_wal_lsn())")
        lab.query("dr", "INSERT INTO pitr_marks (mark) VALUES (%s)", parameters=(f"after-failover-{time.time_ns()}",))
        lab.query("dr", "SELECT pg_switch_wal()")

        def archived_on_new_timeline() -> bool:
            wal = lab.query("dr", "SELECT last_archived_wal FROM pg_stat_archiver")[0][0] or ""
            return wal[:8] == segment[:8] and wal[8:24] >= segment[8:24]

        deadline = time.monotonic() + 30
        while not archived_on_new_timeline():
            assert time.monotonic() < deadline, f"dr's timeline {segment[:8]} is not archived"
            time.sleep(0.3)
    finally:
        back_to_normal(lab)


def test_the_logical_corruption_drill_repairs_the_table_to_the_second_before_the_bad_write(pitr_lab: Lab) -> None:
    from lifeline.flows.drill import drill_flow
    from lifeline.infra.lab.faults import CORRUPTION_CHECK

    lab = pitr_lab
    lab.wait_normal(60)
    record = ledger().run(drill_flow(str(lab.plan), scenario="logical-corruption"))
    assert record.status == "completed", record.error
    standby = step_named(record, "show the corruption at the standby").detail["corrupted_rows"]
    assert standby["main"] == standby["dr"] > 0  # replication carried the bad write to dr
    assert step_named(record, "verify sentinel").detail["row_survived"] is True
    assert lab.query("main", CORRUPTION_CHECK)[0][0] == 0 and lab.query("dr", CORRUPTION_CHECK)[0][0] == 0
    assert 0 <= record.rpo_seconds <= 60 and record.met_targets, (record.rpo_seconds, record.rto_seconds)
    assert lab.status().normal
    # the drill leaves nothing: its repair's aside schema (the corrupted rows) went with the sentinels
    assert lab.query("main", "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'lifeline_drill_%%'") == [(0,)]
