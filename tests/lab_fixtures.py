"""The lab for the tests: `lab`, one per session (brought up once, torn down at the end), and what
the tests that fail it over share.

Mount it from tests/conftest.py with ``pytest_plugins = [..., "tests.lab_fixtures"]``.

The lab lives in its own temporary LIFELINE_HOME (not the per-test one) on free ports, so it
never collides with a lab a developer runs on the default ports. Tests that break it must leave
it as they found it: `lab.restore_normal()` heals and waits for the normal state; a test that
promotes dr (a failover) fails back with `back_to_normal(lab)`. `normal_lab` gives a test the lab
normal with fresh snapshots and repairs whatever the test left (heal and fail back, or
`lab.rebuild()`, about 6 s, as the last resort). `monitor` writes at both databases for a test's
whole length; `call_log` and its helpers read what the lab's callers saw.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from lifeline.configs.loading import load_plan
from lifeline.infra.lab import LabContext, LabStatus, down, heal, open_lab, status, up
from lifeline.infra.lab import postgres as lab_postgres
from lifeline.tasks.adapters import ssh
from lifeline.tasks.run.record import utc_now

from tests.helpers import ledger, wait_for

MONITOR_TABLE = "failover_write_monitor"
MONITOR_PERIOD = 0.05
# Preflight (tasks/steps/preflight.py `_snapshots_fresh`) holds each dataset's newest snapshot to that dataset's own
# RPO target (Plan.rpo_target). The lab's plan, rendered from configs/callcenter.yaml, gives every dataset
# (recordings, crm-db, ivr-config) rpo_minutes: 1500, about a day; the plan-wide 5 minutes is the target of none
# of them (preflight holds the crm database's standby lag to it, which no backup changes). `FreshBackups` backs
# the lab up again before its snapshots are older than the shortest of the datasets' targets less this margin:
# the longest a test runs from `ensure()` to its last preflight (a few minutes), with room to spare.
PREFLIGHT_MARGIN = timedelta(minutes=10)


@dataclass
class Lab:
    """A running lab: where it is, its plan, and helpers for tests."""

    home: Path

    @property
    def context(self) -> LabContext:
        return open_lab(self.home)

    @property
    def plan(self) -> Path:
        return Path(self.context.paths.plan_file)

    @property
    def lab_dir(self) -> Path:
        return Path(self.context.paths.root)

    def status(self) -> LabStatus:
        return status(self.home)

    def query(self, cluster: str, sql: str, database: str | None = None,
              parameters: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """One statement at ``main``, ``dr`` (database ``crm`` by default) or ``calllog``
        (database ``calls``)."""
        database = database or (lab_postgres.CALL_LOG_DATABASE if cluster == "calllog" else lab_postgres.CRM_DATABASE)
        rows: list[tuple[Any, ...]] = lab_postgres.query(self.context, cluster, sql, database=database,
                                                        parameters=parameters)
        return rows

    def wait_normal(self, timeout: float = 20.0) -> LabStatus:
        deadline = time.monotonic() + timeout
        while True:
            current = self.status()
            if current.normal or time.monotonic() > deadline:
                assert current.normal, f"the lab is not normal: {current.not_normal_because}"
                return current
            time.sleep(0.3)

    def restore_normal(self, timeout: float = 20.0) -> LabStatus:
        """Heal infrastructure faults and wait for the normal state."""
        heal(self.home, log=lambda message: None)
        return self.wait_normal(timeout)

    def rebuild(self) -> None:
        """From scratch (after a failover): down --purge, then up on new free ports."""
        down(self.home, purge=True, log=lambda message: None)
        up(self.home, free_ports=True, log=lambda message: None)
        self.wait_normal()


def new_lab_home(prefix: str = "lifeline-lab-") -> Path:
    """A temporary LIFELINE_HOME the lab user can traverse (mkdtemp makes 0700 directories)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(home, 0o755)
    return home


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    home = new_lab_home()
    try:
        up(home, free_ports=True)
        running = Lab(home)
        running.wait_normal(30)
        yield running
    finally:
        down(home, purge=True)
        home.rmdir()


def in_recovery(lab: Lab, site: str) -> bool | None:
    """pg_is_in_recovery() at a site; None when its database does not answer."""
    try:
        return lab.query(site, "SELECT pg_is_in_recovery()")[0][0]
    except psycopg.Error:
        return None


# --- the lab, kept normal and backed up ------------------------------------------------------------

