"""The rows a moved-aside old primary holds that the new primary does not: found and written down.

Knows nothing of Prefect. The moved-aside data directory is opened as a throwaway hot standby
(standby.signal, no primary_conninfo, no restore_command, archive_mode off) on 127.0.0.1 and a spare
port of its own host: it replays its own WAL (crash recovery included), cannot write, and connects to
nothing. It is read with psql over SSH; the new primary is read directly. Per table, rows are matched
by primary key (by whole-row content for tables without one); each row is compared by the md5 of its
text form, taken under the same session settings on both sides.

The report, next to the moved-aside directory (`<dir>.rows.jsonl`, mode 0600, written atomically),
starts with a summary line, then one line per row: table, kind, key, and the row as PostgreSQL's JSON.
Kinds: `only_at_old_primary` (its key is absent at the new primary; for keyless tables, a row the new
primary lacks) and `differs` (the key is at both, the content is not: either side may have changed it).
The throwaway instance is stopped when done; the moved-aside directory keeps its standby.signal, so
starting it by mistake never makes a second primary.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import psycopg
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.postgres.connection import ConnectionInfo, connection_info, database_session
from lifeline.tasks.adapters.replication import (
    ReplicationError,
    ServerControlFailed,
    ServerState,
    Targets,
    instance_of,
    libpq_tool,
    remote,
    server_status,
    start_server,
    stop_server,
    target_of,
)
from lifeline.tasks.adapters.replication.database import DatabaseNode, ReplicatedDatabase
from lifeline.tasks.adapters.ssh import SshTarget

SPARE_PORT_OFFSET = 1000
SPARE_PORT_TRIES = 5
PAGE_ROWS = 50_000  # rows listed per psql call: keeps one answer well under the SSH adapter's 16 MiB cap
FETCH_BATCH = 1_000  # ctids per full-row fetch: keeps the command line far below the host's 128 KiB limit
ROW_ALIAS = "lifeline_split_row"  # a table alias no real column is likely to shadow
SESSION_SETTINGS = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, MDY'", "SET IntervalStyle = 'postgres'",
                    "SET extra_float_digits = 1", "SET bytea_output = 'hex'", "SET statement_timeout = 0")
_CTID = re.compile(r"^\(\d+,\d+\)$")

_TABLES_SQL = """
SELECT json_build_array(n.nspname, c.relname,
       (SELECT json_agg(a.attname ORDER BY k.position)
        FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary))::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY n.nspname, c.relname
