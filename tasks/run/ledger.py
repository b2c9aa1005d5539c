"""The ledger: every run's record, and the facts about every snapshot Lifeline made.

Any SQLAlchemy URL works (a SQLite file by default, PostgreSQL in production). Prefect's
own database is not the ledger: ephemeral Prefect runs do not keep all task history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.probes import redact_url
from lifeline.tasks.run.deliveries import Acknowledgement, Delivery, EscalationState
from lifeline.tasks.run.ledger_tables import engine_for, iso, tables
from lifeline.tasks.run.record import RunRecord, utc_now
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import sqlalchemy



class SnapshotFacts(BaseModel):
    """What Lifeline knew when it made a snapshot: the evidence a restore is verified against."""

    snapshot_id: str
    plan: str
    dataset: str
    repository: str
    recorded_at: datetime
    run_id: str
    row_counts: dict[str, int] | None = None
    files: int | None = None
    bytes: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)



class LedgerUnreachable(LifelineError):
    transient = True


class LedgerRefused(LifelineError):
    user_error = True  # a wrong URL, password or database name in the settings: waiting changes nothing


# What a database that is away (restarting, its host unreachable, the SQLite file locked) answers, as opposed
# to one that refuses us (a wrong password, no such database): only the first is worth waiting for.
AWAY = ("connection refused", "could not connect", "server closed the connection", "terminating connection",
        "connection reset", "timeout expired", "the database system is", "database is locked",
        "no such file or directory", "connection timed out", "no route to host")
PATIENCE_SECONDS = 60.0


def _one_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _is_operational(error: BaseException) -> bool:
    import sqlalchemy

    return isinstance(error, sqlalchemy.exc.OperationalError)


def _is_away(error: BaseException) -> bool:
    return _is_operational(error) and any(sign in str(error).lower() for sign in AWAY)


P = ParamSpec("P")
T = TypeVar("T")


def patiently(operation: Callable[P, T]) -> Callable[P, T]:
    """Try a read or an idempotent write again whole (within the ledger's patience) when the database goes away
    under a statement: a connection that passed its ping can still be closed by a server stopping mid-query."""

    @wraps(operation)
    def tried_again(*args: P.args, **kwargs: P.kwargs) -> T:
        owner = args[0]
        ledger = owner if isinstance(owner, Ledger) else owner.ledger  # type: ignore[attr-defined]
        deadline = time.monotonic() + ledger.patience_seconds
        while True:
            try:
                return operation(*args, **kwargs)
            except Exception as error:
                if not _is_away(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    return tried_again


class Ledger:
    def __init__(self, url: str, patience_seconds: float = PATIENCE_SECONDS):
        """`patience_seconds`: how long to wait for a database that is away before saying so."""
        self.url = url
        self.patience_seconds = patience_seconds

    @property
    def engine(self) -> sqlalchemy.Engine:
        return engine_for(self.url)

    def connection(self) -> sqlalchemy.Connection:
        """A connection, waiting up to `patience_seconds` while the database is away (never once a statement
        has run: nothing is written twice)."""
        deadline = time.monotonic() + self.patience_seconds
        while True:
            try:
                return self.engine.connect()
            except Exception as error:
                if not _is_away(error):
                    if _is_operational(error):
                        raise LedgerRefused(f"the ledger's database {redact_url(self.url)} refused us: "
                                            f"{_one_line(error)}") from None
                    raise
                if time.monotonic() >= deadline:
                    waited = f" for {self.patience_seconds:.0f} s" if self.patience_seconds else ""
                    raise LedgerUnreachable(f"the ledger's database {redact_url(self.url)} could not be reached"
                                            f"{waited}: {_one_line(error)}") from None
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    @contextmanager
    def transaction(self) -> Iterator[sqlalchemy.Connection]:
        with self.connection() as connection, connection.begin():
            yield connection

    def insert_first(self, table: sqlalchemy.Table, values: dict[str, Any], existing: Callable[[], T | None]) -> T | None:
        """Insert the row unless its key is taken: None when inserted, else the row there first (`existing()`).
        The key decides between two writers at the same moment; a row deleted in between is inserted now."""
        import sqlalchemy

        while True:
            try:
                with self.transaction() as connection:
                    connection.execute(table.insert().values(**values))
                return None
            except sqlalchemy.exc.IntegrityError:
                if (there := existing()) is not None:
                    return there

    @patiently
    def save_run(self, record: RunRecord) -> None:
        row = {
            "id": record.id,
            "kind": record.kind,
            "plan": record.plan,
            "status": record.status,
            "started_at": iso(record.started_at),
            "record": record.model_dump_json(),
            "parent_id": record.parent_id,
        }
        runs_table = tables().runs
        with self.transaction() as connection:
            updated = connection.execute(
                runs_table.update().where(runs_table.c.id == record.id).values(**row)
            ).rowcount
            if not updated:
                connection.execute(runs_table.insert().values(**row))

    @patiently
    def runs(self, *, kind: str | None = None, plan: str | None = None, status: str | None = None,
             last: int | None = None, own_only: bool = False) -> list[RunRecord]:
        """Newest first. `own_only`: leave out runs another run started (a drill's failback)."""
        runs_table = tables().runs
        query = runs_table.select().with_only_columns(runs_table.c.record).order_by(runs_table.c.started_at.desc())
        if kind:
            query = query.where(runs_table.c.kind == kind)
        if plan:
            query = query.where(runs_table.c.plan == plan)
        if status:
            query = query.where(runs_table.c.status == status)
        if own_only:
            query = query.where(runs_table.c.parent_id.is_(None))
        if last:
            query = query.limit(last)
        with self.connection() as connection:
            return [RunRecord.model_validate_json(text) for (text,) in connection.execute(query)]

    @patiently
    def run(self, run_id: str) -> RunRecord | None:
        runs_table = tables().runs
        query = runs_table.select().with_only_columns(runs_table.c.record).where(runs_table.c.id.startswith(run_id))
        with self.connection() as connection:
            rows = connection.execute(query).all()
        return RunRecord.model_validate_json(rows[0][0]) if len(rows) == 1 else None

    @patiently
    def children(self, parent_id: str) -> list[RunRecord]:
        """The runs `parent_id` started, in the order they started."""
        runs_table = tables().runs
        query = (runs_table.select().with_only_columns(runs_table.c.record)
                 .where(runs_table.c.parent_id == parent_id).order_by(runs_table.c.started_at))
        with self.connection() as connection:
            return [RunRecord.model_validate_json(text) for (text,) in connection.execute(query)]

    def record_snapshots(self, facts: Iterable[SnapshotFacts]) -> None:
        self._record_snapshots(list(facts))

    @patiently
    def _record_snapshots(self, facts: list[SnapshotFacts]) -> None:
        snapshots_table = tables().snapshots
        with self.transaction() as connection:
            for fact in facts:
                connection.execute(snapshots_table.delete().where(snapshots_table.c.snapshot_id == fact.snapshot_id))
                connection.execute(
                    snapshots_table.insert().values(
                        snapshot_id=fact.snapshot_id,
                        plan=fact.plan,
                        dataset=fact.dataset,
                        repository=fact.repository,
                        recorded_at=iso(fact.recorded_at),
                        run_id=fact.run_id,
                        facts=fact.model_dump_json(),
                    )
                )

    @patiently
    def snapshot_facts(self, snapshot_id: str) -> SnapshotFacts | None:
        snapshots_table = tables().snapshots
        query = snapshots_table.select().with_only_columns(snapshots_table.c.facts).where(
            snapshots_table.c.snapshot_id == snapshot_id)
        with self.connection() as connection:
            row = connection.execute(query).first()
        return SnapshotFacts.model_validate_json(row[0]) if row else None

    @patiently
    def snapshots_recorded(self, plan: str, dataset: str, before: datetime | None = None) -> list[SnapshotFacts]:
        snapshots_table = tables().snapshots
        query = (
            snapshots_table.select().with_only_columns(snapshots_table.c.facts)
            .where(snapshots_table.c.plan == plan, snapshots_table.c.dataset == dataset)
            .order_by(snapshots_table.c.recorded_at)
        )
        if before is not None:
            query = query.where(snapshots_table.c.recorded_at < iso(before))
        with self.connection() as connection:
            return [SnapshotFacts.model_validate_json(text) for (text,) in connection.execute(query)]

    @patiently
    def record_maintenance(self, repository: str, operation: str, at: datetime, run_id: str) -> None:
        table = tables().maintenance
        key = (table.c.repository == repository) & (table.c.operation == operation)
        with self.transaction() as connection:
            connection.execute(table.delete().where(key))
            connection.execute(table.insert().values(repository=repository, operation=operation, at=iso(at),
                                                     run_id=run_id))

    @patiently
    def last_maintenance(self, repository: str, operation: str) -> datetime | None:
        table = tables().maintenance
        query = table.select().with_only_columns(table.c.at).where(
            table.c.repository == repository, table.c.operation == operation)
        with self.connection() as connection:
            row = connection.execute(query).first()
        return datetime.fromisoformat(row[0]) if row else None


class Deliveries:
    """The deliveries and acknowledgements part of the ledger (same database)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def record(self, delivery: Delivery) -> None:
        table = tables().deliveries
        with self.ledger.transaction() as connection:
            connection.execute(table.insert().values(run_id=delivery.run_id, message_id=delivery.message_id,
                                                     at=iso(delivery.at), delivery=delivery.model_dump_json()))

    def confirm(self, message_id: str, by: str) -> Delivery | None:
        """A person says they delivered a manual message: its latest attempt becomes `confirmed`."""
        table = tables().deliveries
        with self.ledger.transaction() as connection:
            row = connection.execute(table.select().where(table.c.message_id.startswith(message_id))
                                     .order_by(table.c.id.desc())).first()
            if row is None:
                return None
            delivery = Delivery.model_validate_json(row.delivery)
            if delivery.status != "awaiting_confirmation":
                return delivery
            confirmed = delivery.model_copy(update={"status": "confirmed", "answer": f"confirmed by {by}",
                                                    "at": utc_now()})
            connection.execute(table.insert().values(run_id=confirmed.run_id, message_id=confirmed.message_id,
                                                     at=iso(confirmed.at), delivery=confirmed.model_dump_json()))
            return confirmed

    def of_run(self, run_id: str, *, with_cut_off: bool = False) -> list[Delivery]:
        """Every attempt's outcome, in order; `with_cut_off`: and the messages cut off (see `cut_off`), in one read."""
        rows = self._rows_of_run(run_id)
        outcomes = [delivery for delivery in rows if delivery.status != "sending"]
        return outcomes + _cut_off(rows) if with_cut_off else outcomes

    def cut_off(self, run_id: str) -> list[Delivery]:
        """Messages whose last attempt was being sent when the run's process died: nobody knows if they went."""
        return _cut_off(self._rows_of_run(run_id))

    @patiently
    def _rows_of_run(self, run_id: str) -> list[Delivery]:
        table = tables().deliveries
        query = table.select().with_only_columns(table.c.delivery).where(table.c.run_id == run_id).order_by(table.c.id)
        with self.ledger.connection() as connection:
            return [Delivery.model_validate_json(text) for (text,) in connection.execute(query)]

    def acknowledge(self, acknowledgement: Acknowledgement) -> Acknowledgement:
        """The first acknowledgement of a run stands; a later one returns it unchanged."""
        existing = self.acknowledgement(acknowledgement.run_id)
        if existing is not None:
            return existing
        import sqlalchemy

        table = tables().acknowledgements
        try:
            with self.ledger.transaction() as connection:
                connection.execute(table.insert().values(run_id=acknowledgement.run_id,
                                                         acknowledgement=acknowledgement.model_dump_json()))
        except sqlalchemy.exc.IntegrityError:  # somebody acknowledged at the same moment
            return self.acknowledgement(acknowledgement.run_id) or acknowledgement
        return acknowledgement

    @patiently
    def acknowledgement(self, run_id: str) -> Acknowledgement | None:
        table = tables().acknowledgements
        query = table.select().with_only_columns(table.c.acknowledgement).where(table.c.run_id == run_id)
        with self.ledger.connection() as connection:
            row = connection.execute(query).first()
        return Acknowledgement.model_validate_json(row[0]) if row else None


def _cut_off(rows: list[Delivery]) -> list[Delivery]:
    last_of_message = {delivery.message_id: delivery for delivery in rows}
    return [delivery for delivery in last_of_message.values() if delivery.status == "sending"]


def record_as_json(records: list[RunRecord]) -> str:
    return json.dumps([json.loads(record.model_dump_json()) for record in records], indent=2)


class Escalations:
    """The escalations part of the ledger (same database): one row per run that escalates."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @patiently
    def save(self, state: EscalationState) -> None:
        table = tables().escalations
        values = {"plan": state.plan, "status": state.status, "escalation": state.model_dump_json()}
        with self.ledger.transaction() as connection:
            if connection.execute(table.update().where(table.c.run_id == state.run_id).values(**values)).rowcount == 0:
                connection.execute(table.insert().values(run_id=state.run_id, **values))

    @patiently
    def get(self, run_id: str) -> EscalationState | None:
        table = tables().escalations
        with self.ledger.connection() as connection:
            row = connection.execute(table.select().with_only_columns(table.c.escalation)
                                     .where(table.c.run_id == run_id)).first()
        return EscalationState.model_validate_json(row[0]) if row else None

    @patiently
    def still_open(self, plan: str) -> list[EscalationState]:
        table = tables().escalations
        query = table.select().with_only_columns(table.c.escalation).where(table.c.plan == plan,
                                                                            table.c.status == "open")
        with self.ledger.connection() as connection:
            return [EscalationState.model_validate_json(text) for (text,) in connection.execute(query)]
