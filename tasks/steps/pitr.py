"""Continuous archiving steps: configure pgBackRest and archive_command at the primary, check that WAL
arrives in every repository, take full/diff/incr backups, and tell how far behind the archive is."""

from __future__ import annotations

from datetime import datetime

from lifeline.configs.plan import Plan
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.pgbackrest.archiving import (
    ArchiverStatus,
    archiver_status,
    checkpoint_after_promotion,
    set_archiving,
)
from lifeline.tasks.adapters.pgbackrest.arguments import archive_command
from lifeline.tasks.run.pitr_inputs import config_text, instance_connection, pgbackrest_at, pitr_of, site_directory
from lifeline.tasks.run.record import Journal
from lifeline.tasks.steps.step import LifelineError, step
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field


class ArchivingReady(BaseModel):
    database: str
    primary: str
    changed: bool
    detail: dict = Field(default_factory=dict)


class PitrBackupTaken(BaseModel):
    database: str
    kind: str
    repository: int
    label: str
    started_at: datetime
    stopped_at: datetime
    bytes: int
    repository_bytes: int
    oldest_restorable: datetime | None
    newest_restorable: datetime | None

    @property
    def detail(self) -> dict:
        return self.model_dump(mode="json")


class ArchiveLag(BaseModel):
    database: str
    site: str
    status: ArchiverStatus
    target_seconds: float

    @property
    def within_target(self) -> bool:
        exposure = self.status.exposure_seconds
        return exposure is not None and exposure <= self.target_seconds and not self.status.failing

    @property
    def detail(self) -> dict:
        status = self.status
        return {"site": self.site, "last_archived_wal": status.last_archived_wal,
                "last_archived_at": status.last_archived_at.isoformat() if status.last_archived_at else None,
                "pending_segments": status.pending_segments, "failing": status.failing,
                "exposure_seconds": status.exposure_seconds, "target_seconds": self.target_seconds}


def write_host_configs(plan: Plan, database_name: str) -> list[str]:
    """Every instance's host gets its own configuration (its data directory and port), so that archiving works
    at whichever instance is primary; returns the configs written."""
    database, pitr = pitr_of(plan, database_name)
    written = []
    for site in database.instances:
        pgbackrest = pgbackrest_at(plan, database, site)
        folder = site_directory(pitr, site)
        ssh.run(pgbackrest.target, ["mkdir", "-p", "-m", "0700", *(str(folder / name) for name in
                                                                  ("log", "lock", "spool", "staging"))], 20, check=True)
        pgbackrest.write_config(config_text(database, site))
        written.append(f"{pgbackrest.target.name}:{pgbackrest.config}")
    return written


@step(retries=2, retry_delay_seconds=5, timeout_seconds=300)
def configure_archiving(plan: Plan, database_name: str, primary: str) -> ArchivingReady:
    """pgBackRest's config on every host, archive_command at the primary, the stanza in every repository, then
    `pgbackrest check`: a WAL segment is switched and must arrive in each repository."""
    database, pitr = pitr_of(plan, database_name)
    configs = write_host_configs(plan, database_name)
    pgbackrest = pgbackrest_at(plan, database, primary)
    pgbackrest.stanza_create()  # before archive_command: a repository that cannot be reached changes nothing
    changed = set_archiving(instance_connection(database, primary),
                            archive_command(pitr.binary, pgbackrest.config, pitr.stanza), pitr.archive_timeout_seconds)
    pgbackrest.check()
    return ArchivingReady(database=database_name, primary=primary, changed=changed,
                          detail={"primary": primary, "archive_command_changed": changed, "configs": configs,
                                  "repositories": len(pitr.repositories), "check": "WAL archived in every repository"})


@step(retries=1, retry_delay_seconds=30, timeout_seconds=6 * 3600)
def take_pitr_backup(plan: Plan, database_name: str, primary: str, kind: str, repository: int) -> PitrBackupTaken:
    database, _ = pitr_of(plan, database_name)
    pgbackrest = pgbackrest_at(plan, database, primary)
    checkpoint_after_promotion(instance_connection(database, primary))
    pgbackrest.backup(kind, repository)
    info = pgbackrest.info()
    newest = info.newest_backup(repository)
    assert newest is not None
    archived = archiver_status(instance_connection(database, primary))
    return PitrBackupTaken(database=database_name, kind=newest.type, repository=repository, label=newest.label,
                           started_at=newest.started_at, stopped_at=newest.stopped_at, bytes=newest.size,
                           repository_bytes=newest.repository_size, oldest_restorable=info.oldest_restorable,
                           newest_restorable=archived.last_archived_at)


def archive_lag(plan: Plan, database_name: str, primary: str) -> ArchiveLag:
    database, pitr = pitr_of(plan, database_name)
    return ArchiveLag(database=database_name, site=primary, status=archiver_status(instance_connection(database, primary)),
                      target_seconds=pitr.rpo_minutes * 60)


def keep_archiving(plan: Plan, journal: Journal, site: str) -> None:
    """After a failover or failback, the new primary archives its own timeline. Recovery has already happened:
    a failure here is a warning in the record (the WAL stays at the primary until archiving works), not a
    failed recovery."""
    for name, database in plan.databases.items():
        if database.pitr is None or site not in database.instances:
            continue
        try:
            configure_archiving(plan, name, site, journal=journal, step_name=f"archive {name} at {site}")
        except LifelineError as error:
            get_run_logger().warning("archiving of %s at %s is not working yet: %s", name, site, error)