"""


class SplitReportFailed(ReplicationError):
    pass


@dataclass(frozen=True)
class SplitReport:
    moved_aside_dir: Path
    report_file: Path
    rows_only_at_old_primary: dict[str, int] = field(default_factory=dict)  # table -> rows
    rows_differing: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Table:
    schema: str
    name: str
    key_columns: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def quoted(self) -> str:
        return f"{_identifier(self.schema)}.{_identifier(self.name)}"

    def key_expression(self) -> str:
        if not self.key_columns:
            return "NULL::text"
        columns = ", ".join(f"{ROW_ALIAS}.{_identifier(column)}" for column in self.key_columns)
        return f"json_build_array({columns})::text"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def report_file_for(moved_aside_dir: Path) -> Path:
    return moved_aside_dir.with_name(f"{moved_aside_dir.name}.rows.jsonl")


class _Throwaway:
    """psql, over SSH, against the throwaway instance on 127.0.0.1:<port> of the old primary's host."""

    def __init__(self, instance: DatabaseNode, target: SshTarget, port: int) -> None:
        dsn = ConnectionInfo.from_dsn(instance.dsn, instance.passfile)
        self.target = target
        self.argv = [*libpq_tool(instance, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                     "-h", "127.0.0.1", "-p", str(port), "-U", dsn.user, "-d", dsn.database,
                     "-c", "; ".join(SESSION_SETTINGS)]

    def lines(self, sql: str, timeout: float = 600.0) -> list[str]:
        result = remote(self.target, [*self.argv, "-c", sql], timeout, check=False)
        if not result.succeeded:
            raise SplitReportFailed(f"{self.target.label}: reading the moved-aside copy failed: {result.stderr_tail()}")
        return [line for line in result.stdout.splitlines() if line]


def _tables(throwaway: _Throwaway) -> list[_Table]:
    tables = []
    for line in throwaway.lines(_TABLES_SQL):
        schema, name, key_columns = json.loads(line)
        tables.append(_Table(schema, name, tuple(key_columns or ())))
    return tables


def _old_rows(throwaway: _Throwaway, table: _Table) -> Iterator[tuple[str, str, str]]:
    """(ctid, md5, key) of every row, a page at a time in ctid order (a TID range scan)."""
    last = "(0,0)"
    while True:
        page = throwaway.lines(
            f"SELECT {ROW_ALIAS}.ctid::text || '|' || md5({ROW_ALIAS}::text) || '|' || "
            f"coalesce({table.key_expression()}, '') FROM {table.quoted} {ROW_ALIAS} "
            f"WHERE {ROW_ALIAS}.ctid > '{last}'::tid ORDER BY {ROW_ALIAS}.ctid LIMIT {PAGE_ROWS}")
        for line in page:
            ctid, digest, key = line.split("|", 2)
            yield ctid, digest, key
        if len(page) < PAGE_ROWS:
            return
        last = page[-1].split("|", 1)[0]


def _new_rows(session: psycopg.Connection, table: _Table) -> dict[str, str] | Counter[str] | None:
    """Key -> md5 at the new primary (md5 -> count for a keyless table); None if the table is not there."""
    present = session.execute("SELECT to_regclass(%s) IS NOT NULL", (table.quoted,)).fetchone()
    if not present or not present[0]:
        return None
    rows = session.execute(f"SELECT {table.key_expression()}, md5({ROW_ALIAS}::text) FROM {table.quoted} {ROW_ALIAS}")
    if table.key_columns:
        return {key: digest for key, digest in rows}
    return Counter(digest for _, digest in rows)


def _compare(throwaway: _Throwaway, session: psycopg.Connection, table: _Table) -> dict[str, tuple[str, str]]:
    """ctid -> (kind, key) of each old-primary row the new primary does not have as it is."""
    new = _new_rows(session, table)
    found: dict[str, tuple[str, str]] = {}
    for ctid, digest, key in _old_rows(throwaway, table):
        if not _CTID.match(ctid):
            raise SplitReportFailed(f"unexpected row address {ctid!r} in {table.label}")
        if new is None:
            found[ctid] = ("only_at_old_primary", key)
        elif isinstance(new, Counter):
            if new[digest] > 0:
                new[digest] -= 1
            else:
                found[ctid] = ("only_at_old_primary", key)
        elif key not in new:
            found[ctid] = ("only_at_old_primary", key)
        elif new[key] != digest:
            found[ctid] = ("differs", key)
    return found


def _report_lines(throwaway: _Throwaway, table: _Table, found: dict[str, tuple[str, str]]) -> Iterator[str]:
    """One JSON line per row, with PostgreSQL's own JSON for the row and key (no float round trip)."""
    ctids = sorted(found)
    for start in range(0, len(ctids), FETCH_BATCH):
        batch = ctids[start:start + FETCH_BATCH]
        array = "{" + ",".join(f'"{ctid}"' for ctid in batch) + "}"
        for line in throwaway.lines(f"SELECT {ROW_ALIAS}.ctid::text || '|' || row_to_json({ROW_ALIAS})::text "
                                    f"FROM {table.quoted} {ROW_ALIAS} WHERE {ROW_ALIAS}.ctid = ANY('{array}'::tid[])"):
            ctid, row = line.split("|", 1)
            kind, key = found[ctid]
            yield (f'{{"table": {json.dumps(table.label)}, "kind": "{kind}", "key": {key or "null"}, '
                   f'"row": {row}}}\n')


def _existing_report(target: SshTarget, moved_aside_dir: Path) -> SplitReport | None:
    report = report_file_for(moved_aside_dir)
    result = remote(target, ["head", "-n", "1", report], check=False)
    if not result.succeeded or not result.stdout.strip():
        return None
    summary = json.loads(result.stdout)["split_report"]
    return SplitReport(moved_aside_dir, report, summary["rows_only_at_old_primary"], summary["rows_differing"])


def throwaway_options(port: int) -> str:
    """pg_ctl -o for the throwaway instance (the host's shell reads it: '' is an empty value)."""
    settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": "''", "archive_mode": "off",
                "hot_standby": "on", "primary_conninfo": "''", "primary_slot_name": "''", "restore_command": "''",
                "logging_collector": "off", "cluster_name": "lifeline-split-copy"}
    return f"-p {port} " + " ".join(f"-c {name}={value}" for name, value in settings.items())


