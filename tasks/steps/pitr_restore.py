"""Point-in-time restore steps: find the restorable window, restore into a staging cluster of its own, prove the
point it reached, and then, by mode, leave it for inspection, repair chosen tables from it, or replace the
primary with it. The live database is changed only by the repair's one transaction or by an approved replace."""

from __future__ import annotations

from dataclasses import replace as replaced_copy
from datetime import datetime
from pathlib import Path, PurePosixPath

from lifeline.configs.plan import Plan
from lifeline.tasks.adapters import postgres, ssh
from lifeline.tasks.adapters.deadline import wait_until
from lifeline.tasks.adapters.pgbackrest.archiving import switch_and_wait_archived
from lifeline.tasks.adapters.postgres import repair
from lifeline.tasks.adapters.postgres.connection import ConnectionInfo, PostgresError, database_session
from lifeline.tasks.adapters.postgres.recovery_log import StoppedRecovery
from lifeline.tasks.adapters.replication import ServerState, server_status, start_server, stop_server
from lifeline.tasks.run.adapter_inputs import database_node
from lifeline.tasks.run.pitr_inputs import instance_connection, pgbackrest_at, pitr_of, site_directory
from lifeline.tasks.steps.step import LifelineError, step
from pydantic import BaseModel


class OutsideWindow(LifelineError):
    user_error = True


class ArchiveGap(OutsideWindow):
    """The archive's WAL ran out before the target: WAL a lost primary never archived (a site loss, say)."""


class RestoreNotProven(LifelineError):
    pass


class RestorableWindow(BaseModel):
    oldest: datetime
    newest: datetime

    @property
    def detail(self) -> dict:
        return {"oldest": self.oldest.isoformat(), "newest": self.newest.isoformat()}


class StagingCluster(BaseModel):
    site: str
    host: str
    data_dir: str
    port: int
    dsn: str  # without a password: the instance's passfile opens it
    stopped_earlier: list[str] = []  # staging clusters of earlier restores, stopped to free the port

    @property
    def detail(self) -> dict:
        return self.model_dump()


class PointProven(BaseModel):
    target: str  # the time, or "before transaction N"
    kept_until: datetime | None  # the newest transaction the restore kept
    rpo_seconds: float | None  # target time - kept_until
    row_counts: dict[str, int]

    @property
    def detail(self) -> dict:
        return {"target": self.target, "kept_until": self.kept_until.isoformat() if self.kept_until else None,
                "rpo_seconds": self.rpo_seconds, "tables": len(self.row_counts), "rows": sum(self.row_counts.values())}


class Repaired(BaseModel):
    tables: dict[str, dict[str, int]]
    aside_schema: str

    @property
    def detail(self) -> dict:
        return {"aside_schema": self.aside_schema, "tables": self.tables}


def _in_zone(moment: datetime, plan: Plan) -> str:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(plan.timezone)).isoformat(timespec="seconds")


@step(retries=1, retry_delay_seconds=5, timeout_seconds=180)
def find_restorable_window(plan: Plan, database_name: str, primary: str, to_time: datetime | None) -> RestorableWindow:
    """From the end of the oldest backup to now: the primary's current WAL segment is switched and must be
    archived first, so the seconds before the restore was asked for are in the repositories too."""
    database, _ = pitr_of(plan, database_name)
    info = pgbackrest_at(plan, database, primary).info()
    archived = switch_and_wait_archived(instance_connection(database, primary))
    if info.oldest_restorable is None:
        raise OutsideWindow(f"databases.{database_name}.pitr: no backup yet, nothing to restore from "
                            "(`lifeline pitr backup` takes one)")
    window = RestorableWindow(oldest=info.oldest_restorable, newest=archived.last_archived_at or archived.now)
    if to_time is not None and not window.oldest <= to_time <= window.newest:
        raise OutsideWindow(f"--to-time {_in_zone(to_time, plan)} is outside the restorable window "
                            f"{_in_zone(window.oldest, plan)} .. {_in_zone(window.newest, plan)}")
    return window


def staging_connection(plan: Plan, database_name: str, site: str, port: int) -> ConnectionInfo:
    database, _ = pitr_of(plan, database_name)
    return replaced_copy(instance_connection(database, site), port=port)


def refuse_unrepairable(plan: Plan, database_name: str, primary: str, tables: list[str]) -> None:
    """A table that does not exist or has no primary key is refused before the (long) restore."""
    database, _ = pitr_of(plan, database_name)
    repair.refuse_unrepairable(instance_connection(database, primary), tables)


def _stop_earlier_staging(plan: Plan, database_name: str, site: str) -> list[str]:
    """A staging cluster left running for inspection holds the staging port: stopped (its files stay)."""
    database, pitr = pitr_of(plan, database_name)
    node = database_node(database.instances[site])
    target = pgbackrest_at(plan, database, site).target
    folder = site_directory(pitr, site) / "staging"
    listing = ssh.run(target, ["find", str(folder), "-mindepth", "1", "-maxdepth", "1", "-type", "d",
                               "-printf", "%f\\n"], 20)
    stopped = []
    for name in listing.stdout.split():
        directory = Path(folder / name)
        if server_status(node, target, data_dir=directory).state is ServerState.RUNNING:
            stop_server(node, target, data_dir=directory)
            stopped.append(str(directory))
    return stopped


