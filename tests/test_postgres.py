"""The PostgreSQL adapter against a real cluster: consistent dumps, verified restores, classified errors."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from lifeline.tasks.adapters import postgres
from lifeline.tasks.adapters.postgres import (
    ConnectionFailed,
    ConnectionInfo,
    DatabaseMissing,
    DumpLoadFailed,
    LoginRefused,
    PostgresError,
    RowCountsDiffer,
    TargetExists,
)

SOURCE = "crm_source"
SOURCE_ROWS = {"billing.invoices": 300, "public.Call Notes": 2, "public.calls": 120, "public.customers": 40}


@dataclass(frozen=True)
class Dumped:
    path: Path
    row_counts: dict[str, int]


def _no_leftovers(server) -> None:
    leftovers = sorted(name for name in server.databases() if postgres.STAGING_MARKER in name)
    assert leftovers == [], f"staging databases left behind: {leftovers}"


def _make_kept_database(server, name: str, rows: int) -> None:
    server.create_database(name)
    server.execute(name, "CREATE TABLE kept (id int)", f"INSERT INTO kept SELECT generate_series(1, {rows})")


@pytest.fixture(scope="module")
def source(postgres_server) -> str:
    postgres_server.create_database(SOURCE)
    postgres_server.execute(
        SOURCE,
        "CREATE SCHEMA billing",
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL)",
        "CREATE TABLE calls (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, note text)",
        "CREATE TABLE billing.invoices (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, amount numeric)",
        'CREATE TABLE "Call Notes" (id int, note text)',
        "INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 40) g",
        "INSERT INTO calls (customer_id, note) SELECT g % 40 + 1, 'call ' || g FROM generate_series(1, 120) g",
        "INSERT INTO billing.invoices (customer_id, amount) SELECT g % 40 + 1, g FROM generate_series(1, 300) g",
        "INSERT INTO \"Call Notes\" VALUES (1, '录音 2026-11-28.wav'), (2, E'tab\\there; quote '' done')",
    )
    return SOURCE


def _pg_dump(server, snapshot_name: str, output: Path) -> None:
    """Exactly as the backup flow runs it: argv from pg_dump_arguments, secret through libpq_environment."""
    argv = postgres.pg_dump_arguments(ConnectionInfo.from_dsn(server.dsn(SOURCE)), snapshot_name, server.bin_dir)
    environment = {**os.environ, **postgres.libpq_environment(server.passfile)}
    with output.open("wb") as sink:
        completed = subprocess.run(argv, env=environment, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.PIPE)
    assert completed.returncode == 0, completed.stderr.decode()


def _keep_inserting(server, started: threading.Event, stop: threading.Event) -> None:
    with server.connect(SOURCE) as connection:
        while not stop.is_set():
            connection.execute("INSERT INTO calls (customer_id, note) VALUES (1, 'during the dump')")
            started.set()


@pytest.fixture(scope="module")
def dumped(postgres_server, source, tmp_path_factory) -> Dumped:
    """A dump taken in an exported snapshot while other sessions keep writing."""
    path = tmp_path_factory.mktemp("dump") / "crm.sql"
    started, stop = threading.Event(), threading.Event()
    with postgres.exported_snapshot(postgres_server.dsn(source), postgres_server.passfile) as snapshot:
        postgres_server.execute(  # committed after the export, before pg_dump starts
            source,
            "INSERT INTO calls (customer_id, note) SELECT 1, 'after export' FROM generate_series(1, 25)",
            "DELETE FROM \"Call Notes\" WHERE id = 2",
            "CREATE TABLE created_later (id int)",
        )
        writer = threading.Thread(target=_keep_inserting, args=(postgres_server, started, stop))
        writer.start()
        try:
            assert started.wait(10), "the concurrent writer never wrote"
            _pg_dump(postgres_server, snapshot.snapshot_name, path)
        finally:
            stop.set()
            writer.join()
    assert snapshot.row_counts == SOURCE_ROWS
    assert re.fullmatch(r"[0-9A-F]+-[0-9A-F]+-[0-9]+", snapshot.snapshot_name)
    return Dumped(path=path, row_counts=snapshot.row_counts)


def test_snapshot_counts_equal_the_rows_in_the_dump_despite_concurrent_writes(postgres_server, dumped):
    live = postgres.count_rows(postgres_server.dsn(SOURCE), postgres_server.passfile)
    assert live["public.calls"] > SOURCE_ROWS["public.calls"] + 25  # the writers really wrote
    assert live["public.Call Notes"] == 1 and "public.created_later" in live
    postgres.create_database(postgres_server.dsn(), "crm_loaded", postgres_server.passfile)
    postgres.load_dump(postgres_server.dsn("crm_loaded"), dumped.path, postgres_server.passfile, bin_dir=postgres_server.bin_dir)
    assert postgres.count_rows(postgres_server.dsn("crm_loaded"), postgres_server.passfile) == dumped.row_counts
    assert postgres_server.query("crm_loaded", 'SELECT note FROM "Call Notes" WHERE id = 1') == [("录音 2026-11-28.wav",)]


def test_restore_into_a_new_database_verifies_then_renames(postgres_server, dumped):
    result = postgres.restore_database(
        dumped.path, postgres_server.dsn("crm_new"), dumped.row_counts, False, postgres_server.passfile,
        bin_dir=postgres_server.bin_dir,
    )
    assert result.moved_aside is None and result.row_counts == dumped.row_counts
    assert postgres.database_exists(postgres_server.dsn(), "crm_new", postgres_server.passfile)
    assert postgres.count_rows(postgres_server.dsn("crm_new"), postgres_server.passfile) == dumped.row_counts
    _no_leftovers(postgres_server)


def test_restore_over_an_existing_database_without_replace_is_refused(postgres_server, dumped):
    _make_kept_database(postgres_server, "crm_existing", rows=7)
    before = postgres_server.databases()
    with pytest.raises(TargetExists, match=rf"127\.0\.0\.1:{postgres_server.port}/crm_existing already exists"):
        postgres.restore_database(
            dumped.path, postgres_server.dsn("crm_existing"), dumped.row_counts, False, postgres_server.passfile,
            bin_dir=postgres_server.bin_dir,
        )
    assert postgres.count_rows(postgres_server.dsn("crm_existing"), postgres_server.passfile) == {"public.kept": 7}
    assert postgres_server.databases() == before
    _no_leftovers(postgres_server)


def test_restore_with_replace_keeps_the_old_database_aside(postgres_server, dumped):
    _make_kept_database(postgres_server, "crm_replace", rows=3)
    with postgres_server.connect("crm_replace") as lingering:  # a session on the old database must not block
        result = postgres.restore_database(
            dumped.path, postgres_server.dsn("crm_replace"), dumped.row_counts, True, postgres_server.passfile,
            bin_dir=postgres_server.bin_dir,
        )
        with pytest.raises(psycopg.OperationalError):
            lingering.execute("SELECT 1")
    assert result.moved_aside is not None
    assert re.fullmatch(r"crm_replace_replaced_\d{14}", result.moved_aside)
    old = postgres.count_rows(postgres_server.dsn(result.moved_aside), postgres_server.passfile)
    assert old == {"public.kept": 3}
    assert postgres.count_rows(postgres_server.dsn("crm_replace"), postgres_server.passfile) == dumped.row_counts
    _no_leftovers(postgres_server)


def _truncated(text: str) -> str:
    return text[: len(text) // 2]


def _cut_at_a_line_inside_copy(text: str) -> str:
    """What a pg_dump killed mid-stream leaves: psql would load those rows and commit them."""
    lines = text.splitlines(keepends=True)
    copy_start = next(index for index, line in enumerate(lines) if line.startswith("COPY public.calls "))
    return "".join(lines[: copy_start + 50])


def _one_call_row_removed(text: str) -> str:
    lines = text.splitlines(keepends=True)
    copy_start = next(index for index, line in enumerate(lines) if line.startswith("COPY public.calls "))
    del lines[copy_start + 5]
    return "".join(lines)


def _garbage_in_the_middle(text: str) -> str:
    middle = text.index("\nCOPY ") + 1
    return text[:middle] + "THIS IS NOT SQL;\n" + text[middle:]


@pytest.mark.parametrize(
    ("corrupt", "expected_error", "message"),
    [
        (_truncated, DumpLoadFailed, "crm.sql is truncated"),
        (_cut_at_a_line_inside_copy, DumpLoadFailed, "crm.sql is truncated"),
        (_one_call_row_removed, RowCountsDiffer, r"table public\.calls: expected 120 rows, found 119"),
        (_garbage_in_the_middle, DumpLoadFailed, r"line \d+: syntax error"),
    ],
    ids=["truncated", "cut-inside-copy", "row-removed", "garbage"],
)
def test_a_bad_dump_leaves_the_target_untouched_and_no_staging_behind(
    postgres_server, dumped, tmp_path, corrupt, expected_error, message
):
    target = f"crm_bad_{corrupt.__name__.strip('_')}"
    _make_kept_database(postgres_server, target, rows=5)
    bad_dump = tmp_path / "crm.sql"
    bad_dump.write_text(corrupt(dumped.path.read_text(encoding="utf-8")), encoding="utf-8")
    before = postgres_server.databases()
    with pytest.raises(expected_error, match=message) as raised:
        postgres.restore_database(
            bad_dump, postgres_server.dsn(target), dumped.row_counts, True, postgres_server.passfile,
            bin_dir=postgres_server.bin_dir,
        )
    assert "\n" not in str(raised.value) and not raised.value.transient
    assert f"127.0.0.1:{postgres_server.port}/{target}" in str(raised.value)
    assert postgres.count_rows(postgres_server.dsn(target), postgres_server.passfile) == {"public.kept": 5}
    assert postgres_server.databases() == before  # nothing moved aside, nothing left behind
    _no_leftovers(postgres_server)


def test_expected_counts_naming_a_missing_table_fail_verification(postgres_server, dumped):
    expected = {**dumped.row_counts, "public.agents": 12}
    with pytest.raises(RowCountsDiffer, match=r"table public\.agents: expected 12 rows, found no such table$"):
        postgres.restore_database(
            dumped.path, postgres_server.dsn("crm_never"), expected, False, postgres_server.passfile,
            bin_dir=postgres_server.bin_dir,
        )
    assert "crm_never" not in postgres_server.databases()
    _no_leftovers(postgres_server)


def test_a_failure_after_moving_the_target_aside_puts_it_back(postgres_server, dumped, monkeypatch):
    _make_kept_database(postgres_server, "crm_put_back", rows=4)
    rename = postgres.rename_database

    def rename_failing_for_staging(admin, old, new, *args, **kwargs):
        if postgres.STAGING_MARKER in old:
            raise postgres.PostgresError("injected: rename refused")
        return rename(admin, old, new, *args, **kwargs)

    monkeypatch.setattr(postgres, "rename_database", rename_failing_for_staging)
    before = postgres_server.databases()
    with pytest.raises(PostgresError, match="injected"):
        postgres.restore_database(
            dumped.path, postgres_server.dsn("crm_put_back"), dumped.row_counts, True, postgres_server.passfile,
            bin_dir=postgres_server.bin_dir,
        )
    assert postgres_server.databases() == before
    assert postgres.count_rows(postgres_server.dsn("crm_put_back"), postgres_server.passfile) == {"public.kept": 4}


def test_without_recorded_counts_only_loading_is_verified(postgres_server, dumped):
    result = postgres.restore_database(
        dumped.path, postgres_server.dsn("crm_uncounted"), None, False, postgres_server.passfile,
        bin_dir=postgres_server.bin_dir,
    )
    assert result.row_counts == dumped.row_counts


@pytest.fixture()
def wrong_passfile(postgres_server, tmp_path) -> tuple[Path, str]:
    canary = "canary-" + secrets.token_hex(8)
    path = tmp_path / "wrong.pgpass"
    path.write_text(f"127.0.0.1:{postgres_server.port}:*:lifeline:{canary}\n")
    path.chmod(0o600)
    return path, canary


def test_a_wrong_password_is_a_permanent_error_that_never_shows_the_password(postgres_server, wrong_passfile, tmp_path):
    passfile, canary = wrong_passfile
    attempts = [
        lambda: postgres.count_rows(postgres_server.dsn(SOURCE), passfile),
        lambda: postgres.exported_snapshot(postgres_server.dsn(SOURCE), passfile).__enter__(),
        lambda: postgres.load_dump(postgres_server.dsn(SOURCE), tmp_path / "x.sql", passfile, bin_dir=postgres_server.bin_dir),
        lambda: postgres.count_rows(f"postgresql://lifeline:{canary}@127.0.0.1:{postgres_server.port}/{SOURCE}"),
    ]
    for attempt in attempts:
        with pytest.raises(LoginRefused) as raised:
            attempt()
        message = str(raised.value)
        assert raised.value.transient is False
        assert f"127.0.0.1:{postgres_server.port}/{SOURCE}" in message and "password authentication failed" in message
        assert canary not in message and canary not in repr(raised.value) and "\n" not in message


def test_a_missing_or_open_passfile_is_named(postgres_server, tmp_path):
    with pytest.raises(LoginRefused, match="passfile .*absent.pgpass does not exist"):
        postgres.count_rows(postgres_server.dsn(), tmp_path / "absent.pgpass")
    open_passfile = tmp_path / "open.pgpass"
    open_passfile.write_text(postgres_server.passfile.read_text())
    open_passfile.chmod(0o644)
    with pytest.raises(LoginRefused, match="open.pgpass must be mode 0600"):
        postgres.count_rows(postgres_server.dsn(), open_passfile)


def test_an_unreachable_server_is_a_transient_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dsn = f"postgresql://lifeline@127.0.0.1:{port}/crm?connect_timeout=2"
    for attempt in (lambda: postgres.count_rows(dsn), lambda: postgres.load_dump(dsn, tmp_path / "x.sql")):
        with pytest.raises(ConnectionFailed, match=rf"127\.0\.0\.1:{port}/crm: Connection refused") as raised:
            attempt()
        assert raised.value.transient is True


def test_a_missing_database_is_a_permanent_error(postgres_server):
    with pytest.raises(DatabaseMissing, match=r'/no_such_db: database "no_such_db" does not exist') as raised:
        postgres.count_rows(postgres_server.dsn("no_such_db"), postgres_server.passfile)
    assert raised.value.transient is False


def test_rename_ends_sessions_on_that_database_only(postgres_server, source):
    postgres_server.create_database("crm_rename_me")
    with postgres_server.connect("crm_rename_me") as on_renamed, postgres_server.connect(source) as elsewhere:
        postgres.rename_database(postgres_server.dsn(), "crm_rename_me", "crm_renamed", postgres_server.passfile)
        with pytest.raises(psycopg.OperationalError):
            on_renamed.execute("SELECT 1")
        assert elsewhere.execute("SELECT 1").fetchone() == (1,)
    assert postgres.database_exists(postgres_server.dsn(), "crm_renamed", postgres_server.passfile)
    assert not postgres.database_exists(postgres_server.dsn(), "crm_rename_me", postgres_server.passfile)


def test_only_staging_databases_can_be_dropped(postgres_server, source):
    with pytest.raises(ValueError, match="only Lifeline staging databases"):
        postgres.drop_database(postgres_server.dsn(), source, postgres_server.passfile)
    assert source in postgres_server.databases()


# --- no server needed ---------------------------------------------------------------------------------


def test_pg_dump_arguments_carry_the_snapshot_and_no_secret():
    connection = ConnectionInfo.from_dsn("postgresql://lifeline:hunter2@db.example:5433/crm", "/etc/lifeline/pgpass")
    argv = postgres.pg_dump_arguments(connection, "00000003-0000001B-1", "/usr/lib/postgresql/15/bin")
    assert argv[0] == "/usr/lib/postgresql/15/bin/pg_dump"
    assert {"--format=plain", "--no-owner", "--no-privileges", "--snapshot=00000003-0000001B-1", "--no-password"} <= set(argv)
    assert argv[-8:] == ("--host", "db.example", "--port", "5433", "--username", "lifeline", "--dbname", "crm")
    assert not any("hunter2" in argument for argument in argv)
    environment = postgres.libpq_environment(connection=connection)
    assert environment["PGPASSFILE"] == "/etc/lifeline/pgpass" and environment["PGCONNECT_TIMEOUT"] == "10"
    assert environment["PGPASSWORD"] == "hunter2"  # an embedded password goes to the environment only
    assert postgres.libpq_environment("/x/pgpass") == {"PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "lifeline", "PGPASSFILE": "/x/pgpass"}


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        ("postgresql://lifeline:s3cr%40t@127.0.0.1:5433/crm", "postgresql://lifeline:***@127.0.0.1:5433/crm"),
        ("postgres://u:p@h/db?sslmode=require&password=x", "postgres://u:***@h/db?sslmode=require&password=***"),
        ("host=h port=5 password='a b\\'c' dbname=crm", "host=h port=5 password=*** dbname=crm"),
        ("postgresql://lifeline@127.0.0.1:5433/crm", "postgresql://lifeline@127.0.0.1:5433/crm"),
    ],
)
def test_redact_dsn(dsn, redacted):
    assert postgres.redact_dsn(dsn) == redacted


def test_connection_info_from_dsn():
    info = ConnectionInfo.from_dsn("postgresql://lifeline:pw@127.0.0.1:5433/crm?connect_timeout=3&sslmode=require")
    assert (info.host, info.port, info.user, info.database, info.connect_timeout_seconds) == ("127.0.0.1", 5433, "lifeline", "crm", 3)
    assert info.address == "127.0.0.1:5433/crm" and "pw" not in repr(info)
    assert postgres.libpq_environment(connection=info)["PGSSLMODE"] == "require"
    with pytest.raises(postgres.InvalidDsn) as raised:
        ConnectionInfo.from_dsn("postgresql://u:topsecret@h/db?sslpassword=x")
    assert "topsecret" not in str(raised.value) and isinstance(raised.value, PostgresError)


def test_row_count_mismatch_names_the_table_and_both_counts():
    assert postgres.row_count_mismatch({"public.a": 1}, {"public.a": 1}) is None
    assert postgres.row_count_mismatch({"public.a": 1, "public.b": 2}, {"public.a": 1, "public.b": 3, "public.c": 0}) == (
        "table public.b: expected 2 rows, found 3 (and 1 more tables differ)"
    )
    assert postgres.row_count_mismatch({}, {"public.c": 4}) == "table public.c: expected no such table, found 4 rows"
