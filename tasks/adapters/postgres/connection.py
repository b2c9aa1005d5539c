"""PostgreSQL connections: DSNs, passfiles, sessions, and errors that explain themselves in one line.

A password travels only through a libpq passfile (PGPASSFILE) or, when a DSN embeds one, through
PGPASSWORD in a child's environment: never on a command line, never in a message.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from dataclasses import replace as replaced_copy
from pathlib import Path

import psycopg
from lifeline.tasks.adapters.errors import LifelineError
from psycopg import errors as sql_errors
from psycopg.conninfo import conninfo_to_dict

DEFAULT_CONNECT_TIMEOUT_SECONDS = 10

APPLICATION_NAME = "lifeline"

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


class LoginRefused(PostgresError):
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


class RowCountsDiffer(PostgresError):
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
    statement_timeout: str | None = None  # e.g. "5s": the server cancels any longer statement of the session

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

    def with_database(self, database: str) -> ConnectionInfo:
        return replaced_copy(self, database=database)

    def connect_arguments(self) -> dict[str, str | int]:
        """Keyword arguments for psycopg.connect."""
        arguments = {
            "host": self.host, "port": self.port, "user": self.user, "dbname": self.database,
            "passfile": str(self.passfile) if self.passfile else None, "password": self.password,
            "connect_timeout": self.connect_timeout_seconds, "application_name": APPLICATION_NAME,
        }
        if self.statement_timeout:
            arguments["options"] = f"-c statement_timeout={self.statement_timeout}"
        return {key: value for key, value in arguments.items() if value is not None} | dict(self.options)


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
        if connection.statement_timeout:
            environment["PGOPTIONS"] = f"-c statement_timeout={connection.statement_timeout}"
        if connection.password:
            environment["PGPASSWORD"] = connection.password
    return environment


def classify_failure(connection: ConnectionInfo, action: str, detail: str) -> PostgresError:
    """Turn libpq/psql/pg_dump error text into the right PostgresError, one line, password scrubbed."""
    reason = one_line(detail, connection)
    lowered = reason.lower()
    message = f"{action} {connection.address}: {reason}"
    if re.search(r'database ".*" does not exist', lowered):
        return DatabaseMissing(message)
    if re.search(r'role ".*" does not exist', lowered) or any(sign in lowered for sign in _AUTHENTICATION_SIGNS):
        return LoginRefused(message)
    if any(sign in lowered for sign in _TRANSIENT_SIGNS):
        return ConnectionFailed(message)
    return PostgresError(message)


def connection_info(dsn: str | ConnectionInfo, passfile: str | Path | None) -> ConnectionInfo:
    """Parsed, with the passfile checked: libpq silently ignores a missing or group-readable one."""
    if isinstance(dsn, ConnectionInfo):
        connection = replaced_copy(dsn, passfile=Path(passfile)) if passfile is not None else dsn
    else:
        connection = ConnectionInfo.from_dsn(dsn, passfile)
    if connection.passfile and not connection.passfile.is_file():
        raise LoginRefused(f"connect to {connection.address}: passfile {connection.passfile} does not exist")
    if connection.passfile and connection.passfile.stat().st_mode & 0o077:
        raise LoginRefused(f"connect to {connection.address}: passfile {connection.passfile} must be mode 0600")
    return connection


def open_connection(connection: ConnectionInfo, action: str) -> psycopg.Connection:
    try:
        return psycopg.connect(**connection.connect_arguments(), autocommit=True)  # type: ignore[arg-type]
    except psycopg.Error as error:
        raise translated_error(error, connection, action) from error


@contextmanager
def database_session(connection: ConnectionInfo, action: str) -> Iterator[psycopg.Connection]:
    """An autocommit session whose database errors come out as PostgresError."""
    session = open_connection(connection, action)
    try:
        yield session
    except psycopg.Error as error:
        raise translated_error(error, connection, action) from error
    finally:
        session.close()


def translated_error(error: psycopg.Error, connection: ConnectionInfo, action: str) -> PostgresError:
    if isinstance(error, sql_errors.DuplicateDatabase):
        return TargetExists(f"{action} {connection.address}: {one_line(str(error), connection)}")
    if isinstance(error, sql_errors.InvalidCatalogName):
        return DatabaseMissing(f"{action} {connection.address}: {one_line(str(error), connection)}")
    if isinstance(error, sql_errors.ObjectInUse | sql_errors.LockNotAvailable | sql_errors.QueryCanceled):
        return PostgresError(f"{action} {connection.address}: {one_line(str(error), connection)}", transient=True)
    return classify_failure(connection, action, str(error))


def one_line(detail: str, connection: ConnectionInfo) -> str:
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
