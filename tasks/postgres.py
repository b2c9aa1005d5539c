"""PostgreSQL adapter: dumps whose row counts are proven, and restores that are verified before they land.

Knows nothing of Prefect. A password travels only through a libpq passfile (PGPASSFILE) or, when a
DSN embeds one, through PGPASSWORD in a child's environment: never on a command line, never in a
message. A restore loads into a fresh staging database, checks every table's row count against the
counts taken inside the dump's own snapshot, and only then renames it into place; nothing but a
staging database is ever dropped.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from dataclasses import replace as replaced_copy
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import errors as sql_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from lifeline.tasks.commands import CommandNotFound, CommandTimeout, run_command
from lifeline.tasks.errors import LifelineError

STAGING_MARKER = "_lifeline_staging_"
REPLACED_MARKER = "_replaced_"
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10
APPLICATION_NAME = "lifeline"
DUMP_COMPLETE_LINE = "-- PostgreSQL database dump complete"  # pg_dump's plain format ends with it

# Connection options a DSN may carry, and the libpq variable that hands each to pg_dump and psql.
_OPTION_ENVIRONMENT = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
                       "sslkey": "PGSSLKEY", "target_session_attrs": "PGTARGETSESSIONATTRS"}
_TRANSIENT_SIGNS = (
    "connection refused", "timeout expired", "timed out", "could not connect", "no route to host",
    "network is unreachable", "could not translate host name", "connection reset",
    "server closed the connection unexpectedly", "the database system is starting up",
    "the database system is shutting down", "the database system is in recovery mode",
    "too many clients", "remaining connection slots are reserved",
)
_AUTHENTICATION_SIGNS = ("authentication failed", "no password supplied", "pg_hba.conf")


class PostgresError(LifelineError):
    """Every failure of this module: a one-line message naming host:port/database, never a password."""

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class InvalidDsn(PostgresError):
    """The DSN cannot be parsed or carries an option Lifeline cannot pass on safely."""

    user_error = True


class ConnectionFailed(PostgresError):
    """The server could not be reached (refused, timed out, starting up): worth retrying."""

    transient = True


class AuthenticationFailed(PostgresError):
    """Wrong or missing password, unknown role, or pg_hba.conf refuses us: retrying will not help."""

    user_error = True


class DatabaseMissing(PostgresError):
    """The named database does not exist."""

    user_error = True


class TargetExists(PostgresError):
    """The restore target (or a database of the requested name) already exists."""

    user_error = True


class DumpLoadFailed(PostgresError):
    """psql could not load the dump (corrupt, truncated, or incompatible)."""


class VerificationFailed(PostgresError):
    """The loaded dump's row counts differ from the counts taken at backup time."""


@dataclass(frozen=True)
class ConnectionInfo:
    """Where a database lives and how to authenticate, parsed once from a DSN."""

    host: str | None
    port: int
    user: str
    database: str
    passfile: Path | None = None
    connect_timeout_seconds: int = DEFAULT_CONNECT_TIMEOUT_SECONDS
    options: tuple[tuple[str, str], ...] = ()
    password: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dsn(cls, dsn: str, passfile: str | Path | None = None) -> ConnectionInfo:
        """Parse `postgresql://user@host:port/db` (or `key=value` form); PG* variables fill the gaps as in libpq."""
        try:
            parameters = conninfo_to_dict(dsn)
        except psycopg.Error:
            raise InvalidDsn(f"cannot parse PostgreSQL DSN {redact_dsn(dsn)!r}") from None
        host = str(parameters.pop("host", "") or os.environ.get("PGHOST", "")) or None
        port_text = str(parameters.pop("port", "") or os.environ.get("PGPORT", "") or "5432")
        if (host and "," in host) or not port_text.isdigit():
            raise InvalidDsn(f"{redact_dsn(dsn)!r}: name one host and one numeric port")
        user = str(parameters.pop("user", "") or os.environ.get("PGUSER", "") or getpass.getuser())
        database = str(parameters.pop("dbname", "") or os.environ.get("PGDATABASE", "") or user)
        password = parameters.pop("password", None)
        dsn_passfile = parameters.pop("passfile", None)
        timeout = str(parameters.pop("connect_timeout", DEFAULT_CONNECT_TIMEOUT_SECONDS))
        parameters.pop("application_name", None)
        unsupported = sorted(set(parameters) - set(_OPTION_ENVIRONMENT))
        if unsupported:
            raise InvalidDsn(f"{redact_dsn(dsn)!r}: unsupported connection option(s) {', '.join(unsupported)}")
        chosen_passfile = passfile if passfile is not None else dsn_passfile
        return cls(
            host, int(port_text), user, database, Path(chosen_passfile) if chosen_passfile else None,
            int(timeout) if timeout.isdigit() else DEFAULT_CONNECT_TIMEOUT_SECONDS,
            tuple(sorted((key, str(value)) for key, value in parameters.items())), str(password) if password else None,
        )

    @property
    def address(self) -> str:
        """host:port/database, for messages."""
        return f"{self.host or '[local]'}:{self.port}/{self.database}"

    def dsn(self) -> str:
        """A URI without any password, safe to log."""
        host = self.host or ""
        host = f"[{host}]" if ":" in host else quote(host, safe="")
        return f"postgresql://{quote(self.user, safe='')}@{host}:{self.port}/{quote(self.database, safe='')}"

    def with_database(self, database: str) -> ConnectionInfo:
        return replaced_copy(self, database=database)

    def connect_arguments(self) -> dict[str, str | int]:
        """Keyword arguments for psycopg.connect."""
        arguments = {
            "host": self.host, "port": self.port, "user": self.user, "dbname": self.database,
            "passfile": str(self.passfile) if self.passfile else None, "password": self.password,
            "connect_timeout": self.connect_timeout_seconds, "application_name": APPLICATION_NAME,
        }
        return {key: value for key, value in arguments.items() if value is not None} | dict(self.options)


