"""Point-in-time recovery of a database with pgBackRest: keep its WAL archived and back it up (`pitr_backup_flow`),
and bring it back to a moment (`pitr_restore_flow`): into a staging cluster (side), into chosen tables (repair),
or as the whole primary (replace)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from lifeline.configs.drills import PointInTimeRecovery
from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.settings import Settings, load_settings
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run import topology
from lifeline.tasks.run.ledger import Ledger, SnapshotFacts
from lifeline.tasks.run.pitr_inputs import pitr_of
from lifeline.tasks.run.record import Journal, Trigger
from lifeline.tasks.steps.approval import ApprovalMode, ask_recorded
from lifeline.tasks.steps.approvers import approvers_for
from lifeline.tasks.steps.corruption_drill import check_corruption_gone, show_corruption_at_standbys
from lifeline.tasks.steps.pitr import PitrBackupTaken, archive_lag, configure_archiving, take_pitr_backup
from lifeline.tasks.steps.pitr_replace import rebuild_standbys_after_rewind, rewind_primary
from lifeline.tasks.steps.pitr_restore import (
    PointProven,
    find_restorable_window,
    prove_point,
    refuse_unrepairable,
    repair_from_staging,
    restore_into_staging,
    staging_connection,
    stop_staging,
)
from lifeline.tasks.steps.recorded_run import recorded_run
from prefect import flow

BackupKind = Literal["full", "diff", "incr"]
RestoreMode = Literal["side", "repair", "replace"]


class NoPrimary(LifelineError):
    pass


def current_primary(plan, database: str) -> str:  # noqa: ANN001 - the Plan
    primary = topology.primary_site(plan, database)
    if primary is None:
        raise NoPrimary(f"database {database}: no instance answers as a primary")
    return primary


@flow(name="pitr-backup", log_prints=False)
def pitr_backup_flow(plan_path: str, database: str, kind: BackupKind | None = None, trigger: Trigger = "cli",
                     record_id: str | None = None) -> str:
    """Configure archiving at the primary (when needed) and check it; with a kind, back up into every repository.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        database: The database (under `databases`) whose `pitr` to use.
        kind: full, diff or incr; empty: only configure and check archiving.
        trigger: Who started the run: schedule, ui or cli.
        record_id: Id for the run record (the CLI sets it); empty for a new one.
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    plan = loaded.plan
    entry, pitr = pitr_of(plan, database)
    with recorded_run("backup", loaded, settings, trigger=trigger, record_id=record_id) as journal:
        primary = current_primary(plan, database)
        configure_archiving(plan, database, primary, journal=journal, step_name=f"archive {database} at {primary}")
        taken: list[PitrBackupTaken] = []
        if kind is not None:
            for number in range(1, len(pitr.repositories) + 1):
                taken.append(take_pitr_backup(plan, database, primary, kind, number, journal=journal,
                                              step_name=f"{kind} backup of {database} into repo{number}"))
        lag = archive_lag(plan, database, primary)
        record = journal.record
        record.rpo_seconds = lag.status.exposure_seconds
        record.rpo_target_seconds = lag.target_seconds
        record.met_targets = lag.within_target
        record.bytes = sum(backup.repository_bytes for backup in taken)
        record.snapshots = [f"pgbackrest:{pitr.stanza}:repo{backup.repository}:{backup.label}" for backup in taken]
        Ledger(settings.ledger).record_snapshots(
            SnapshotFacts(snapshot_id=snapshot_id, plan=plan.name, dataset=database,
                          repository=f"pgbackrest repo{backup.repository}", recorded_at=backup.stopped_at,
                          run_id=record.id, bytes=backup.bytes,
                          extra={"type": backup.kind, "label": backup.label, "stanza": pitr.stanza,
                                 "oldest_restorable": _iso(backup.oldest_restorable),
                                 "newest_restorable": _iso(backup.newest_restorable)})
            for snapshot_id, backup in zip(record.snapshots, taken, strict=True))
        return record.id


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@flow(name="pitr-restore", log_prints=False)
def pitr_restore_flow(plan_path: str, database: str, to_time: datetime | None = None, before_xid: int | None = None,
                      mode: RestoreMode = "side", tables: list[str] | None = None,
                      approval: ApprovalMode = "terminal", reason: str = "", trigger: Trigger = "cli",
                      record_id: str | None = None, parent_id: str | None = None) -> str:
    """Restore the database to a moment: side (a staging cluster left running), repair (chosen tables copied back
    into the live primary, the current rows kept aside) or replace (the whole primary rewound; with approval).

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        database: The database (under `databases`) with `pitr`.
        to_time: Restore to just before this moment (transactions committed at or after it are not kept).
        before_xid: Restore to just before this transaction instead.
        mode: side, repair or replace.
        tables: repair: the tables (schema.table) to copy back.
        approval: replace: how the rewind is approved (terminal, ui or yes).
        reason: Why, for the record and the approval.
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    pitr_of(loaded.plan, database)
    with recorded_run("restore", loaded, settings, trigger=trigger, record_id=record_id,
                      parent_id=parent_id) as journal:
        journal.record.incident_at = to_time or journal.record.started_at
        restore_to_point(loaded, settings, journal, database, to_time, before_xid, mode, tables, approval, reason)
        return journal.record.id


def restore_to_point(loaded: LoadedPlan, settings: Settings, journal: Journal, database: str,
                     to_time: datetime | None, before_xid: int | None, mode: RestoreMode, tables: list[str] | None,
                     approval: ApprovalMode, reason: str, aside_schema: str | None = None) -> PointProven:
    """The runbook of a point-in-time restore, for its own run and for the logical-corruption drill. RTO runs
    from the moment T was known (the run's start; a drill's detection) to the data back in service; RPO is the
    incident (a restore's own target time) minus the newest transaction the restore kept."""
    plan, record = loaded.plan, journal.record
    _, pitr = pitr_of(plan, database)
    if to_time is not None:
        journal.milestone("target", to_time)
    primary = current_primary(plan, database)
    if mode == "repair":
        refuse_unrepairable(plan, database, primary, tables or [])
    find_restorable_window(plan, database, primary, to_time, journal=journal, step_name="find the restorable window")
    staging = restore_into_staging(plan, database, primary, record.id, to_time, before_xid, journal=journal,
                                   step_name=f"restore {database} into a staging cluster")
    connection = staging_connection(plan, database, primary, staging.port)
    proven = prove_point(connection, to_time, before_xid, journal=journal, step_name="prove the restored point")
    lost_since = record.incident_at or to_time  # a drill's incident is the bad write; a restore's, its target
    record.rpo_seconds = (lost_since - proven.kept_until).total_seconds() \
        if lost_since is not None and proven.kept_until is not None else proven.rpo_seconds
    record.rpo_target_seconds = pitr.rpo_minutes * 60
    if mode == "replace":
        decision = ask_recorded(
            journal, "approval", f"Rewind {database} at {primary} to {proven.target}?",
            f"The staging cluster {staging.dsn} shows the point: {proven.detail}. Every row written after it "
            "is exported to a report; the current data directory is moved aside, never deleted; the standby is "
            "rebuilt.", approval, plan.recovery.approval_timeout_seconds, reason,
            approvers=approvers_for(plan, Ledger(settings.ledger), journal))
        stop_staging(plan, database, staging, journal=journal, step_name="stop the staging cluster")
        if not decision.approved:
            record.status = "cancelled"
            record.error = f"not approved: {decision.reason or 'no reason given'}; the primary was not changed"
            return proven
        rewind_primary(plan, database, primary, to_time, before_xid, journal=journal,
                       step_name=f"rewind {database} at {primary}")
    if mode == "repair":
        aside = aside_schema or f"lifeline_repair_{datetime.now(UTC):%Y%m%d_%H%M%S}"
        repair_from_staging(plan, database, primary, connection, list(tables or []), aside, journal=journal,
                            step_name=f"repair {', '.join(tables or [])} at {primary}")
        stop_staging(plan, database, staging, journal=journal, step_name="stop the staging cluster")
    record.recovered_at = journal.milestone("recovered")
    found = record.milestones.get("detected", record.started_at)  # T known: detected in a drill, else the ask
    record.rto_seconds = (record.recovered_at - found).total_seconds()
    record.rto_target_seconds = plan.targets.rto_minutes * 60
    if mode == "replace":
        rebuild_standbys_after_rewind(plan, database, primary, journal=journal, step_name="rebuild the standby")
    return proven


def repair_corruption(loaded: LoadedPlan, settings: Settings, journal: Journal, recovery: PointInTimeRecovery,
                      home: str, aside_schema: str, to_time: datetime, reason: str) -> None:
    """A logical-corruption drill's recovery (and its sweep's, when the drill was killed before it): show the bad
    write at the standby too, repair the tables from a restore to `to_time`, check again."""
    plan = loaded.plan
    show_corruption_at_standbys(plan, recovery, home, journal=journal, step_name="show the corruption at the standby")
    restore_to_point(loaded, settings, journal, recovery.database, to_time, None, "repair", recovery.tables,
                     approval="yes", reason=reason, aside_schema=aside_schema)
    check_corruption_gone(plan, recovery, home, journal=journal, step_name="check the corruption is gone")