@step(retries=0, timeout_seconds=6 * 3600)
def restore_into_staging(plan: Plan, database_name: str, site: str, run_id: str, to_time: datetime | None,
                         before_xid: int | None) -> StagingCluster:
    """pgBackRest restores into a new data directory (archiving off: the copy never writes into the live
    stanza), which starts on the staging port, replays WAL to the target and promotes itself."""
    database, pitr = pitr_of(plan, database_name)
    pgbackrest = pgbackrest_at(plan, database, site)
    node = database_node(database.instances[site])
    stopped = _stop_earlier_staging(plan, database_name, site)
    data_dir = site_directory(pitr, site) / "staging" / f"{pitr.stanza}-{run_id}"
    pgbackrest.restore(data_dir, to_time=to_time, before_xid=before_xid, port=pitr.staging_port)
    log = PurePosixPath(f"{data_dir}.log")
    start_server(node, pgbackrest.target, 600, data_dir=Path(data_dir), log_file=Path(log))
    connection = staging_connection(plan, database_name, site, pitr.staging_port)

    def promoted() -> bool:
        try:
            with database_session(connection, "wait for the staging cluster at") as session:
                return session.execute("SELECT NOT pg_is_in_recovery()").fetchone()[0]
        except PostgresError:
            if server_status(node, pgbackrest.target, data_dir=Path(data_dir)).state is not ServerState.RUNNING:
                tail = ssh.run(pgbackrest.target, ["tail", "-n", "100", str(log)], 20).stdout.splitlines()
                raise _stopped(plan, database_name, StoppedRecovery.from_log(tail), data_dir, to_time) from None
            return False

    if not wait_until(promoted, timeout=3600, interval=0.2):
        raise RestoreNotProven(f"the staging cluster {data_dir} did not finish recovery")
    dsn = f"postgresql://{connection.user}@{connection.host}:{connection.port}/{connection.database}"
    return StagingCluster(site=site, host=pgbackrest.target.name, data_dir=str(data_dir), port=pitr.staging_port,
                          dsn=dsn, stopped_earlier=stopped)


def _stopped(plan: Plan, database_name: str, recovery: StoppedRecovery, data_dir: PurePosixPath,
             to_time: datetime | None) -> LifelineError:
    if not recovery.ended_before_target:
        return RestoreNotProven(f"the staging cluster {data_dir} stopped during recovery: {recovery.reason[:300]}")
    reached = _in_zone(recovery.last_transaction_at, plan) if recovery.last_transaction_at else "the backup's end"
    target = _in_zone(to_time, plan) if to_time is not None else "the target"
    return ArchiveGap(f"databases.{database_name}.pitr: the WAL archive has a gap: replay from the backup ends at "
                      f"{reached}, before {target} (WAL a lost primary never archived); a point after the gap needs "
                      f"a backup taken after it: `lifeline pitr backup --database {database_name}`")


@step(retries=1, retry_delay_seconds=2, timeout_seconds=600)
def prove_point(connection: ConnectionInfo, to_time: datetime | None, before_xid: int | None) -> PointProven:
    """The newest transaction the restore kept must be before the target; the rows are counted for the record."""
    with database_session(connection, "read the restored point at") as session:
        kept_until = session.execute("SELECT pg_last_xact_replay_timestamp()").fetchone()[0]
    if to_time is not None and kept_until is not None and kept_until >= to_time:
        raise RestoreNotProven(f"the restore kept a transaction of {kept_until.isoformat()}, not before "
                               f"{to_time.isoformat()}")
    counts = postgres.count_rows(connection)
    target = to_time.isoformat() if to_time is not None else f"before transaction {before_xid}"
    rpo = (to_time - kept_until).total_seconds() if to_time is not None and kept_until is not None else None
    return PointProven(target=target, kept_until=kept_until, rpo_seconds=rpo, row_counts=counts)


@step(retries=0, timeout_seconds=3600)
def repair_from_staging(plan: Plan, database_name: str, primary: str, staging: ConnectionInfo, tables: list[str],
                        aside_schema: str) -> Repaired:
    database, _ = pitr_of(plan, database_name)
    done = repair.repair_tables(instance_connection(database, primary), staging, tables, aside_schema)
    return Repaired(aside_schema=aside_schema,
                    tables={table.table: {"rows_kept_aside": table.rows_kept_aside, "updated": table.rows_updated,
                                          "inserted": table.rows_inserted, "deleted": table.rows_deleted}
                            for table in done})


class StagingStopped(BaseModel):
    detail: dict


@step(retries=1, retry_delay_seconds=2, timeout_seconds=300)
def stop_staging(plan: Plan, database_name: str, staging: StagingCluster) -> StagingStopped:
    """Its data directory stays (a copy of the restored point) until someone removes it."""
    database, _ = pitr_of(plan, database_name)
    node = database_node(database.instances[staging.site])
    stopped = stop_server(node, pgbackrest_at(plan, database, staging.site).target, data_dir=Path(staging.data_dir))
    return StagingStopped(detail={"data_dir": staging.data_dir, "stopped": stopped.detail})
