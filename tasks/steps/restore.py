"""Restore steps: choose the snapshot, restore into staging, verify, and only then put it in place.

Nothing at the target is overwritten or deleted: without `replace` an occupied target is
refused before any work; with it, the old data is moved aside under a dated name.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from lifeline.configs.loading import LoadedPlan
from lifeline.configs.plan import Dataset
from lifeline.configs.settings import Settings
from lifeline.tasks.adapters import postgres
from lifeline.tasks.adapters.restic import NoSpace, ResticRepository, Snapshot, SnapshotGone
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.progress import reporter
from lifeline.tasks.run.record import Journal
from lifeline.tasks.steps.repositories import dataset_tags, open_repository
from lifeline.tasks.steps.repository_slots import ensure_limits, repository_slots
from lifeline.tasks.steps.step import LifelineError, step
from pydantic import BaseModel, Field


class RestoreRefused(LifelineError):
    user_error = True


class VerificationFailed(LifelineError):
    pass


class TargetFull(LifelineError):
    """The target's file system has no room for the restore: a retry cannot fix it; nothing was touched."""

    transient = False


class ChosenSnapshot(BaseModel):
    id: str
    time: datetime
    paths: list[str]

    @property
    def detail(self) -> dict:
        return {"snapshot_id": self.id, "snapshot_time": self.time.isoformat()}


class StagedRestore(BaseModel):
    staging: Path
    data_root: Path
    files: int
    bytes: int
    detail: dict = Field(default_factory=dict)


class PlacedRestore(BaseModel):
    target: str
    moved_aside: str | None = None
    detail: dict = Field(default_factory=dict)


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def pick_snapshot(
    snapshots: list[Snapshot], wanted: str = "latest", as_of: datetime | None = None, allowed: list[str] | None = None
) -> Snapshot:
    """`latest`, an id or its prefix, or the newest snapshot at or before `as_of`; only `allowed` ids if given.

    `allowed` is how a data-leak recovery trusts the ids it recorded, not snapshot times,
    which the client sets and an intruder can forge.
    """
    if allowed is not None:
        snapshots = [s for s in snapshots if s.id in set(allowed)]
    if as_of is not None:
        eligible = [s for s in snapshots if s.time <= as_of]
        if not eligible:
            raise RestoreRefused(f"no snapshot at or before {as_of.isoformat()}")
        return max(eligible, key=lambda s: s.time)
    if wanted == "latest":
        if not snapshots:
            raise RestoreRefused("the dataset has no snapshot yet")
        return max(snapshots, key=lambda s: s.time)
    matches = [s for s in snapshots if s.id.startswith(wanted)]
    if len(matches) != 1:
        raise RestoreRefused(f"snapshot {wanted!r} {'is ambiguous' if matches else 'not found for this dataset'}")
    return matches[0]


@step(retries=3, retry_delay_seconds=[1, 3, 10], timeout_seconds=300)
def choose_snapshot(
    repository: ResticRepository, tags: list[str], locks_dir: Path, wanted: str = "latest",
    as_of: datetime | None = None, allowed: list[str] | None = None,
) -> ChosenSnapshot:
    # In a slot: restic's listing locks the repository, so a prune or check holding it would fail the other.
    with repository_slots(repository, locks_dir, exclusive=False):
        listing = repository.snapshots(tags=tags)
    chosen = pick_snapshot(listing, wanted, as_of, allowed)
    return ChosenSnapshot(id=chosen.id, time=chosen.time, paths=list(chosen.paths))


def target_is_occupied(target: Path) -> bool:
    return target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir())))


@step(retries=0, timeout_seconds=60)
def refuse_occupied_target(target: Path, replace: bool) -> PlacedRestore:
    if target_is_occupied(target) and not replace:
        raise RestoreRefused(f"target {target} already holds data: restore elsewhere, or pass --replace to move it aside")
    return PlacedRestore(target=str(target))


def staging_beside(target: Path, run_id: str) -> Path:
    """Beside the target, so putting it in place is a rename on the same file system."""
    return target.parent / f".{target.name}.lifeline-staging-{run_id}"


