"""From a plan's repository entry to a restic adapter object."""

from __future__ import annotations

from lifeline.configs.plan import Plan
from lifeline.configs.settings import Settings
from lifeline.tasks.adapters.environment_file import read_environment_file
from lifeline.tasks.adapters.restic import ResticRepository


def open_repository(plan: Plan, name: str, settings: Settings) -> ResticRepository:
    entry = plan.repositories[name]
    return ResticRepository(
        name=name,
        url=entry.url,
        password_file=entry.password_file,
        environment=read_environment_file(entry.environment_file),
        cache_dir=settings.restic_cache_dir,
        binary=settings.restic_binary,
    )


def snapshot_file_present(plan: Plan, name: str, snapshot_id: str) -> bool | None:
    """Does the repository still hold this snapshot? From its file alone (a local repository keeps one
    file per snapshot under snapshots/): no restic process, no key derivation. None for a remote
    backend, where only restic can tell."""
    folder = plan.repositories[name].local_path
    return None if folder is None else (folder / "snapshots" / snapshot_id).is_file()


def dataset_tags(plan: Plan, dataset: str) -> list[str]:
    return [f"plan={plan.name}", f"dataset={dataset}"]
