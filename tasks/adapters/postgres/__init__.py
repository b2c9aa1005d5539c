"""PostgreSQL adapter: dumps whose row counts are proven, and restores that are verified before they land.

Knows nothing of Prefect. A password travels only through a libpq passfile (PGPASSFILE) or, when a
DSN embeds one, through PGPASSWORD in a child's environment: never on a command line, never in a
message. A restore loads into a fresh staging database, checks every table's row count against the
counts taken inside the dump's own snapshot, and only then renames it into place; nothing but a
staging database is ever dropped.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from lifeline.tasks.adapters.commands import CommandNotFound, CommandTimeout, run_command
from lifeline.tasks.adapters.postgres.connection import (
    ConnectionFailed,
    ConnectionInfo,
    DatabaseMissing,
    DumpLoadFailed,
    InvalidDsn,
    LoginRefused,
    PostgresError,
    RowCountsDiffer,
    TargetExists,
    classify_failure,
    connection_info,
    database_session,
    libpq_environment,
    open_connection,
    redact_dsn,
    translated_error,
)
from psycopg import errors as sql_errors
from psycopg import sql

__all__ = [
    "ConnectionFailed", "ConnectionInfo", "DatabaseMissing", "DumpLoadFailed", "InvalidDsn", "LoginRefused",
    "PostgresError", "RowCountsDiffer", "TargetExists", "classify_failure", "libpq_environment", "redact_dsn",
]

STAGING_MARKER = "_lifeline_staging_"
REPLACED_MARKER = "_replaced_"
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names
DUMP_COMPLETE_LINE = "-- PostgreSQL database dump complete"  # pg_dump's plain format ends with it
MAINTENANCE_DATABASE = "postgres"  # where CREATE, ALTER and DROP DATABASE are run from
RENAME_ATTEMPTS = 5  # a session may reconnect between terminating it and the rename


@dataclass(frozen=True)
class DumpSnapshot:
    snapshot_name: str
    row_counts: dict[str, int]


@dataclass(frozen=True)
class DatabaseRestoreResult:
    moved_aside: str | None  # where the database it replaced now lives (never dropped)
    row_counts: dict[str, int]  # as loaded; compared with the backup's when the caller had them


def pg_dump_arguments(
    connection: ConnectionInfo, snapshot_name: str, bin_dir: str | Path | None = None
) -> tuple[str, ...]:
    """pg_dump writing plain SQL to stdout (restic deduplicates it night to night), inside the exported snapshot."""
    return (
        _program("pg_dump", bin_dir), "--format=plain", "--no-owner", "--no-privileges",
        f"--snapshot={snapshot_name}", "--no-password", *_connection_flags(connection),
    )


@contextmanager
def exported_snapshot(dsn: str | ConnectionInfo, passfile: str | Path | None = None) -> Iterator[DumpSnapshot]:
    """Hold a REPEATABLE READ snapshot open, exported for `pg_dump --snapshot`, with every table's rows counted in it."""
    connection = connection_info(dsn, passfile)
    session = open_connection(connection, "export a snapshot of")
    try:
        try:
            session.execute("SET idle_in_transaction_session_timeout = 0")
            session.execute("SET statement_timeout = 0")
            session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = session.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
            assert row is not None
            counts = _count_rows_in(session)
        except psycopg.Error as error:
            raise translated_error(error, connection, "export a snapshot of") from error
        yield DumpSnapshot(snapshot_name=row[0], row_counts=counts)
    finally:
        session.close()  # ends the transaction; the snapshot can no longer be imported


def count_rows(dsn: str | ConnectionInfo, passfile: str | Path | None = None) -> dict[str, int]:
    """Rows of every user table, keyed "schema.table", all counted in one consistent snapshot."""
    connection = connection_info(dsn, passfile)
    with database_session(connection, "count rows in") as session:
        session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        counts = _count_rows_in(session)
        session.execute("ROLLBACK")
        return counts


def database_exists(admin_dsn: str | ConnectionInfo, name: str, passfile: str | Path | None = None) -> bool:
    connection = connection_info(admin_dsn, passfile)
    with database_session(connection, f"look for database {name!r} on") as session:
        return session.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [name]).fetchone() is not None