@step(retries=2, retry_delay_seconds=[5, 30], timeout_seconds=6 * 3600)
def restore_to_staging(
    repository: ResticRepository, snapshot: ChosenSnapshot, staging: Path, locks_dir: Path
) -> StagedRestore:
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with repository_slots(repository, locks_dir, exclusive=False):
            try:
                repository.restore(snapshot.id, staging, verify=True,
                                   on_progress=reporter(f"restore {snapshot.id[:8]}"))
            except NoSpace:
                raise TargetFull(f"restore of snapshot {snapshot.id[:8]} to {_target_of(staging)} failed: no space left "
                                 f"on device at {staging.parent}; nothing at the target was changed") from None
            listing = repository.ls(snapshot.id)
        files, total = verify_against_listing(staging, listing)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    root = staging / snapshot.paths[0].lstrip("/") if len(snapshot.paths) == 1 else staging
    return StagedRestore(
        staging=staging,
        data_root=root,
        files=files,
        bytes=total,
        detail={"files_verified": files, "bytes_verified": total, "content": "restic restore --verify"},
    )


def _target_of(staging: Path) -> Path:
    """The target a staging folder of `staging_beside` stands for."""
    return staging.with_name(staging.name.removeprefix(".").split(".lifeline-staging-")[0])


def verify_against_listing(staging: Path, listing: list) -> tuple[int, int]:
    """Every file, link and folder of the snapshot is there, with its size; restic --verify checked contents."""
    files = total = 0
    for node in listing:
        path = staging / node.path.lstrip("/")
        if node.type == "file":
            if path.is_symlink() or not path.is_file():
                raise VerificationFailed(f"restored data lacks {node.path}")
            size = path.stat().st_size
            if size != node.size:
                raise VerificationFailed(f"{node.path}: {size} bytes restored, {node.size} in the snapshot")
            files, total = files + 1, total + size
        elif node.type == "symlink" and not path.is_symlink():
            raise VerificationFailed(f"restored data lacks the link {node.path}")
        elif node.type == "dir" and not path.is_dir():
            raise VerificationFailed(f"restored data lacks the folder {node.path}")
    return files, total


@step(retries=0, timeout_seconds=300)
def put_in_place(staged: StagedRestore, target: Path, replace: bool) -> PlacedRestore:
    moved_aside = None
    try:
        if target_is_occupied(target):
            if not replace:
                raise RestoreRefused(f"target {target} already holds data: pass --replace to move it aside")
            moved_aside = target.with_name(f"{target.name}.replaced-{_timestamp()}")
            os.rename(target, moved_aside)
        elif target.exists():
            target.rmdir()  # an empty folder holds nothing to lose
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged.data_root, target)
    finally:
        shutil.rmtree(staged.staging, ignore_errors=True)
    return PlacedRestore(
        target=str(target),
        moved_aside=str(moved_aside) if moved_aside else None,
        detail={"target": str(target), "moved_aside": str(moved_aside) if moved_aside else None},
    )


