"""Nightly backup: every dataset into its repository, retention, off-site copy, and prune and integrity
check when they are due (tasks/steps/maintenance.py).

Repositories work in parallel; within one repository its slots (a Prefect global concurrency limit) order
the exclusive steps.
"""

from __future__ import annotations

from pathlib import Path

from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.settings import Settings, load_settings
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run import topology
from lifeline.tasks.run.ledger import Ledger, SnapshotFacts
from lifeline.tasks.run.record import Journal, Trigger, utc_now
from lifeline.tasks.steps.backup import (
    DatasetBackup,
    apply_retention,
    back_up_dataset,
    check_repository,
    copy_snapshot,
    prepare_repository,
    prune_repository,
)
from lifeline.tasks.steps.maintenance import Operation, not_due, record_done
from lifeline.tasks.steps.recorded_run import recorded_run
from lifeline.tasks.steps.repositories import dataset_tags, open_repository
from lifeline.tasks.steps.repository_slots import ensure_limits
from prefect import flow
from prefect.futures import PrefectFuture, wait
from prefect.utilities.annotations import allow_failure


class BackupFailed(LifelineError):
    def __init__(self, failures: list[BaseException]):
        self.failures = failures
        self.user_error = all(getattr(error, "user_error", False) for error in failures)
        super().__init__("; ".join(str(error) for error in failures))


