"""The ledger's tables and its engine: SQLAlchemy, imported at first use, one engine per URL.

Split from ledger.py, which reads and writes the rows; tasks/run/public.py uses the same tables.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import sqlalchemy

class _Sql(NamedTuple):
    metadata: sqlalchemy.MetaData
    runs: sqlalchemy.Table
    snapshots: sqlalchemy.Table
    deliveries: sqlalchemy.Table
    acknowledgements: sqlalchemy.Table
    escalations: sqlalchemy.Table
    maintenance: sqlalchemy.Table
    alerts: sqlalchemy.Table
    status_updates: sqlalchemy.Table
    modes: sqlalchemy.Table
    holds: sqlalchemy.Table


@cache
def tables() -> _Sql:
    """SQLAlchemy and the ledger's tables, at first use: importing SQLAlchemy takes ~0.2 s, which every
    served flow run would otherwise spend before it even starts (issue 5's start latency)."""
    import sqlalchemy as sa

    metadata = sa.MetaData()
    runs = sa.Table(
        "runs",
        metadata,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False, index=True),
        sa.Column("plan", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.String(40), nullable=False, index=True),  # ISO 8601, UTC: sorts as time
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("parent_id", sa.String(32), nullable=True, index=True),
    )
    snapshots = sa.Table(
        "snapshots",
        metadata,
        sa.Column("snapshot_id", sa.String(64), primary_key=True),
        sa.Column("plan", sa.String(64), nullable=False, index=True),
        sa.Column("dataset", sa.String(64), nullable=False, index=True),
        sa.Column("repository", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("facts", sa.Text, nullable=False),
    )
    deliveries = sa.Table(
        "deliveries",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False, index=True),
        sa.Column("message_id", sa.String(64), nullable=False, index=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("delivery", sa.Text, nullable=False),
    )
    acknowledgements = sa.Table(
        "acknowledgements",
        metadata,
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("acknowledgement", sa.Text, nullable=False),
    )
    escalations = sa.Table(
        "escalations",
        metadata,
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("plan", sa.String(200), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("escalation", sa.Text, nullable=False),
    )
    maintenance = sa.Table(  # a repository's last prune and last check, whichever plan or worker ran them
        "maintenance",
        metadata,
        sa.Column("repository", sa.String(200), primary_key=True),  # its name and a hash of its URL
        sa.Column("operation", sa.String(16), primary_key=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
    )
    alerts = sa.Table(  # every warning intake took, once per key: what makes intake idempotent
        "alerts",
        metadata,
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("plan", sa.String(64), nullable=False, index=True),
        sa.Column("received_at", sa.String(40), nullable=False),
        sa.Column("alert", sa.Text, nullable=False),
    )
    status_updates = sa.Table(  # what the public status page said, and who approved it
        "status_updates",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("plan", sa.String(64), nullable=False, index=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("update", sa.Text, nullable=False),
    )
    modes = sa.Table(  # operating modes a warning turned on (staff shortage), until when
        "modes",
        metadata,
        sa.Column("plan", sa.String(64), primary_key=True),
        sa.Column("mode", sa.String(32), primary_key=True),
        sa.Column("until", sa.String(40), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
    )
    holds = sa.Table(  # repositories nothing may forget or prune in (a data-leak recovery's evidence)
        "holds",
        metadata,
        sa.Column("repository", sa.String(200), primary_key=True),  # repository_key: its name and a hash of its URL
        sa.Column("hold", sa.Text, nullable=False),
    )
    return _Sql(metadata, runs, snapshots, deliveries, acknowledgements, escalations, maintenance, alerts,
                status_updates, modes, holds)



def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


_ENGINE_LOCK = threading.Lock()
SQLITE_BUSY_SECONDS = 60.0  # the ledger's patience (ledger.PATIENCE_SECONDS)


def engine_for(url: str) -> sqlalchemy.Engine:
    """One engine per URL; the first use creates the tables, once even when threads (a run's deliveries) race."""
    with _ENGINE_LOCK:
        return _new_engine(url)


@cache
def _new_engine(url: str) -> sqlalchemy.Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    import sqlalchemy

    # SQLite makes a writer wait for another's lock up to `timeout` (5 s by default), then answers "database is
    # locked" without running the statement. A busy machine (a drill's deliveries beside nightly backups) can hold
    # a write longer than 5 s: wait as long as the ledger's patience instead.
    sqlite_waits = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}} if url.startswith("sqlite") else {}
    engine = sqlalchemy.create_engine(url, pool_pre_ping=True, **sqlite_waits)
    tables().metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: sqlalchemy.Engine) -> None:
    """A ledger made before runs had a parent gets the column (and its index); its runs have no parent."""
    import sqlalchemy

    runs_table = tables().runs

    def has_column() -> bool:
        return "parent_id" in {column["name"] for column in sqlalchemy.inspect(engine).get_columns(runs_table.name)}

    if has_column():
        return
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"ALTER TABLE {runs_table.name} ADD COLUMN parent_id VARCHAR(32)"))
    except sqlalchemy.exc.DBAPIError:
        if not has_column():  # not another process adding it at the same moment
            raise
    for index in runs_table.indexes:
        if "parent_id" in index.columns:
            index.create(engine, checkfirst=True)