@step(retries=1, retry_delay_seconds=10, timeout_seconds=6 * 3600)
def restore_database(
    repository: ResticRepository,
    snapshot: ChosenSnapshot,
    dataset: Dataset,
    target_dsn: str,
    expected_row_counts: dict[str, int] | None,
    replace: bool,
    staging: Path,
    locks_dir: Path,
    postgres_bin_dir: Path | None = None,
) -> PlacedRestore:
    """Load the dump into a fresh database, compare row counts with the backup's, then rename it into place."""
    staging.mkdir(parents=True, exist_ok=True)
    try:
        with repository_slots(repository, locks_dir, exclusive=False):
            repository.restore(snapshot.id, staging, verify=True)
        dumps = [p for p in staging.rglob("*") if p.is_file()]
        if len(dumps) != 1:
            raise VerificationFailed(f"snapshot {snapshot.id[:8]} holds {len(dumps)} files, expected one dump")
        passfile = dataset.postgres.passfile if dataset.postgres else None
        result = postgres.restore_database(dumps[0], target_dsn, expected_row_counts, replace=replace, passfile=passfile,
                                           bin_dir=postgres_bin_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    detail = {
        "target": postgres.redact_dsn(target_dsn),
        "moved_aside": result.moved_aside,
        "tables_verified": len(result.row_counts),
        "rows_verified": sum(result.row_counts.values()),
    }
    if expected_row_counts is None:
        detail["warning"] = "no row counts recorded for this snapshot: only the dump's loading was verified"
    return PlacedRestore(target=detail["target"], moved_aside=result.moved_aside, detail=detail)


def _restore_chosen(settings: Settings, journal: Journal, repository: ResticRepository, chosen: ChosenSnapshot,
                    dataset: str, entry: Dataset, target: str, replace: bool, again: str) -> None:
    record = journal.record
    if entry.postgres:
        facts = Ledger(settings.ledger).snapshot_facts(chosen.id)
        restore_database(
            repository, chosen, entry, target,
            facts.row_counts if facts else None, replace,
            settings.home_dir / "staging" / record.id, settings.locks_dir, settings.postgres_bin_dir,
            journal=journal, step_name=f"restore {dataset} and verify row counts{again}",
        )
        return
    target_dir = Path(target).expanduser().absolute()
    refuse_occupied_target(target_dir, replace, journal=journal, step_name=f"check target{again}")
    staged = restore_to_staging(
        repository, chosen, staging_beside(target_dir, record.id), settings.locks_dir,
        journal=journal, step_name=f"restore {dataset} to staging and verify{again}",
    )
    record.bytes += staged.bytes
    put_in_place(staged, target_dir, replace, journal=journal, step_name=f"put in place{again}")


def restore_dataset(
    loaded: LoadedPlan, settings: Settings, journal: Journal, dataset: str, target: str, *,
    snapshot: str = "latest", as_of: datetime | None = None, replace: bool = False,
    incident_at: datetime | None = None, snapshot_ids: list[str] | None = None,
    repository: ResticRepository | None = None,
) -> ChosenSnapshot:
    """The restore runbook, for the restore flow, drills and the data-leak recovery; `snapshot_ids` limits
    the choice (a data leak).

    `repository` replaces the dataset's own repository (a data leak restores from the new, clean one).
    """
    plan, record = loaded.plan, journal.record
    record.incident_at = incident_at or record.incident_at or record.started_at
    journal.milestone("incident", record.incident_at)
    if dataset not in plan.datasets:
        raise RestoreRefused(f"dataset {dataset!r} is not in the plan (known: {', '.join(plan.datasets)})")
    entry = plan.datasets[dataset]
    repository = repository or open_repository(plan, entry.repository, settings)
    ensure_limits(plan, {repository.name: repository})
    record.rpo_target_seconds = plan.rpo_target(dataset).total_seconds()
    record.rto_target_seconds = (entry.rto_minutes or plan.targets.rto_minutes) * 60
    # A backup's retention running at the same time may forget the snapshot between choosing and restoring it:
    # a snapshot chosen by rule (latest, as of) is then chosen again, once; one the operator named is not.
    chosen_by_rule = snapshot == "latest" and not snapshot_ids
    for again in ("", " again"):
        chosen = choose_snapshot(repository, dataset_tags(plan, dataset), settings.locks_dir, snapshot, as_of, snapshot_ids,
                                 journal=journal, step_name=f"choose snapshot{again}")
        record.snapshots = [chosen.id]
        try:
            _restore_chosen(settings, journal, repository, chosen, dataset, entry, target, replace, again)
            break
        except SnapshotGone:
            if again or not chosen_by_rule:
                raise
    record.recovered_at = journal.milestone("recovered")
    record.rto_seconds = (record.recovered_at - record.incident_at).total_seconds()
    record.rpo_seconds = max(0.0, (record.incident_at - chosen.time).total_seconds())
    return chosen
