"""The PostgreSQL side of continuous archiving: archive_command set with ALTER SYSTEM, pg_stat_archiver read,
a WAL switch waited for until it is archived."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lifeline.tasks.adapters.deadline import wait_until
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.postgres.connection import ConnectionInfo, database_session


class ArchivingFailed(LifelineError):
    """One line naming the instance."""


@dataclass(frozen=True)
class ArchiverStatus:
    archive_mode: str
    archive_command: str
    current_wal: str | None  # None on a standby
    last_archived_wal: str | None  # pg_stat_archiver: reset by a crash (an immediate stop), so only informative
    last_archived_at: datetime | None
    last_failed_wal: str | None
    last_failed_at: datetime | None
    now: datetime
    pending_segments: int  # completed segments waiting for archive_command (`.ready` in pg_wal/archive_status)
    oldest_pending_at: datetime | None  # when the oldest of them was completed

    @property
    def configured(self) -> bool:
        return self.archive_mode != "off" and bool(self.archive_command)

    @property
    def failing(self) -> bool:
        return self.last_failed_at is not None and (self.last_archived_at is None
                                                     or self.last_failed_at > self.last_archived_at)

    @property
    def exposure_seconds(self) -> float | None:
        """How much written data is not archived yet, as time: 0 when only the segment being written is
        (archive_timeout bounds that), else since the oldest waiting segment was completed; None when
        archiving is not configured."""
        if not self.configured:
            return None
        if self.pending_segments == 0 or self.oldest_pending_at is None:
            return 0.0
        return max(0.0, (self.now - self.oldest_pending_at).total_seconds())


_STATUS_SQL = """
SELECT current_setting('archive_mode'), current_setting('archive_command'),
       CASE WHEN NOT pg_is_in_recovery() THEN pg_walfile_name(pg_current_wal_insert_lsn()) END,
       last_archived_wal, last_archived_time, last_failed_wal, last_failed_time, now(), waiting.count, waiting.oldest
FROM pg_stat_archiver,
     (SELECT count(*) AS count, min(modification) AS oldest FROM pg_ls_archive_statusdir()
      WHERE name LIKE '%.ready') AS waiting
"""


def _segment_number(name: str) -> int:
    """A WAL file name's position within its timeline (log * 256 + segment, for 16 MB segments)."""
    return int(name[8:16], 16) * 0x100 + int(name[16:24], 16)


def _position(name: str) -> tuple[int, int]:
    return int(name[:8], 16), _segment_number(name)


def archiver_status(connection: ConnectionInfo) -> ArchiverStatus:
    """Needs a superuser or a member of pg_monitor (pg_ls_archive_statusdir)."""
    with database_session(connection, "read pg_stat_archiver at") as session:
        row = session.execute(_STATUS_SQL).fetchone()
    assert row is not None
    return ArchiverStatus(*row[:8], int(row[8]), row[9])


_TIMELINES_SQL = "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), pg_walfile_name(pg_current_wal_lsn())"


def checkpoint_after_promotion(connection: ConnectionInfo) -> bool:
    """A just-promoted primary names its new timeline in pg_control only at its first checkpoint, and pgBackRest
    refuses a backup before that ([058] WAL timeline does not match pg_control timeline): take it now.
    True when one was needed."""
    with database_session(connection, "checkpoint at") as session:
        control_timeline, writing = session.execute(_TIMELINES_SQL).fetchone()
        if control_timeline >= _position(writing)[0]:
            return False
        session.execute("CHECKPOINT")
    return True


def set_archiving(connection: ConnectionInfo, command: str, timeout_seconds: int) -> bool:
    """archive_command and archive_timeout by ALTER SYSTEM, then reload; returns whether anything changed.
    archive_mode needs a restart, so it is only checked: the message says what to do."""
    with database_session(connection, "set archive_command at") as session:
        mode, current_command, current_timeout = session.execute(
            "SELECT current_setting('archive_mode'), current_setting('archive_command'), "
            "(SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout')").fetchone()
        if mode == "off":
            raise ArchivingFailed(f"{connection.address}: archive_mode is off; set archive_mode = on in "
                                  "postgresql.conf and restart the server (it cannot change while it runs)")
        if current_command == command and current_timeout == timeout_seconds:
            return False
        session.execute(f"ALTER SYSTEM SET archive_command = {_literal(command)}")
        session.execute(f"ALTER SYSTEM SET archive_timeout = {int(timeout_seconds)}")
        session.execute("SELECT pg_reload_conf()")
        if not wait_until(lambda: session.execute("SELECT current_setting('archive_command')").fetchone()[0] == command,
                          timeout=10, interval=0.1):
            raise ArchivingFailed(f"{connection.address}: the new archive_command was not loaded within 10 s")
    return True


def switch_and_wait_archived(connection: ConnectionInfo, timeout: float = 60) -> ArchiverStatus:
    """Close the WAL segment being written and wait until it is archived: everything committed before
    this call is then in the repositories."""
    with database_session(connection, "switch WAL at") as session:
        switched = session.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    wanted = _position(switched)

    def archived() -> ArchiverStatus | None:
        status = archiver_status(connection)
        return status if status.last_archived_wal and _position(status.last_archived_wal) >= wanted else None

    status = wait_until(archived, timeout=timeout, interval=0.2)
    if status is None:
        last = archiver_status(connection)
        failing = f"; archiving has failed since {last.last_failed_at:%H:%M:%S}" if last.failing else ""
        raise ArchivingFailed(f"{connection.address}: WAL segment {switched} was not archived within "
                              f"{timeout:g} s{failing} (see pgBackRest's log on the database host)")
    return status


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


RECOVERY_SETTINGS = ("restore_command", "recovery_target_time", "recovery_target_xid", "recovery_target_inclusive",
                     "recovery_target_action")


def forget_recovery_settings(connection: ConnectionInfo) -> None:
    """pgBackRest's restore wrote its recovery settings into postgresql.auto.conf; once the restored primary has
    promoted they only harm: a standby cloned from it would copy them and stop at the same target."""
    with database_session(connection, "reset the recovery settings at") as session:
        for name in RECOVERY_SETTINGS:
            session.execute(f"ALTER SYSTEM RESET {name}")
        session.execute("SELECT pg_reload_conf()")