@dataclass(frozen=True)
class DumpSnapshot:
    snapshot_name: str
    row_counts: dict[str, int]
    taken_at: datetime


@dataclass(frozen=True)
class DatabaseRestoreResult:
    target: str  # host:port/database
    database: str
    staging_database: str  # loaded and verified there, then renamed to `database`
    moved_aside: str | None  # where the database it replaced now lives (never dropped)
    row_counts: dict[str, int]
    row_counts_verified: bool  # False only when the caller had no counts to compare against
    duration_seconds: float


def redact_dsn(dsn: str) -> str:
    """The DSN with any embedded password replaced by ***, in URI or key=value form."""
    redacted = re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", r"\1***", dsn)
    match = re.match(r"(?i)^(postgres(?:ql)?://)([^/?#]*)(.*)$", redacted, re.DOTALL)
    if not match or "@" not in match.group(2):
        return redacted
    userinfo, _, hosts = match.group(2).rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{match.group(1)}{userinfo}@{hosts}{match.group(3)}"


def libpq_environment(
    passfile: str | Path | None = None, *, connection: ConnectionInfo | None = None
) -> dict[str, str]:
    """Variables to lay over os.environ for pg_dump/psql: the secret goes here, never into argv."""
    timeout = connection.connect_timeout_seconds if connection else DEFAULT_CONNECT_TIMEOUT_SECONDS
    environment = {"PGCONNECT_TIMEOUT": str(timeout), "PGAPPNAME": APPLICATION_NAME}
    chosen_passfile = passfile if passfile is not None else (connection.passfile if connection else None)
    if chosen_passfile:
        environment["PGPASSFILE"] = str(chosen_passfile)
    if connection:
        environment.update({_OPTION_ENVIRONMENT[key]: value for key, value in connection.options})
        if connection.password:
            environment["PGPASSWORD"] = connection.password
    return environment


def classify_failure(connection: ConnectionInfo, action: str, detail: str) -> PostgresError:
    """Turn libpq/psql/pg_dump error text into the right PostgresError, one line, password scrubbed."""
    reason = _one_line(detail, connection)
    lowered = reason.lower()
    message = f"{action} {connection.address}: {reason}"
    if re.search(r'database ".*" does not exist', lowered):
        return DatabaseMissing(message)
    if re.search(r'role ".*" does not exist', lowered) or any(sign in lowered for sign in _AUTHENTICATION_SIGNS):
        return AuthenticationFailed(message)
    if any(sign in lowered for sign in _TRANSIENT_SIGNS):
        return ConnectionFailed(message)
    return PostgresError(message)


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
    connection = _connection_info(dsn, passfile)
    session = _open(connection, "export a snapshot of")
    try:
        try:
            session.execute("SET idle_in_transaction_session_timeout = 0")
            session.execute("SET statement_timeout = 0")
            session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = session.execute("SELECT pg_catalog.pg_export_snapshot(), statement_timestamp()").fetchone()
            assert row is not None
            counts = _count_rows_in(session)
        except psycopg.Error as error:
            raise _translated(error, connection, "export a snapshot of") from error
        yield DumpSnapshot(snapshot_name=row[0], row_counts=counts, taken_at=row[1].astimezone(UTC))
    finally:
        session.close()  # ends the transaction; the snapshot can no longer be imported