def _start_throwaway(instance: DatabaseNode, target: SshTarget, moved_aside_dir: Path, port: int,
                     start_timeout: float) -> int:
    """Start the copy on `port`, or on one of the next few when something else holds it (a client's ephemeral
    port on a busy host); the port it listens on."""
    log_file = moved_aside_dir.with_name(f"{moved_aside_dir.name}.log")
    for candidate in range(port, port + SPARE_PORT_TRIES):
        try:
            start_server(instance, target, start_timeout, data_dir=moved_aside_dir,
                         server_options=throwaway_options(candidate), log_file=log_file)
            return candidate
        except ServerControlFailed as error:
            if "could not create" not in str(error) or candidate == port + SPARE_PORT_TRIES - 1:
                raise
    return port  # not reached: the last candidate returns or raises


def report_split(database: ReplicatedDatabase, site: str, moved_aside_dir: Path, new_primary_site: str, targets: Targets, *,
                 spare_port: int | None = None, start_timeout: float = 120.0) -> SplitReport:
    """Write (or, if already written, read back) the report of rows only the moved-aside old primary has."""
    instance = instance_of(database, site)
    target = target_of(instance, targets)
    existing = _existing_report(target, moved_aside_dir)
    if existing is not None:
        return existing
    port = spare_port or ConnectionInfo.from_dsn(instance.dsn).port + SPARE_PORT_OFFSET
    if server_status(instance, target, data_dir=moved_aside_dir).state is ServerState.RUNNING:
        stop_server(instance, target, data_dir=moved_aside_dir)  # left by an interrupted run: its port is unknown
    remote(target, ["touch", moved_aside_dir / "standby.signal"])
    port = _start_throwaway(instance, target, moved_aside_dir, port, start_timeout)
    try:
        throwaway = _Throwaway(instance, target, port)
        new_primary = instance_of(database, new_primary_site)
        connection = connection_info(new_primary.dsn, new_primary.passfile)
        only: dict[str, int] = {}
        differing: dict[str, int] = {}
        rows: list[str] = []
        with database_session(connection, f"compare {site}'s moved-aside copy with {new_primary_site}") as session:
            for setting in SESSION_SETTINGS:
                session.execute(setting)
            for table in _tables(throwaway):
                found = _compare(throwaway, session, table)
                kinds = Counter(kind for kind, _ in found.values())
                if kinds["only_at_old_primary"]:
                    only[table.label] = kinds["only_at_old_primary"]
                if kinds["differs"]:
                    differing[table.label] = kinds["differs"]
                rows.extend(_report_lines(throwaway, table, found))
    finally:
        stop_server(instance, target, data_dir=moved_aside_dir)
    report = SplitReport(moved_aside_dir, report_file_for(moved_aside_dir), only, differing)
    summary = {"split_report": {
        "site": site, "new_primary": new_primary_site, "moved_aside_dir": str(moved_aside_dir),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"), "database": ConnectionInfo.from_dsn(
            instance.dsn).database, "rows_only_at_old_primary": only, "rows_differing": differing}}
    ssh.write_file(target, PurePosixPath(report.report_file), "".join([json.dumps(summary) + "\n", *rows]).encode())
    return report
