"""The ledger's database away for 10 s in the middle of a run (a PostgreSQL ledger restarting): the run goes on,
waits for the ledger where it must write, and its whole record is saved once the database answers again.
A ledger that refuses us (a wrong password) is not waited for: one line, at once. A SQLite ledger another process
holds for a while is waited for, not answered with "database is locked"."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifeline.tasks.run.deliveries import Delivery
from lifeline.tasks.run.ledger import Deliveries, Ledger

from tests.helpers import files_plan, make_recordings, one_line_error, run_cli, wait_for, write_password, write_plan
from tests.pg_fixtures import PostgresServer, start_postgres_server, start_stopped_postgres_server, stop_postgres_server

pytestmark = pytest.mark.usefixtures("prefect_server")

OUTAGE_SECONDS = 10


@pytest.fixture
def ledger_server() -> Iterator[PostgresServer]:
    """A cluster of its own (the test stops it), in a folder its PostgreSQL user can reach."""
    base = Path(tempfile.mkdtemp(prefix="lifeline-ledger-db-"))
    base.chmod(0o755)
    try:
        server = start_postgres_server(base)
        yield server
        stop_postgres_server(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def backup_plan(directory: Path) -> Path:
    write_password(directory / "restic.pw")
    return write_plan(directory, files_plan(directory, make_recordings(directory / "recordings")))


def test_a_backup_whose_ledger_is_away_for_10_seconds_completes_and_its_whole_record_is_saved(
    tmp_path: Path, ledger_server: PostgresServer
) -> None:
    plan, url = backup_plan(tmp_path), ledger_server.sqlalchemy_url()
    ledger = Ledger(url)
    backup = subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", "backup", "--plan", str(plan)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                              env={**os.environ, "LIFELINE_LEDGER_URL": url})
    try:
        wait_for(lambda: ledger.runs(kind="backup"), 120, "the backup's record in the ledger", poll=0.05)
        stop_postgres_server(ledger_server)
        stopped_at = time.time()
        time.sleep(OUTAGE_SECONDS)
        start_stopped_postgres_server(ledger_server)
        _, stderr = backup.communicate(timeout=240)
    finally:
        if backup.poll() is None:
            backup.kill()
    assert backup.returncode == 0, stderr[-3000:]
    [record] = ledger.runs(kind="backup")
    assert record.status == "completed" and record.snapshots, record
    assert record.ended_at.timestamp() > stopped_at + OUTAGE_SECONDS  # it waited for the ledger, it did not skip it
    assert record.steps and all(step.status in ("completed", "skipped") for step in record.steps), record.steps
    [dataset] = files_plan(tmp_path, tmp_path)["datasets"]
    facts = ledger.snapshots_recorded(record.plan, dataset)
    assert [fact.snapshot_id for fact in facts] == record.snapshots  # the snapshot's facts were saved too


def test_a_ledger_that_refuses_the_password_is_named_in_one_line_at_once(
    tmp_path: Path, ledger_server: PostgresServer
) -> None:
    plan = backup_plan(tmp_path)
    wrong = tmp_path / "wrong-pgpass"
    wrong.write_text(f"{ledger_server.host}:{ledger_server.port}:*:{ledger_server.user}:not-the-password\n")
    wrong.chmod(0o600)
    url = ledger_server.sqlalchemy_url().replace(str(ledger_server.passfile), str(wrong))
    started = time.monotonic()
    result = run_cli("backup", "--plan", str(plan), env={"LIFELINE_LEDGER_URL": url})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = one_line_error(result.stderr)
    assert "password authentication failed" in message and "not-the-password" not in result.stderr
    assert time.monotonic() - started < 60  # refused is not away: not waited for


def test_a_read_whose_connection_the_server_closes_mid_statement_is_tried_again_and_answers(
    ledger_server: PostgresServer,
) -> None:
    """The failure a restart causes in the instant between a connection's ping and its statement's answer."""
    ledger = Ledger(ledger_server.sqlalchemy_url(), patience_seconds=20)
    assert ledger.last_maintenance("repository", "prune") is None  # the tables exist
    answers: list[object] = []
    with ledger_server.connect(autocommit=False) as holder:
        holder.execute("LOCK TABLE maintenance IN ACCESS EXCLUSIVE MODE")
        reader = threading.Thread(target=lambda: answers.append(ledger.last_maintenance("repository", "prune")))
        reader.start()

        def waiting_reader() -> list[tuple]:
            return ledger_server.query("postgres", "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                       " AND query LIKE '%maintenance%'")

        [(pid,)] = wait_for(waiting_reader, 20, "the read waiting on the lock", poll=0.05)
        ledger_server.execute("postgres", f"SELECT pg_terminate_backend({int(pid)})")
        holder.rollback()
    reader.join(30)
    assert answers == [None]  # the read came back with its answer, not with "server closed the connection"


def test_a_delivery_written_while_another_process_holds_the_sqlite_ledger_for_8_seconds_is_written_once(
        tmp_path: Path) -> None:
    """SQLite answers "database is locked" after its busy timeout without running the statement; the delivery
    (written once, never retried whole) waits for the lock instead of failing."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.runs()  # creates the tables
    holder = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    releaser = threading.Timer(8.0, lambda: holder.execute("COMMIT"))
    releaser.start()
    began = time.monotonic()
    try:
        Deliveries(ledger).record(Delivery(message_id="m-1", run_id="r-1", event="failover", audience="leaders",
                                           contact="li", channel="email", channel_type="email", recipient="l…@x",
                                           status="delivered", attempt=1))
    finally:
        releaser.join()
        holder.close()
    assert time.monotonic() - began >= 7.5  # it waited for the other process, as SQLite's busy handler does
    assert [delivery.status for delivery in Deliveries(ledger).of_run("r-1")] == ["delivered"]
