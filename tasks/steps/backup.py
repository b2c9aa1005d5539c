"""Backup steps: prepare a repository, back up a dataset, keep what the policy says, check, copy off-site."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path

from lifeline.configs.plan import Dataset, Retention
from lifeline.tasks.adapters import postgres
from lifeline.tasks.adapters.restic import RepositoryLocked, RepositoryMissing, ResticRepository
from lifeline.tasks.run.holds import Holds
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.progress import reporter
from lifeline.tasks.steps.repository_slots import repository_key, repository_slots
from lifeline.tasks.steps.step import step
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field


class RepositoryReady(BaseModel):
    repository: str
    created: bool

    @property
    def detail(self) -> dict:
        return {"repository": self.repository, "created": self.created}


class DatasetBackup(BaseModel):
    dataset: str
    repository: str
    snapshot_id: str
    snapshot_time: datetime
    previous_snapshot_time: datetime | None
    bytes_added: int
    bytes_processed: int
    files: int
    seconds: float
    row_counts: dict[str, int] | None = None
    warnings: list[str] = Field(default_factory=list)
    held: dict = Field(default_factory=dict, description="When it held its repository slot.")

    @property
    def rpo_seconds(self) -> float | None:
        """Data a failure just before this backup would have cost: time since the previous good snapshot."""
        if self.previous_snapshot_time is None:
            return None
        return (self.snapshot_time - self.previous_snapshot_time).total_seconds()

    @property
    def detail(self) -> dict:
        detail = self.model_dump(mode="json", exclude={"warnings", "held"})
        detail["rpo_seconds"] = self.rpo_seconds
        return detail | self.held


class Outcome(BaseModel):
    detail: dict = Field(default_factory=dict)
    skipped: str | None = Field(None, description="Why the step did nothing (the journal marks it skipped).")


def _with_stale_locks_cleared(repository: ResticRepository, operation):
    """A lock conflict is retried by the task; first drop locks that restic itself calls stale."""
    try:
        return operation()
    except RepositoryLocked:
        repository.remove_stale_locks()
        raise


@step(retries=3, retry_delay_seconds=[1, 3, 10], timeout_seconds=300)
def prepare_repository(repository: ResticRepository, init: bool, locks_dir: Path) -> RepositoryReady:
    """Creates it when missing, holding it alone: two workers that both find it missing must not both run
    `restic init` on it (two configs and keys in one repository: nothing in it could be read)."""
    if repository.exists():
        return RepositoryReady(repository=repository.name, created=False)
    if not init:
        raise RepositoryMissing.during(
            "open", repository.name, f"no restic repository at {repository.url}; set `init: true` in the plan to create it"
        )
    with repository_slots(repository, locks_dir, exclusive=True):
        if repository.exists():  # another run created it while this one waited
            return RepositoryReady(repository=repository.name, created=False)
        repository.init()
    return RepositoryReady(repository=repository.name, created=True)


@step(retries=3, retry_delay_seconds=[2, 10, 30], timeout_seconds=6 * 3600)
def back_up_dataset(
    dataset_name: str,
    dataset: Dataset,
    repository: ResticRepository,
    tags: list[str],
    locks_dir: Path,
    postgres_bin_dir: Path | None = None,
) -> DatasetBackup:
    logger = get_run_logger()
    progress = reporter(f"backup {dataset_name}", logger)
    host = socket.gethostname()
    row_counts = None
    with repository_slots(repository, locks_dir, exclusive=False) as held:
        if dataset.paths:
            summary = _with_stale_locks_cleared(
                repository,
                lambda: repository.backup(
                    paths=[str(path) for path in dataset.paths],
                    exclude=dataset.exclude,
                    tags=tags,
                    host=host,
                    on_progress=progress,
                    resolve_full_id=False,
                ),
            )
        elif dataset.postgres:
            source = dataset.postgres
            with postgres.exported_snapshot(source.dsn, source.passfile) as exported:
                row_counts = exported.row_counts
                summary = _with_stale_locks_cleared(
                    repository,
                    lambda: repository.backup_from_command(
                        producer_argv=postgres.pg_dump_arguments(
                            postgres.ConnectionInfo.from_dsn(source.dsn), exported.snapshot_name, postgres_bin_dir
                        ),
                        producer_env=postgres.libpq_environment(source.passfile),
                        stdin_filename=f"{source.database or dataset_name}.sql",
                        tags=tags,
                        host=host,
                        resolve_full_id=False,
                    ),
                )
        else:
            summary = _with_stale_locks_cleared(
                repository,
                lambda: repository.backup_from_command(
                    producer_argv=list(dataset.command or []),
                    producer_env={},
                    stdin_filename=dataset.stdin_filename or f"{dataset_name}.out",
                    tags=tags,
                    host=host,
                    resolve_full_id=False,
                ),
            )
        # One listing gives both the new snapshot's time and the previous snapshot's (restic 0.14 reports a short
        # id). Inside the slot: restic's listing locks the repository, and a prune or check holding it whole would
        # fail this step, whose retry backs the dataset up again.
        listing = repository.snapshots(tags=tags)
    (snapshot,) = [s for s in listing if s.id.startswith(summary.snapshot_id) or s.short_id == summary.snapshot_id]
    previous_time = max((s.time for s in listing if s.id != snapshot.id and s.time <= snapshot.time), default=None)
    for warning in summary.warnings:
        logger.warning("backup %s: %s", dataset_name, warning)
    return DatasetBackup(
        dataset=dataset_name,
        repository=repository.name,
        snapshot_id=snapshot.id,
        snapshot_time=snapshot.time,
        previous_snapshot_time=previous_time,
        bytes_added=summary.data_added,
        bytes_processed=summary.total_bytes_processed,
        files=summary.total_files_processed,
        seconds=summary.total_duration,
        row_counts=row_counts,
        warnings=list(summary.warnings),
        held=held.detail,
    )


def _hold_on(repository: ResticRepository, ledger: Ledger) -> Outcome | None:
    """The repository is held (a data-leak recovery's evidence): forget and prune leave it alone. Asked while the
    repository is held whole, so a hold placed while this step waited for it is honoured."""
    hold = Holds(ledger).of(repository_key(repository))
    return None if hold is None else Outcome(skipped=f"{repository.name} is {hold.describe()}",
                                             detail={"held_by": hold.placed_by})


@step(retries=3, retry_delay_seconds=[2, 10, 30], timeout_seconds=1800)
def apply_retention(repository: ResticRepository, tags: list[str], retention: Retention, locks_dir: Path,
                    ledger: Ledger) -> Outcome:
    """Forget this dataset's snapshots that the policy does not keep; other datasets' are not touched."""
    with repository_slots(repository, locks_dir, exclusive=True) as held:
        if hold := _hold_on(repository, ledger):
            return hold
        result = _with_stale_locks_cleared(repository, lambda: repository.forget(tags=tags, retention=retention.policy()))
    return Outcome(detail={"kept": len(result.kept), "forgotten": len(result.removed), "policy": retention.policy(),
                           **held.detail})


@step(retries=3, retry_delay_seconds=[2, 10, 30], timeout_seconds=3 * 3600)
def prune_repository(repository: ResticRepository, locks_dir: Path, ledger: Ledger) -> Outcome:
    with repository_slots(repository, locks_dir, exclusive=True) as held:
        if hold := _hold_on(repository, ledger):
            return hold
        _with_stale_locks_cleared(repository, repository.prune)
    return Outcome(detail={"repository": repository.name, **held.detail})


@step(retries=3, retry_delay_seconds=[2, 10, 30], timeout_seconds=3 * 3600)
def check_repository(repository: ResticRepository, read_data_subset: str, locks_dir: Path) -> Outcome:
    with repository_slots(repository, locks_dir, exclusive=True) as held:
        _with_stale_locks_cleared(repository, lambda: repository.check(read_data_subset=read_data_subset))
    return Outcome(detail={"repository": repository.name, "read_data_subset": read_data_subset, **held.detail})


@step(retries=4, retry_delay_seconds=[5, 15, 30, 60], timeout_seconds=6 * 3600)
def copy_snapshot(
    source: ResticRepository, destination: ResticRepository, backup: DatasetBackup, locks_dir: Path
) -> Outcome:
    snapshot_id = backup.snapshot_id
    with repository_slots(source, locks_dir, exclusive=False), \
            repository_slots(destination, locks_dir, exclusive=False):
        _with_stale_locks_cleared(destination, lambda: destination.copy_from(source, snapshot_ids=[snapshot_id]))
    return Outcome(detail={"from": source.name, "to": destination.name, "snapshot_id": snapshot_id})
