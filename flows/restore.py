"""Restore a dataset: pick the snapshot, restore into staging, verify, and only then put it in place."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.settings import Settings, load_settings
from lifeline.tasks.adapters.restic import ResticRepository
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import Journal, Trigger
from lifeline.tasks.steps.recorded_run import recorded_run
from lifeline.tasks.steps.repositories import dataset_tags, open_repository
from lifeline.tasks.steps.restore import (
    ChosenSnapshot,
    RestoreRefused,
    choose_snapshot,
    put_in_place,
    refuse_occupied_target,
    restore_database,
    restore_to_staging,
    staging_beside,
)
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
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    with recorded_run("restore", loaded, settings, trigger=trigger, record_id=record_id) as journal:
        restore_dataset(loaded, settings, journal, dataset, target, snapshot=snapshot, as_of=as_of, replace=replace,
                        incident_at=incident_at)
        return journal.record.id


def restore_dataset(
    loaded: LoadedPlan, settings: Settings, journal: Journal, dataset: str, target: str, *,
    snapshot: str = "latest", as_of: datetime | None = None, replace: bool = False,
    incident_at: datetime | None = None, snapshot_ids: list[str] | None = None,
    repository: ResticRepository | None = None,
) -> ChosenSnapshot:
    """The restore runbook, for this flow and for drills; `snapshot_ids` limits the choice (a data leak).

    `repository` replaces the dataset's own repository (a data leak restores from the new, clean one).
    """
    plan, record = loaded.plan, journal.record
    record.incident_at = incident_at or record.incident_at or record.started_at
    journal.milestone("incident", record.incident_at)
    if dataset not in plan.datasets:
        raise RestoreRefused(f"dataset {dataset!r} is not in the plan (known: {', '.join(plan.datasets)})")
    entry = plan.datasets[dataset]
    repository = repository or open_repository(plan, entry.repository, settings)
    chosen = choose_snapshot(repository, dataset_tags(plan, dataset), snapshot, as_of, snapshot_ids,
                             journal=journal, step_name="choose snapshot")
    record.snapshots = [chosen.id]
    record.rpo_target_seconds = plan.rpo_target(dataset).total_seconds()
    record.rto_target_seconds = (entry.rto_minutes or plan.targets.rto_minutes) * 60
    if entry.postgres:
        facts = Ledger(settings.ledger).snapshot_facts(chosen.id)
        restore_database(
            repository, chosen, entry, target,
            facts.row_counts if facts else None, replace,
            settings.home_dir / "staging" / record.id, settings.locks_dir,
            journal=journal, step_name=f"restore {dataset} and verify row counts",
        )
    else:
        target_dir = Path(target).expanduser().absolute()
        refuse_occupied_target(target_dir, replace, journal=journal, step_name="check target")
        staged = restore_to_staging(
            repository, chosen, staging_beside(target_dir, record.id), settings.locks_dir,
            journal=journal, step_name=f"restore {dataset} to staging and verify",
        )
        record.bytes += staged.bytes
        put_in_place(staged, target_dir, replace, journal=journal, step_name="put in place")
    record.recovered_at = journal.milestone("recovered")
    record.rto_seconds = (record.recovered_at - record.incident_at).total_seconds()
    record.rpo_seconds = max(0.0, (record.incident_at - chosen.time).total_seconds())
    return chosen
