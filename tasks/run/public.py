"""The ledger's record of the outside world: warnings intake took (once per key), and what the public
status page said, who approved it and when it went out."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from lifeline.tasks.run.ledger import Ledger, patiently
from lifeline.tasks.run.ledger_tables import iso, tables
from lifeline.tasks.run.record import utc_now
from pydantic import BaseModel, Field

AlertOutcome = Literal["started", "ignored"]
ComponentStatus = Literal["operational", "degraded", "partial_outage", "major_outage", "maintenance"]


class TakenAlert(BaseModel):
    key: str
    plan: str
    received_at: datetime = Field(default_factory=utc_now)
    outcome: AlertOutcome
    run_id: str | None = Field(None, description="The Lifeline run it started (its record id).")
    flow_run_id: str | None = None
    reason: str = Field("", description="Why it started nothing, when it did not.")
    refers_to: list[str] = Field(default_factory=list, description="Keys of the alerts it updates or cancels.")
    alert: dict = Field(default_factory=dict, description="The alert as parsed.")


class Alerts:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def take(self, taken: TakenAlert) -> tuple[bool, TakenAlert]:
        """(True, it) when this key is new; (False, the one taken first) when it is not."""
        values = {"key": taken.key, "plan": taken.plan, "received_at": iso(taken.received_at),
                  "alert": taken.model_dump_json()}
        first = self.ledger.insert_first(tables().alerts, values, lambda: self.get(taken.key))
        return (True, taken) if first is None else (False, first)

    @patiently
    def update(self, taken: TakenAlert) -> None:
        table = tables().alerts
        with self.ledger.transaction() as connection:
            connection.execute(table.update().where(table.c.key == taken.key).values(alert=taken.model_dump_json()))

    @patiently
    def release(self, key: str) -> None:
        """Forget a key whose run could not be started, so that the sender's retry starts it."""
        table = tables().alerts
        with self.ledger.transaction() as connection:
            connection.execute(table.delete().where(table.c.key == key))

    @patiently
    def get(self, key: str) -> TakenAlert | None:
        table = tables().alerts
        with self.ledger.connection() as connection:
            row = connection.execute(table.select().with_only_columns(table.c.alert).where(table.c.key == key)).first()
        return TakenAlert.model_validate_json(row[0]) if row else None

    @patiently
    def of_plan(self, plan: str, last: int = 100) -> list[TakenAlert]:
        table = tables().alerts
        query = (table.select().with_only_columns(table.c.alert).where(table.c.plan == plan)
                 .order_by(table.c.received_at.desc()).limit(last))
        with self.ledger.connection() as connection:
            return [TakenAlert.model_validate_json(text) for (text,) in connection.execute(query)]


class StatusUpdate(BaseModel):
    """One post on the status page: the components' statuses then, and the incident's text in both languages."""

    plan: str
    incident: str = Field(description="The incident it belongs to: the run id, or the alert's key.")
    title: dict[str, str] = Field(description="zh and en")
    text: dict[str, str] = Field(description="zh and en")
    components: dict[str, ComponentStatus]
    resolved: bool = False
    exercise: bool = False
    at: datetime = Field(default_factory=utc_now)
    approved_by: str = ""
    run_id: str = ""


class StatusUpdates:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def add(self, update: StatusUpdate) -> None:
        table = tables().status_updates
        with self.ledger.transaction() as connection:
            connection.execute(table.insert().values(plan=update.plan, at=iso(update.at),
                                                     update=update.model_dump_json()))

    @patiently
    def of_plan(self, plan: str) -> list[StatusUpdate]:
        """Oldest first."""
        table = tables().status_updates
        query = table.select().with_only_columns(table.c.update).where(table.c.plan == plan).order_by(table.c.id)
        with self.ledger.connection() as connection:
            return [StatusUpdate.model_validate_json(text) for (text,) in connection.execute(query)]


class Modes:
    """Operating modes a warning turns on for a while: `staff-shortage` (deputies approve from the start)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @patiently
    def turn_on(self, plan: str, mode: str, until: datetime, run_id: str) -> None:
        table = tables().modes
        with self.ledger.transaction() as connection:
            connection.execute(table.delete().where(table.c.plan == plan, table.c.mode == mode))
            connection.execute(table.insert().values(plan=plan, mode=mode, until=iso(until), run_id=run_id))

    @patiently
    def turn_off(self, plan: str, mode: str) -> None:
        table = tables().modes
        with self.ledger.transaction() as connection:
            connection.execute(table.delete().where(table.c.plan == plan, table.c.mode == mode))

    @patiently
    def active_until(self, plan: str, mode: str) -> datetime | None:
        """When the mode ends, if it is on now."""
        table = tables().modes
        with self.ledger.connection() as connection:
            row = connection.execute(table.select().with_only_columns(table.c.until)
                                     .where(table.c.plan == plan, table.c.mode == mode)).first()
        until = datetime.fromisoformat(row[0]) if row else None
        return until if until is not None and until > utc_now() else None