def count_rows(dsn: str | ConnectionInfo, passfile: str | Path | None = None) -> dict[str, int]:
    """Rows of every user table, keyed "schema.table", all counted in one consistent snapshot."""
    connection = _connection_info(dsn, passfile)
    with _session(connection, "count rows in") as session:
        session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        counts = _count_rows_in(session)
        session.execute("ROLLBACK")
        return counts


def database_exists(admin_dsn: str | ConnectionInfo, name: str, passfile: str | Path | None = None) -> bool:
    connection = _connection_info(admin_dsn, passfile)
    with _session(connection, f"look for database {name!r} on") as session:
        return session.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [name]).fetchone() is not None


def create_database(admin_dsn: str | ConnectionInfo, name: str, passfile: str | Path | None = None) -> None:
    """An empty database from template0, so nothing added to template1 collides with the dump."""
    connection = _connection_info(admin_dsn, passfile)
    with _session(connection, f"create database {name!r} on") as session:
        session.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def load_dump(
    dsn: str | ConnectionInfo, dump_path: str | Path, passfile: str | Path | None = None, *,
    bin_dir: str | Path | None = None, timeout_seconds: float | None = None,
) -> None:
    """Load a plain SQL dump with psql in one transaction, stopping at the first error."""
    connection = _connection_info(dsn, passfile)
    argv = (
        _program("psql", bin_dir), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "--no-password",
        "--output=/dev/null", f"--file={dump_path}", *_connection_flags(connection),
    )
    _run_tool(argv, connection, f"load {Path(dump_path).name} into", timeout_seconds)


def rename_database(
    admin_dsn: str | ConnectionInfo, old: str, new: str, passfile: str | Path | None = None, *, attempts: int = 5
) -> None:
    """Rename a database, first ending every other session connected to it (and only to it)."""
    connection = _connection_info(admin_dsn, passfile)
    statement = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    with _session(connection, f"rename database {old!r} to {new!r} on") as session:
        wait = ", 5000" if session.info.server_version >= 140000 else ""  # PG 14+: wait until they are gone
        terminate = (
            f"SELECT pg_catalog.pg_terminate_backend(pid{wait}) FROM pg_catalog.pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()"
        )
        for attempt in range(1, attempts + 1):
            session.execute(terminate, [old])  # type: ignore[arg-type]
            try:
                session.execute(statement)
                return
            except sql_errors.ObjectInUse:
                if attempt == attempts:
                    raise
                time.sleep(0.05 * attempt)


def drop_database(admin_dsn: str | ConnectionInfo, name: str, passfile: str | Path | None = None) -> None:
    """Drop a staging database. Refuses any other name: Lifeline never drops real data."""
    if STAGING_MARKER not in name:
        raise ValueError(f"refusing to drop {name!r}: only Lifeline staging databases are ever dropped")
    connection = _connection_info(admin_dsn, passfile)
    with _session(connection, f"drop staging database {name!r} on") as session:
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
    maintenance_database: str = "postgres",
    load_timeout_seconds: float | None = None,
) -> DatabaseRestoreResult:
    """Load into a fresh staging database, verify row counts, then rename into place (moving an old one aside).

    expected_row_counts=None (a snapshot from before counts were recorded) verifies only that the dump loads.
    """
    started = time.monotonic()
    target = _connection_info(target_dsn, passfile)
    name = target.database
    admin = target.with_database(maintenance_database if maintenance_database != name else "template1")
    if not dump_is_complete(dump_path):  # psql would load a truncated COPY's rows and commit them
        raise DumpLoadFailed(f"restore into {target.address}: {Path(dump_path).name} is truncated (no pg_dump end line)")
    if not replace and database_exists(admin, name):
        raise TargetExists(f"database {target.address} already exists; restore with replace to move it aside")
    staging = _derived_name(name, STAGING_MARKER + secrets.token_hex(4))
    create_database(admin, staging)
    replaced_name: str | None = None
    try:
        load_dump(target.with_database(staging), dump_path, bin_dir=bin_dir, timeout_seconds=load_timeout_seconds)
        counts = count_rows(target.with_database(staging))
        problem = None if expected_row_counts is None else row_count_mismatch(expected_row_counts, counts)
        if problem:
            raise VerificationFailed(f"restore into {target.address} not verified: {problem}")
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
    verified = expected_row_counts is not None
    return DatabaseRestoreResult(target.address, name, staging, replaced_name, counts, verified, time.monotonic() - started)


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


