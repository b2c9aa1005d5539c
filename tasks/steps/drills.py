"""Drill steps: the normal state, sentinels that prove the RPO, and markers that outlive a killed drill.

A drill leaves a marker file under LIFELINE_HOME/drills while it runs; it names the process,
the sentinels and whether a failover happened. A marker whose process is dead is a drill that
was killed: the next failover, failback or drill of that plan sweeps what it left.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime
from pathlib import Path

from lifeline.configs.drills import Scenario
from lifeline.configs.plan import Plan
from lifeline.configs.settings import Settings
from lifeline.tasks.adapters import replication
from lifeline.tasks.adapters.commands import run_command
from lifeline.tasks.adapters.deadline import wait_until
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.postgres.connection import connection_info, database_session
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import replicated_database
from lifeline.tasks.run.record import utc_now
from lifeline.tasks.steps.leak import clean_repository
from lifeline.tasks.steps.repositories import open_repository
from lifeline.tasks.steps.repository_slots import repository_slots
from lifeline.tasks.steps.step import step
from lifeline.tasks.steps.verification import verify_site
from psycopg import sql
from pydantic import BaseModel, Field

SENTINEL_FILE_PREFIX = ".lifeline-drill-"


class NotNormal(LifelineError):
    user_error = True


class FaultFailed(LifelineError):
    pass


class DrillMarker(BaseModel):
    record_id: str
    plan: str
    plan_path: str
    scenario: str
    pid: int = Field(default_factory=os.getpid)
    started_at: datetime = Field(default_factory=utc_now)
    sentinel_token: str = ""
    sentinel_file: str | None = None
    failed_over: bool = False
    failing_back: bool = Field(False, description="Its failback began: a clean-up finishes it even when the other "
                               "site no longer serves (it may have been cut short after switching back).")
    fault_undone: bool = False
    kept: bool = Field(False, description="Left for inspection by --keep: the next failback of the plan cleans it up.")
    repair_schema: str | None = Field(None, description="The schema a point-in-time drill's repair kept the corrupted "
                                      "rows in: dropped with the sentinels.")
    fault_injected_at: datetime | None = Field(None, description="Just before the fault command ran: a drill killed "
                                               "before recovering what its fault destroys is recovered from before it.")
    warning_sent_at: datetime | None = Field(None, description="A warning drill's exercise, as sent to intake "
                                             "and not yet cancelled: a clean-up cancels it.")
    repaired: bool = Field(False, description="The drill's recovery of the data its fault destroys (a restore, a "
                           "point-in-time repair) succeeded.")

    def path(self, drills_dir: Path) -> Path:
        return drills_dir / f"{self.record_id}.json"

    def save(self, drills_dir: Path) -> None:
        drills_dir.mkdir(parents=True, exist_ok=True)
        temporary = drills_dir / f".{self.record_id}.json.tmp"
        temporary.write_text(self.model_dump_json(indent=2))
        temporary.replace(self.path(drills_dir))

    def remove(self, drills_dir: Path) -> None:
        self.path(drills_dir).unlink(missing_ok=True)

    @property
    def process_alive(self) -> bool:
        """A kept drill has ended: its state is nobody's, whichever process left it."""
        if self.kept:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return self.pid != 0


def markers(drills_dir: Path, plan: str) -> list[DrillMarker]:
    found = []
    for path in sorted(drills_dir.glob("*.json")) if drills_dir.is_dir() else []:
        try:
            marker = DrillMarker.model_validate_json(path.read_text())
        except ValueError:
            continue
        if marker.plan == plan:
            found.append(marker)
    return found


class Sentinel(BaseModel):
    token: str
    written_at: datetime
    row_id: int | None = None
    file: str | None = None

    @property
    def detail(self) -> dict:
        return {"token": self.token, "row_id": self.row_id, "file": self.file, "written_at": self.written_at.isoformat()}


def new_token(record_id: str) -> str:
    return f"drill-{record_id}-{secrets.token_hex(4)}"


def _sentinel_session(plan: Plan, database: str, site: str):
    instance = plan.databases[database].instances[site]
    return database_session(connection_info(instance.dsn, instance.passfile), "write a drill sentinel at")


@step(retries=1, retry_delay_seconds=1, timeout_seconds=30)
def write_sentinel(plan: Plan, scenario: Scenario, token: str) -> Sentinel:
    """Just before the fault: a uniquely marked row at the primary, and a file in the dataset's folder."""
    settings, written_at = scenario.sentinel, utc_now()
    row_id = None
    if settings.database:
        site = topology.primary_site(plan, settings.database)
        with _sentinel_session(plan, settings.database, site) as session:
            row_id = session.execute(
                sql.SQL("INSERT INTO {} (drill, payload) VALUES (%s, %s) RETURNING id").format(sql.Identifier(settings.table)),
                (token, f"written {written_at.isoformat()}"),
            ).fetchone()[0]
    file = sentinel_file_path(plan, scenario, token)
    if file is not None:
        Path(file).write_text(token)
    return Sentinel(token=token, written_at=written_at, row_id=row_id, file=file)


def sentinel_file_path(plan: Plan, scenario: Scenario, token: str) -> str | None:
    dataset = scenario.sentinel.dataset
    return str(Path(plan.datasets[dataset].paths[0]) / f"{SENTINEL_FILE_PREFIX}{token}") if dataset else None