@dataclass
class FreshBackups:
    """Preflight refuses a failover without recent snapshots: back the lab up again before they age past
    the shortest RPO target of its datasets (less `PREFLIGHT_MARGIN`). It also wants the CRM's WAL archived
    (the plan's `pitr`): when main's archive is not within its target, `lifeline pitr setup`'s flow runs, as an
    operator would (once; and after the S3 keys changed: a restarted moto has new ones)."""

    lab: Lab
    taken_at: float = float("-inf")  # time.monotonic() when the last backup began; -inf: none yet

    def interval(self) -> timedelta:
        plan = load_plan(self.lab.plan).plan
        return min(plan.rpo_target(name) for name in plan.datasets) - PREFLIGHT_MARGIN

    def ensure(self) -> None:
        if time.monotonic() - self.taken_at > self.interval().total_seconds():
            from lifeline.flows.backup import backup_flow  # Prefect is imported only when a test needs it

            began = time.monotonic()
            record = ledger().run(backup_flow(str(self.lab.plan)))
            assert record is not None and record.status == "completed", record and record.error
            self.taken_at = began
        from lifeline.tasks.steps.pitr import archive_lag

        if not archive_lag(load_plan(self.lab.plan).plan, "crm", "main").within_target:
            # never set up, or the lab's moto restarted (a fresh moto has new keys and an empty cc-pitr): the
            # hosts' pgBackRest configs are written again from the credentials file and the stanza created
            from lifeline.flows.pitr import pitr_backup_flow

            record = ledger().run(pitr_backup_flow(str(self.lab.plan), "crm"))
            assert record is not None and record.status == "completed", record and record.error

    def ensure_pitr_backup(self) -> None:
        """A pgBackRest backup of the CRM to restore from (a point-in-time repair, the logical-corruption drill):
        the suite's PITR tests take their own; a soak or kill matrix takes one here when there is none, or when
        the newest is from an older timeline than main's. A site loss leaves a gap in the archive (the WAL main
        never archived) that only a backup taken after it gets past; restores aim a few seconds back, so this
        returns once they can land after the new backup."""
        from lifeline.tasks.run.pitr_inputs import pgbackrest_at, pitr_of

        plan = load_plan(self.lab.plan).plan
        database, _ = pitr_of(plan, "crm")
        newest = pgbackrest_at(plan, database, "main").info().newest_backup()
        [(writing,)] = self.lab.query("main", "SELECT pg_walfile_name(pg_current_wal_lsn())")
        if newest is None or newest.wal_start[:8] < writing[:8]:
            from lifeline.flows.pitr import pitr_backup_flow

            record = ledger().run(pitr_backup_flow(str(self.lab.plan), "crm", kind="full" if newest is None else "incr"))
            assert record is not None and record.status == "completed", record and record.error
            time.sleep(max(0.0, (record.ended_at - utc_now()).total_seconds() + 3))  # a restore 2 s back lands after it

    def forget(self) -> None:
        """The lab was rebuilt, its repositories with it: back up at the next `ensure()`."""
        self.taken_at = float("-inf")


@pytest.fixture(scope="module")
def fresh_backups(lab: Lab, prefect_server: str) -> FreshBackups:
    """A backup at the module's start, whatever the modules before did to the lab's repositories (test_leak
    plants snapshots of its own), then again whenever a test's `ensure()` finds the snapshots aged."""
    lab.wait_normal(30)
    backups = FreshBackups(lab)
    backups.ensure()
    return backups


def back_to_normal(lab: Lab) -> None:
    """After a failover: the infrastructure healed, then Lifeline's own failback (the lab never does that)."""
    heal(lab.home, log=lambda message: None)
    if in_recovery(lab, "main") is not False or in_recovery(lab, "dr") is not True or \
            lab.status().dns.points_at != "main":
        from lifeline.flows.failback import failback_flow

        record = ledger().run(failback_flow(str(lab.plan), approval="yes"))
        assert record is not None and record.status == "completed", record and record.error
    lab.wait_normal(30)


@pytest.fixture
def normal_lab(lab: Lab, fresh_backups: FreshBackups) -> Iterator[Lab]:
    """The lab in its normal state with fresh snapshots; normal again afterwards, whatever the test did."""
    fresh_backups.ensure()
    lab.wait_normal(30)
    try:
        yield lab
    finally:
        ssh.close_all()
        if not lab.status().normal:
            try:
                back_to_normal(lab)
            except Exception:  # noqa: BLE001 - broken beyond a failback: start the lab over
                lab.rebuild()
                fresh_backups.forget()


# --- the write monitor -----------------------------------------------------------------------------

@dataclass
class Write:
    site: str
    sent: float  # wall clock (time.time()), comparable with the record's timestamps
    acknowledged: float
    row_id: int = 0  # the id the database gave the row


