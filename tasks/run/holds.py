"""Holds on repositories: while a repository is held, retention forgets nothing in it and prune removes nothing.

A data-leak recovery holds the compromised host's repository from its first step: it is the evidence and the only
source of the trusted snapshots, and the nightly backup's retention must not forget them while (or after) the
recovery copies them. A drill's clean-up releases its own hold; after an incident the operator does, with
`lifeline hold release`.
"""

from __future__ import annotations

from datetime import datetime

from lifeline.tasks.run.ledger import Ledger, patiently
from lifeline.tasks.run.ledger_tables import tables
from lifeline.tasks.run.record import utc_now
from pydantic import BaseModel, Field


class RepositoryHold(BaseModel):
    repository: str = Field(description="The repository's key: its name and a hash of its URL.")
    name: str = Field(description="The repository's name in the plan that held it.")
    url: str = Field(description="Where it is, without credentials.")
    reason: str
    run_id: str | None = Field(None, description="The run that placed the hold (its record id).")
    operator: str | None = Field(None, description="Who placed it by hand (`lifeline hold place`).")
    since: datetime = Field(default_factory=utc_now)

    @property
    def placed_by(self) -> str:
        return f"run {self.run_id}" if self.run_id else f"operator {self.operator}"

    def describe(self) -> str:
        return f"held by {self.placed_by} since {self.since.isoformat(timespec='seconds')}: {self.reason}"


class Holds:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @patiently
    def place(self, hold: RepositoryHold) -> RepositoryHold:
        """Hold the repository; one already held stays held by whoever held it first (returned). Two runs
        holding it at the same moment: the table's key lets one insert, the other gets the first's hold."""
        values = {"repository": hold.repository, "hold": hold.model_dump_json()}
        return self.ledger.insert_first(tables().holds, values, lambda: self.of(hold.repository)) or hold

    @patiently
    def of(self, repository: str) -> RepositoryHold | None:
        table = tables().holds
        with self.ledger.connection() as connection:
            row = connection.execute(table.select().where(table.c.repository == repository)).first()
        return RepositoryHold.model_validate_json(row.hold) if row else None

    @patiently
    def all(self) -> list[RepositoryHold]:
        table = tables().holds
        with self.ledger.connection() as connection:
            holds = [RepositoryHold.model_validate_json(row.hold) for row in connection.execute(table.select())]
        return sorted(holds, key=lambda hold: hold.since)

    @patiently
    def release(self, repository: str) -> RepositoryHold | None:
        """Release the hold on the repository; the hold released, or None when it was not held."""
        table = tables().holds
        with self.ledger.transaction() as connection:
            row = connection.execute(table.select().where(table.c.repository == repository)).first()
            if row is None:
                return None
            connection.execute(table.delete().where(table.c.repository == repository))
        return RepositoryHold.model_validate_json(row.hold)

    def release_placed_by(self, run_id: str) -> list[RepositoryHold]:
        """Release every hold the run placed (a drill's clean-up: its own holds, never an incident's)."""
        return [released for hold in self.all() if hold.run_id == run_id
                if (released := self.release(hold.repository)) is not None]
