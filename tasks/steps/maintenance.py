"""When a backup run prunes and checks a repository: when the last prune or check the ledger holds for it
is older than the plan's `prune_every_hours` or `checks.every_hours`, as borgmatic's check frequencies do.

A nightly backup then still prunes and checks every night, while a backup an operator starts by hand an
hour later costs only the backup: on a tiny dataset, prune and check are most of a run's time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from lifeline.configs.plan import Plan
from lifeline.tasks.adapters.restic import ResticRepository
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.steps.repository_slots import repository_key

Operation = Literal["prune", "check"]


def every_hours(plan: Plan, repository_name: str, operation: Operation) -> float:
    return plan.checks.every_hours if operation == "check" else plan.repositories[repository_name].prune_every_hours


def not_due(plan: Plan, repository_name: str, repository: ResticRepository, operation: Operation, ledger: Ledger,
            now: datetime) -> str | None:
    """Why `operation` is not due on the repository now (the reason recorded for a skipped step), else None."""
    every = every_hours(plan, repository_name, operation)
    last = ledger.last_maintenance(repository_key(repository), operation) if every else None
    if last is None or now - last >= timedelta(hours=every):
        return None
    minutes = (now - last).total_seconds() / 60
    ago = f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"
    return f"not due: last {operation} {ago} ago, due every {every:g} h (`lifeline backup --maintain` runs it now)"


def record_done(ledger: Ledger, repository: ResticRepository, operation: Operation, at: datetime, run_id: str) -> None:
    ledger.record_maintenance(repository_key(repository), operation, at, run_id)