def create_database(admin_dsn: str | ConnectionInfo, name: str, passfile: str | Path | None = None) -> None:
    """An empty database from template0, so nothing added to template1 collides with the dump."""
    connection = connection_info(admin_dsn, passfile)
    with database_session(connection, f"create database {name!r} on") as session:
        session.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def load_dump(
    dsn: str | ConnectionInfo, dump_path: str | Path, passfile: str | Path | None = None, *,
    bin_dir: str | Path | None = None,
) -> None:
    """Load a plain SQL dump with psql in one transaction, stopping at the first error."""
    connection = connection_info(dsn, passfile)
    argv = (
        _program("psql", bin_dir), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "--no-password",
        "--output=/dev/null", f"--file={dump_path}", *_connection_flags(connection),
    )
    _run_tool(argv, connection, f"load {Path(dump_path).name} into")


def rename_database(admin_dsn: str | ConnectionInfo, old: str, new: str, passfile: str | Path | None = None) -> None:
    """Rename a database, first ending every other session connected to it (and only to it)."""
    connection = connection_info(admin_dsn, passfile)
    statement = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    with database_session(connection, f"rename database {old!r} to {new!r} on") as session:
        wait = ", 5000" if session.info.server_version >= 140000 else ""  # PG 14+: wait until they are gone
        terminate = (
            f"SELECT pg_catalog.pg_terminate_backend(pid{wait}) FROM pg_catalog.pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()"
        )
        for attempt in range(1, RENAME_ATTEMPTS + 1):
            session.execute(terminate, [old])  # type: ignore[arg-type]
            try:
                session.execute(statement)
                return
            except sql_errors.ObjectInUse:
                if attempt == RENAME_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)


def drop_database(admin_dsn: str | ConnectionInfo, name: str, passfile: str | Path | None = None) -> None:
    """Drop a staging database. Refuses any other name: Lifeline never drops real data."""
    if STAGING_MARKER not in name:
        raise ValueError(f"refusing to drop {name!r}: only Lifeline staging databases are ever dropped")
    connection = connection_info(admin_dsn, passfile)
    with database_session(connection, f"drop staging database {name!r} on") as session:
        session.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def dump_is_complete(dump_path: str | Path) -> bool:
    """Whether a plain dump ends with pg_dump's closing comment: a cut-off stream does not."""
    with open(dump_path, "rb") as dump:  # only its last 512 bytes are read
        dump.seek(0, os.SEEK_END)
        dump.seek(max(0, dump.tell() - 512))
        lines = dump.read().decode("utf-8", "replace").strip().splitlines()
    return DUMP_COMPLETE_LINE in (line.strip() for line in lines)  # 15.14+ adds a \unrestrict line after it


def row_count_mismatch(expected: Mapping[str, int], actual: Mapping[str, int]) -> str | None:
    """None when the counts agree, else one line naming the first differing table and both counts."""
    problems = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            problems.append(f"table {table}: expected {expected[table]} rows, found no such table")
        elif table not in expected:
            problems.append(f"table {table}: expected no such table, found {actual[table]} rows")
        elif expected[table] != actual[table]:
            problems.append(f"table {table}: expected {expected[table]} rows, found {actual[table]}")
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more tables differ)" if len(problems) > 1 else ""
    return problems[0] + more


