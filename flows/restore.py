"""Restore a dataset: pick the snapshot, restore into staging, verify, and only then put it in place."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from lifeline.configs.loading import load_plan
from lifeline.configs.settings import load_settings
from lifeline.tasks.run.record import Trigger
from lifeline.tasks.steps.recorded_run import recorded_run
from lifeline.tasks.steps.restore import restore_dataset
from prefect import flow


@flow(name="restore", log_prints=False)
def restore_flow(
    plan_path: str,
    dataset: str,
    target: str,
    snapshot: str = "latest",
    as_of: datetime | None = None,
    replace: bool = False,
    incident_at: datetime | None = None,
    trigger: Trigger = "cli",
    record_id: str | None = None,
    parent_id: str | None = None,
) -> str:
    """Restore a dataset's snapshot to a folder or database, verified before it is put in place.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        dataset: The dataset to restore, as named in the plan.
        target: A folder for files; a postgresql:// DSN (no password) for a database.
        snapshot: A snapshot id (or its first characters), or latest.
        as_of: Restore the newest snapshot taken at or before this time instead.
        replace: Move existing data at the target aside instead of refusing; nothing is deleted.
        incident_at: When the data was lost, for the RPO; default the run's start.
        trigger: Who started the run: schedule, ui or cli.
        record_id: Id for the run record (the CLI sets it); empty for a new one.
        parent_id: The run that started this restore (a failover's runbook, a drill); empty for a restore of its own.
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    with recorded_run("restore", loaded, settings, trigger=trigger, record_id=record_id,
                      parent_id=parent_id) as journal:
        restore_dataset(loaded, settings, journal, dataset, target, snapshot=snapshot, as_of=as_of, replace=replace,
                        incident_at=incident_at)
        return journal.record.id