def _connection_info(dsn: str | ConnectionInfo, passfile: str | Path | None) -> ConnectionInfo:
    """Parsed, with the passfile checked: libpq silently ignores a missing or group-readable one."""
    if isinstance(dsn, ConnectionInfo):
        connection = replaced_copy(dsn, passfile=Path(passfile)) if passfile is not None else dsn
    else:
        connection = ConnectionInfo.from_dsn(dsn, passfile)
    if connection.passfile and not connection.passfile.is_file():
        raise AuthenticationFailed(f"connect to {connection.address}: passfile {connection.passfile} does not exist")
    if connection.passfile and connection.passfile.stat().st_mode & 0o077:
        raise AuthenticationFailed(f"connect to {connection.address}: passfile {connection.passfile} must be mode 0600")
    return connection


def _open(connection: ConnectionInfo, action: str) -> psycopg.Connection:
    try:
        return psycopg.connect(**connection.connect_arguments(), autocommit=True)  # type: ignore[arg-type]
    except psycopg.Error as error:
        raise _translated(error, connection, action) from error


@contextmanager
def _session(connection: ConnectionInfo, action: str) -> Iterator[psycopg.Connection]:
    """An autocommit session whose database errors come out as PostgresError."""
    session = _open(connection, action)
    try:
        yield session
    except psycopg.Error as error:
        raise _translated(error, connection, action) from error
    finally:
        session.close()


def _translated(error: psycopg.Error, connection: ConnectionInfo, action: str) -> PostgresError:
    if isinstance(error, sql_errors.DuplicateDatabase):
        return TargetExists(f"{action} {connection.address}: {_one_line(str(error), connection)}")
    if isinstance(error, sql_errors.InvalidCatalogName):
        return DatabaseMissing(f"{action} {connection.address}: {_one_line(str(error), connection)}")
    if isinstance(error, sql_errors.ObjectInUse | sql_errors.LockNotAvailable | sql_errors.QueryCanceled):
        return PostgresError(f"{action} {connection.address}: {_one_line(str(error), connection)}", transient=True)
    return classify_failure(connection, action, str(error))


def _one_line(detail: str, connection: ConnectionInfo) -> str:
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"\b(ERROR|FATAL):", line)]
    line = (errors or lines or ["unknown error"])[0]
    location = re.match(r"psql:(?P<file>.*?):(?P<line>\d+): ", line)
    prefix = f"line {location.group('line')}: " if location else ""
    line = line.rsplit(" failed: ", 1)[-1]
    line = re.sub(r"^.*?\b(ERROR|FATAL):\s+", "", line)
    line = re.sub(r"^(pg_dump|psql|connection failed|error):\s*", "", line)
    line = re.sub(r"^error:\s*", "", line)
    if connection.password:
        line = line.replace(connection.password, "***")
    return (prefix + line)[:400]


def _connection_flags(connection: ConnectionInfo) -> tuple[str, ...]:
    host = ("--host", connection.host) if connection.host else ()
    database = connection.database
    if "=" in database or "://" in database:  # -d would read it as a connection string
        database = "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return (*host, "--port", str(connection.port), "--username", connection.user, "--dbname", database)


def _program(name: str, bin_dir: str | Path | None) -> str:
    return str(Path(bin_dir) / name) if bin_dir else name


def _run_tool(
    argv: Sequence[str], connection: ConnectionInfo, action: str, timeout_seconds: float | None
) -> None:
    """Run pg_dump or psql with the secret in its environment; a failure becomes a classified PostgresError."""
    program = Path(argv[0]).name
    try:
        result = run_command(argv, env=libpq_environment(connection=connection), timeout=timeout_seconds)
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