def restore_database(
    dump_path: str | Path,
    target_dsn: str | ConnectionInfo,
    expected_row_counts: Mapping[str, int] | None,
    replace: bool = False,
    passfile: str | Path | None = None,
    *,
    bin_dir: str | Path | None = None,
) -> DatabaseRestoreResult:
    """Load into a fresh staging database, verify row counts, then rename into place (moving an old one aside).

    expected_row_counts=None (a snapshot from before counts were recorded) verifies only that the dump loads.
    """
    target = connection_info(target_dsn, passfile)
    name = target.database
    admin = target.with_database(MAINTENANCE_DATABASE if MAINTENANCE_DATABASE != name else "template1")
    if not dump_is_complete(dump_path):  # psql would load a truncated COPY's rows and commit them
        raise DumpLoadFailed(f"restore into {target.address}: {Path(dump_path).name} is truncated (no pg_dump end line)")
    if not replace and database_exists(admin, name):
        raise TargetExists(f"database {target.address} already exists; restore with replace to move it aside")
    staging = _derived_name(name, STAGING_MARKER + secrets.token_hex(4))
    create_database(admin, staging)
    replaced_name: str | None = None
    try:
        load_dump(target.with_database(staging), dump_path, bin_dir=bin_dir)
        counts = count_rows(target.with_database(staging))
        problem = None if expected_row_counts is None else row_count_mismatch(expected_row_counts, counts)
        if problem:
            raise RowCountsDiffer(f"restore into {target.address} not verified: {problem}")
        if database_exists(admin, name):
            if not replace:
                raise TargetExists(f"database {target.address} already exists; restore with replace to move it aside")
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            replaced_name = _unused_name(admin, name, REPLACED_MARKER + stamp)
            rename_database(admin, name, replaced_name)
        try:
            rename_database(admin, staging, name)
        except BaseException as error:
            if replaced_name:
                _put_back(admin, replaced_name, name, error)
                replaced_name = None
            raise
    except BaseException as error:
        _drop_quietly(admin, staging, error)
        raise
    return DatabaseRestoreResult(replaced_name, counts)


# --- internals ---------------------------------------------------------------------------------------

_USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def _count_rows_in(session: psycopg.Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, table in session.execute(_USER_TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        row = session.execute(query).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def _connection_flags(connection: ConnectionInfo) -> tuple[str, ...]:
    host = ("--host", connection.host) if connection.host else ()
    database = connection.database
    if "=" in database or "://" in database:  # -d would read it as a connection string
        database = "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return (*host, "--port", str(connection.port), "--username", connection.user, "--dbname", database)


def _program(name: str, bin_dir: str | Path | None) -> str:
    return str(Path(bin_dir) / name) if bin_dir else name


def _run_tool(argv: Sequence[str], connection: ConnectionInfo, action: str) -> None:
    """Run psql with the secret in its environment, within the step's time limit; a failure becomes a
    classified PostgresError."""
    program = Path(argv[0]).name
    try:
        result = run_command(argv, env=libpq_environment(connection=connection))
    except CommandTimeout:
        raise PostgresError(f"{action} {connection.address}: {program} timed out", transient=True) from None
    except CommandNotFound:
        raise PostgresError(f"{argv[0]} not found: install the PostgreSQL client programs or set their bin dir") from None
    if result.returncode != 0:
        error = classify_failure(connection, action, result.stderr_text or f"exit status {result.returncode}")
        script_failed = result.returncode == 3  # psql with ON_ERROR_STOP: the script failed, not the connection
        if program == "psql" and (script_failed or type(error) is PostgresError):
            error = DumpLoadFailed(str(error))
        raise error


def _derived_name(base: str, suffix: str) -> str:
    """base + suffix within PostgreSQL's 63-byte identifier limit (base is shortened, never the suffix)."""
    budget = MAX_IDENTIFIER_BYTES - len(suffix.encode())
    return base.encode()[:budget].decode("utf-8", "ignore") + suffix


def _unused_name(admin: ConnectionInfo, base: str, suffix: str) -> str:
    candidate = _derived_name(base, suffix)
    number = 2
    while database_exists(admin, candidate):
        candidate = _derived_name(base, f"{suffix}_{number}")
        number += 1
    return candidate


def _put_back(admin: ConnectionInfo, moved_aside: str, original: str, error: BaseException) -> None:
    try:
        rename_database(admin, moved_aside, original)
    except PostgresError as put_back_error:
        error.add_note(f"the previous database is still at {moved_aside!r}: putting it back failed: {put_back_error}")


def _drop_quietly(admin: ConnectionInfo, staging: str, error: BaseException) -> None:
    try:
        drop_database(admin, staging)
    except PostgresError as drop_error:
        error.add_note(f"staging database {staging!r} was left behind: {drop_error}")