def restored_snapshot_holds(plan: Plan, settings: Settings, scenario: Scenario, snapshot_ids: list[str],
                            path: str | None) -> bool | None:
    """Whether the snapshot a drill restored holds `path`, from its listing: a backup that began just before
    the sentinel was written may still have read it. None when the drill restored no files snapshot."""
    recovery = scenario.recovery
    if path is None or not snapshot_ids or (recovery.restore is None and recovery.leak is None):
        return None
    dataset = recovery.restore.dataset if recovery.restore is not None else recovery.leak.dataset
    repository = open_repository(plan, plan.datasets[dataset].repository, settings)
    if recovery.leak is not None:  # restored from the clean repository the recovery made
        repository = clean_repository(repository, recovery.leak.new_repository_url,
                                      Path(recovery.leak.new_password_file), settings, plan)
    with repository_slots(repository, settings.locks_dir, exclusive=False):
        return any(node.path == path for node in repository.ls(snapshot_ids[-1]))


def sentinel_row_present(plan: Plan, scenario: Scenario, token: str) -> bool | None:
    database = scenario.sentinel.database
    if not database:
        return None
    site = topology.primary_site(plan, database)
    if site is None:
        return None
    with _sentinel_session(plan, database, site) as session:
        query = sql.SQL("SELECT count(*) FROM {} WHERE drill = %s").format(sql.Identifier(scenario.sentinel.table))
        return session.execute(query, (token,)).fetchone()[0] > 0


def remove_sentinels(plan: Plan, scenario: Scenario, token: str, file: str | None) -> dict:
    removed: dict = {}
    database = scenario.sentinel.database
    site = topology.primary_site(plan, database) if database else None
    if database and site:
        with _sentinel_session(plan, database, site) as session:
            query = sql.SQL("DELETE FROM {} WHERE drill LIKE %s").format(sql.Identifier(scenario.sentinel.table))
            removed["rows"] = session.execute(query, (f"{token}%",)).rowcount
    if file:
        Path(file).unlink(missing_ok=True)
        removed["file"] = file
    return removed


def missing_data(plan: Plan, scenario: Scenario, sentinel: Sentinel | None) -> list[str]:
    """Data a fault destroyed, by looking at it: the sentinel file and the folders of the datasets the
    scenario writes its sentinel to or restores (a lost folder fails no service's health check)."""
    missing = []
    if sentinel is not None and sentinel.file and not Path(sentinel.file).exists():
        missing.append(f"sentinel file {sentinel.file} is gone")
    datasets = {scenario.sentinel.dataset, scenario.recovery.restore.dataset if scenario.recovery.restore else None}
    for name in sorted(d for d in datasets if d and d in plan.datasets):
        missing += [f"dataset {name}: {path} is missing" for path in plan.datasets[name].paths or [] if not Path(path).exists()]
    return missing


def run_fault_command(argv: list[str], what: str) -> str:
    result = run_command(argv, timeout=120)
    if result.returncode != 0:
        raise FaultFailed(f"{what}: {argv[0]} exited {result.returncode}: {result.stderr_tail(2)}")
    return result.stdout_text.strip() or result.stderr_tail(1)


def leftover_sentinel_rows(plan: Plan, scenarios: list[Scenario]) -> int:
    count = 0
    for database, table in {(s.sentinel.database, s.sentinel.table) for s in scenarios if s.sentinel.database}:
        site = topology.primary_site(plan, database)
        if site is None:
            continue
        with _sentinel_session(plan, database, site) as session:
            count += session.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    return count


def normal_state_problems(plan: Plan, home: str, away: str) -> list[str]:
    """Why the plan's systems are not in their normal state (empty when they are)."""
    problems = []
    leftovers = leftover_sentinel_rows(plan, list(plan.scenarios.values()))
    if leftovers:
        problems.append(f"{leftovers} drill sentinel rows left behind")
    for name in plan.databases_at(home, away):
        database = replicated_database(plan.databases[name])
        main, standby = replication.instance_state(database, home), replication.instance_state(database, away)
        if main.in_recovery is not False:
            problems.append(f"database {name}: {home} is not the primary ({main.role})")
        elif not replication.streams_from(database, home, away):
            problems.append(f"database {name}: {away} is not streaming from {home}")
        else:
            lag = replication.replication_lag(main, standby)
            if lag.seconds is None or lag.seconds >= 1.0:
                problems.append(f"database {name}: {away} lags {lag.seconds} s")
    if topology.dns_names(plan, home) is False:
        problems.append(f"DNS {plan.dns.record} does not name {home}")
    checked = verify_site(plan, home)
    problems += [f"service {r.service} at {home}: {r.detail}" for r in checked.results if r.critical and not r.healthy]
    if plan.incident_record and plan.incident_record.exists():
        active = json.loads(plan.incident_record.read_text() or "{}")
        if active:
            problems.append(f"faults active: {', '.join(active)}")
    return problems


def wait_until_normal(plan: Plan, home: str, away: str, timeout: float = 30.0) -> list[str]:
    """The normal state's problems once they are gone (empty), or as they stand after `timeout`:
    a restarted primary's standby takes a few seconds to stream again."""
    problems: list[str] = []

    def normal() -> bool:
        nonlocal problems
        problems = normal_state_problems(plan, home, away)
        return not problems

    wait_until(normal, timeout=timeout, interval=0.5)
    return problems