@flow(name="backup", log_prints=False)
def backup_flow(
    plan_path: str,
    dataset: str | None = None,
    trigger: Trigger = "cli",
    record_id: str | None = None,
    site: str | None = None,
    maintain: bool = False,
) -> str:
    """Back up every dataset of the plan (or one), keep what the retention says, check, copy off-site.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        dataset: Back up only this dataset; empty for all of them.
        site: Back up only the datasets held at this site (a work pool's deployment sets it); empty for all.
        maintain: Prune and check every repository used, due or not (see the plan's `checks.every_hours`).
        trigger: Who started the run: schedule, ui or cli.
        record_id: Id for the run record (the CLI sets it); empty for a new one.
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    with recorded_run("backup", loaded, settings, trigger=trigger, record_id=record_id) as journal:
        run_backups(loaded, settings, journal, only=[dataset] if dataset else None, site=site, maintain=maintain)
        return journal.record.id


def run_backups(loaded: LoadedPlan, settings: Settings, journal: Journal, only: list[str] | None = None,
                site: str | None = None, maintain: bool = False, housekeeping: bool = True) -> None:
    """`housekeeping=False`: back up and copy only, without retention, prune or check (a warning's preparedness
    wants the fresh copy off-site first, and forget takes the repository whole: it would hold the copies up)."""
    plan = loaded.plan
    names = only or (list(plan.datasets) if site is None else topology.dataset_sites(plan).get(site, []))
    for name in names:
        if name not in plan.datasets:
            raise KeyError(f"dataset {name!r} is not in the plan (known: {', '.join(plan.datasets)})")
    repositories = {name: open_repository(plan, name, settings) for name in plan.repositories}
    ensure_limits(plan, repositories)
    locks, ledger = settings.locks_dir, Ledger(settings.ledger)
    used = {plan.datasets[name].repository for name in names} | {
        target for name in names for target in plan.datasets[name].copy_to
    }
    ready = {
        name: prepare_repository.submit(
            repositories[name], plan.repositories[name].init, locks, journal=journal, step_name=f"prepare {name}"
        )
        for name in sorted(used)
    }

    backups: dict[str, PrefectFuture] = {}
    after_backup: dict[str, list[PrefectFuture]] = {name: [] for name in used}
    copies: list[PrefectFuture] = []
    for name in names:
        dataset = plan.datasets[name]
        repository = repositories[dataset.repository]
        tags = dataset_tags(plan, name)
        backups[name] = back_up_dataset.submit(
            name,
            dataset,
            repository,
            tags,
            locks,
            settings.postgres_bin_dir,
            journal=journal,
            step_name=f"backup {name}",
            wait_for=[ready[dataset.repository]],
        )
        after_backup[dataset.repository].append(backups[name])
        if dataset.retention and housekeeping:
            after_backup[dataset.repository].append(
                apply_retention.submit(
                    repository, tags, dataset.retention, locks, ledger,
                    journal=journal, step_name=f"retention {name}", wait_for=[backups[name]],
                )
            )
    # Copies read the snapshot the backup made, so they start as each backup finishes.
    for name in names:
        dataset = plan.datasets[name]
        for target in dataset.copy_to:
            copies.append(
                copy_snapshot.submit(
                    repositories[dataset.repository], repositories[target], backups[name], locks,
                    journal=journal, step_name=f"copy {name} to {target}", wait_for=[ready[target]],
                )
            )

    def due(name: str, operation: Operation) -> bool:
        if not housekeeping:
            reason = "a backup for a warning: the next nightly backup keeps the repository"
        else:
            reason = None if maintain else not_due(plan, name, repositories[name], operation, ledger,
                                                   journal.record.started_at)
        if reason:
            journal.record_skipped(f"{operation} {name}", reason)
        return reason is None

    maintenance: dict[tuple[str, Operation], PrefectFuture] = {}
    for name in sorted({plan.datasets[n].repository for n in names}):
        after_writes = [ready[name], *(allow_failure(f) for f in after_backup[name] + copies)]
        if due(name, "prune"):
            maintenance[name, "prune"] = prune_repository.submit(
                repositories[name], locks, ledger, journal=journal, step_name=f"prune {name}",
                wait_for=after_writes)
        if due(name, "check"):
            pruned = [allow_failure(maintenance[name, "prune"])] if (name, "prune") in maintenance else []
            maintenance[name, "check"] = check_repository.submit(
                repositories[name], plan.checks.read_data_subset, locks, journal=journal, step_name=f"check {name}",
                wait_for=[*after_writes, *pruned])
    everything = [*ready.values(), *backups.values(), *copies, *maintenance.values()] + [
        f for futures in after_backup.values() for f in futures
    ]
    wait(everything)
    record_results(loaded, settings, journal, [backups[name] for name in names])
    for (name, operation), future in maintenance.items():
        if future.state.is_completed() and not getattr(future.result(), "skipped", None):  # a held one did nothing
            record_done(ledger, repositories[name], operation, utc_now(), journal.record.id)
    failures = [error for future in everything if (error := _failure(future)) is not None]
    if failures:
        raise BackupFailed(_unique(failures))


def record_results(loaded: LoadedPlan, settings: Settings, journal: Journal, futures: list[PrefectFuture]) -> None:
    """Per-dataset figures are in the steps; the record holds totals and the worst dataset's RPO."""
    plan, record = loaded.plan, journal.record
    results: list[DatasetBackup] = [f.result() for f in futures if f.state.is_completed()]
    record.snapshots = [result.snapshot_id for result in results]
    record.bytes = sum(result.bytes_added for result in results)
    measured = [r for r in results if r.rpo_seconds is not None]
    if measured:
        worst = max(measured, key=lambda r: r.rpo_seconds / plan.rpo_target(r.dataset).total_seconds() if plan.rpo_target(r.dataset).total_seconds() else float("inf"))
        record.rpo_seconds = worst.rpo_seconds
        record.rpo_target_seconds = plan.rpo_target(worst.dataset).total_seconds()
        record.met_targets = all(r.rpo_seconds <= plan.rpo_target(r.dataset).total_seconds() for r in measured) and len(
            results
        ) == len(futures)
    Ledger(settings.ledger).record_snapshots(
        SnapshotFacts(
            snapshot_id=result.snapshot_id,
            plan=plan.name,
            dataset=result.dataset,
            repository=result.repository,
            recorded_at=result.snapshot_time,
            run_id=record.id,
            row_counts=result.row_counts,
            files=result.files,
            bytes=result.bytes_processed,
        )
        for result in results
    )


def _failure(future: PrefectFuture) -> BaseException | None:
    state = future.state
    if not state.is_failed() and not state.is_crashed():
        return None
    try:
        state.result()
    except BaseException as error:
        return error
    return RuntimeError(state.message or "failed")


def _unique(errors: list[BaseException]) -> list[BaseException]:
    seen: dict[str, BaseException] = {}
    for error in errors:
        seen.setdefault(str(error), error)
    return list(seen.values())
