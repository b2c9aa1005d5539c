"""Repair chosen tables of a live database from a restored copy, in one transaction: the live rows are first
kept aside in a schema of their own, then each table is made equal to the copy row by row (by primary key:
changed rows updated, missing rows inserted, rows the copy lacks deleted), so rows other tables reference stay
where they are. Other tables are not touched; any failure rolls the whole repair back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from lifeline.tasks.adapters.postgres.connection import ConnectionInfo, PostgresError, database_session
from psycopg import sql


class RepairRefused(PostgresError):
    user_error = True


@dataclass(frozen=True)
class TableRepaired:
    table: str  # schema.table
    rows_kept_aside: int  # the live rows before the repair, now in the aside schema
    rows_updated: int
    rows_inserted: int
    rows_deleted: int


def qualified(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return schema or "public", table


_COLUMNS = """
SELECT a.attname, coalesce(a.attnum = ANY(i.indkey), false)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attgenerated = ''
ORDER BY a.attnum
"""


def _columns(session: psycopg.Connection, name: str) -> tuple[list[str], list[str]]:
    """(columns, primary key columns); no columns: no such table."""
    rows = session.execute(_COLUMNS, qualified(name)).fetchall()
    return [column for column, _ in rows], [column for column, in_key in rows if in_key]


def _count(session: psycopg.Connection, statement: sql.Composed) -> int:
    cursor = session.execute(statement)
    return cursor.rowcount if cursor.rowcount is not None and cursor.rowcount >= 0 else 0


def _repair_one(target: psycopg.Connection, source: psycopg.Connection, name: str, aside_schema: str,
                columns: list[str], key: list[str]) -> TableRepaired:
    schema, table = qualified(name)
    live, aside, copy = sql.Identifier(schema, table), sql.Identifier(aside_schema, table), sql.Identifier(
        f"lifeline_restored_{table}")
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    target.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(live))
    target.execute(sql.SQL("CREATE TABLE {} AS TABLE {}").format(aside, live))
    kept = target.execute(sql.SQL("SELECT count(*) FROM {}").format(aside)).fetchone()[0]
    target.execute(sql.SQL("CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                   .format(copy, names, live))
    with source.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)").format(names, live)) \
            as reading, target.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(copy)) as writing:
        for chunk in reading:
            writing.write(chunk)
    same_key = sql.SQL(" AND ").join(sql.SQL("l.{0} = r.{0}").format(sql.Identifier(column)) for column in key)
    others = [column for column in columns if column not in key]
    updated = _count(target, sql.SQL("UPDATE {} AS l SET ({}) = ROW({}) FROM {} AS r WHERE {} AND ({}) IS DISTINCT "
                                     "FROM ({})").format(
        live, sql.SQL(", ").join(map(sql.Identifier, others)),
        sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(column)) for column in others), copy, same_key,
        sql.SQL(", ").join(sql.SQL("l.{}").format(sql.Identifier(column)) for column in others),
        sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(column)) for column in others))) if others else 0
    deleted = _count(target, sql.SQL("DELETE FROM {} AS l WHERE NOT EXISTS (SELECT 1 FROM {} AS r WHERE {})")
                     .format(live, copy, same_key))
    inserted = _count(target, sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} AS r WHERE NOT "
                                      "EXISTS (SELECT 1 FROM {} AS l WHERE {})").format(
        live, names, names, copy, live, same_key))
    return TableRepaired(f"{schema}.{table}", int(kept), updated, inserted, deleted)


def refuse_unrepairable(live: ConnectionInfo, tables: Sequence[str]) -> None:
    """Before any restore: each table exists at `live` and has a primary key to match rows by."""
    if not tables:
        raise RepairRefused("a repair names at least one table")
    with database_session(live, "look at the tables to repair at") as session:
        for name in tables:
            columns, key = _columns(session, name)
            if not columns:
                raise RepairRefused(f"{live.address}: no table {name}")
            if not key:
                raise RepairRefused(f"{live.address}: table {name} has no primary key: rows cannot be matched")


def repair_tables(live: ConnectionInfo, restored: ConnectionInfo, tables: Sequence[str],
                  aside_schema: str) -> list[TableRepaired]:
    """Make `tables` at `live` what they are at `restored`, in one transaction that first copies their live rows
    into `aside_schema`. A table needs a primary key, and the same columns on both sides."""
    with database_session(restored, "read the restored tables at") as source, \
            database_session(live, "repair tables at") as target:
        shapes = {}
        for name in tables:
            columns, key = _columns(target, name)
            restored_columns, _ = _columns(source, name)
            if not columns or not restored_columns:
                raise RepairRefused(f"{(live if not columns else restored).address}: no table {name}")
            if not key:
                raise RepairRefused(f"{live.address}: table {name} has no primary key: rows cannot be matched")
            if columns != restored_columns:
                raise RepairRefused(f"table {name} has columns {', '.join(columns)} now but "
                                    f"{', '.join(restored_columns)} at the restored point: repair it by hand from "
                                    f"the staging cluster")
            shapes[name] = (columns, key)
        with target.transaction():
            target.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(aside_schema)))
            return [_repair_one(target, source, name, aside_schema, *shapes[name]) for name in tables]