@dataclass
class WriteMonitor:
    """Tries an autocommit INSERT at main and at dr every 50 ms, each side on its own thread, and
    keeps every write a database acknowledged: (site, sent, acknowledged).

    "Both committed" is defined on those acknowledged writes. Order them by the time they were
    sent and cut the sequence into runs of one site each; at every change of site, the old
    primary's last acknowledged write must have been acknowledged *before* the new primary's
    first accepted write was sent. If both ever took writes at the same time, some write at one
    would be sent while the other was still acknowledging writes, and the check fails. Its
    resolution is the probe period: a window shorter than 50 ms between two probes of a side
    could go unseen.
    """

    dsns: dict[str, str]
    passfile: str
    accepted: list[Write] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=lambda: {"main": 0, "dr": 0})
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> WriteMonitor:
        for site in self.dsns:
            thread = threading.Thread(target=self._probe, args=(site,), name=f"write-monitor-{site}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _probe(self, site: str) -> None:
        connection = None
        while not self.stop.is_set():
            began = time.monotonic()
            sent = time.time()
            try:
                if connection is None:
                    connection = psycopg.connect(self.dsns[site], passfile=self.passfile, connect_timeout=2,
                                                 autocommit=True, application_name="write-monitor",
                                                 options="-c statement_timeout=2000")
                [row_id] = connection.execute(
                    f"INSERT INTO {MONITOR_TABLE} (site, sent_at) VALUES (%s, now()) RETURNING id", (site,)).fetchone()
                with self.lock:
                    self.accepted.append(Write(site, sent, time.time(), row_id))
            except psycopg.Error:
                with self.lock:
                    self.refused[site] += 1
                if connection is not None and (connection.closed or connection.broken):
                    connection.close()
                    connection = None
            self.stop.wait(max(0.0, MONITOR_PERIOD - (time.monotonic() - began)))
        if connection is not None:
            connection.close()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)

    def primaries(self) -> list[tuple[str, float, float]]:
        """Runs of acknowledged writes: (site, first sent, last acknowledged), in order."""
        with self.lock:
            writes = sorted(self.accepted, key=lambda write: write.sent)
        runs: list[list[Write]] = []
        for write in writes:
            if runs and runs[-1][0].site == write.site:
                runs[-1].append(write)
            else:
                runs.append([write])
        return [(run[0].site, run[0].sent, max(w.acknowledged for w in run)) for run in runs]

    def assert_one_primary_at_a_time(self, expected: list[str]) -> None:
        runs = self.primaries()
        assert [site for site, _, _ in runs] == expected, f"writes were accepted by {runs}"
        for (old, _, last_acknowledged), (new, first_sent, _) in zip(runs, runs[1:], strict=False):
            assert last_acknowledged < first_sent, (
                f"{old} acknowledged a write at {last_acknowledged:.3f}, after {new} had accepted one sent at "
                f"{first_sent:.3f}: both took writes at once")

    def acknowledged_rows(self) -> set[int]:
        with self.lock:
            return {write.row_id for write in self.accepted}

    def lost_rows(self, lab: Lab, site: str) -> set[int]:
        """Rows some primary acknowledged that the database at `site` (the primary now) does not have."""
        acknowledged = self.acknowledged_rows()
        kept = {row for (row,) in lab.query(site, f"SELECT id FROM {MONITOR_TABLE} WHERE id = ANY(%s)",
                                             parameters=(list(acknowledged),))}
        return acknowledged - kept

    def last_acknowledged_at(self, site: str) -> datetime:
        with self.lock:
            return datetime.fromtimestamp(max(w.acknowledged for w in self.accepted if w.site == site), UTC)


def back_to_main_with_one_primary_at_a_time(lab: Lab, monitor: WriteMonitor) -> None:
    """The end of a failover test: back to the normal state, and the write monitor saw main, then dr, then main
    take writes, never two at once."""
    back_to_normal(lab)
    monitor.finish()
    monitor.assert_one_primary_at_a_time(["main", "dr", "main"])


@pytest.fixture
def monitor(normal_lab: Lab) -> Iterator[WriteMonitor]:
    """Writes at both databases every 50 ms from before the test touches anything until it ends."""
    normal_lab.query("main", f"CREATE TABLE IF NOT EXISTS {MONITOR_TABLE} "
                             "(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, site text NOT NULL, sent_at timestamptz)")
    crm = load_plan(normal_lab.plan).plan.databases["crm"]
    watching = WriteMonitor(
        dsns={site: crm.instances[site].dsn for site in ("main", "dr")},
        passfile=str(crm.instances["main"].passfile),
    ).start()
    wait_for(lambda: watching.primaries(), 5, "the monitor's first write at main")
    try:
        yield watching
    finally:
        watching.finish()


# --- what the call log shows -----------------------------------------------------------------------

def call_log(lab: Lab, sql: str, *parameters: Any) -> list[tuple]:
    return lab.query("calllog", sql, parameters=parameters or None)


def wait_for_dr_answering(lab: Lab, since: datetime, timeout: float = 30) -> datetime:
    """When the first call placed after `since` that dr answered was placed (the generator logs in batches)."""
    def first() -> datetime | None:
        return call_log(lab, "SELECT min(placed_at) FROM calls_log WHERE site = 'dr' AND outcome = 'answered' "
                             "AND placed_at >= %s", since)[0][0]

    return wait_for(first, timeout, "calls answered at dr")


def settle_call_log() -> None:
    """The generator flushes its log every 0.25 s; a refused call ends at once."""
    time.sleep(1.0)
