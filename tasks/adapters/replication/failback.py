"""Failback: make the old primary a standby of the new one without throwing anything away, then
switch the roles back in a planned, lossless switchover.

Knows nothing of Prefect. `preserve_and_rebuild_standby` never deletes: the old primary's data
directory is renamed to `<data_dir>.split-<UTC time>` (a half-made copy from an interrupted run to
`.incomplete-<time>`), the rows only it holds are reported beside it (tasks/adapters/replication/split.py),
and a new standby is cloned from the new primary with `pg_basebackup -R -X stream -C -S <slot>`.
The instance's own `*.conf` files (port, listen address, pg_hba) are copied back from the kept
directory: a base backup brings the other site's. The data directory's parent must be writable by
the host's login user, and the configuration must live in the data directory (initdb's layout).

`switch_back` is the planned switchover: the standby catches up, the primary stops cleanly (a fast
shutdown sends all WAL to the connected standby first), the standby is confirmed to have replayed
the final shutdown checkpoint, is promoted, and the old primary follows the new timeline as a standby
(`recovery_target_timeline = 'latest'`); if it does not stream within a few seconds it is preserved
and rebuilt. Settings are written with ALTER SYSTEM, so the DSN's user must be allowed to run it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from lifeline.tasks.adapters.deadline import wait_until
from lifeline.tasks.adapters.postgres.connection import ConnectionInfo, database_session
from lifeline.tasks.adapters.replication import (
    CatchUp,
    Lsn,
    Promotion,
    ReplicationError,
    ServerState,
    Targets,
    instance_of,
    instance_state,
    libpq_tool,
    observation_connection,
    promote,
    remote,
    server_status,
    start_server,
    stop_server,
    streams_from,
    target_of,
    tool,
    wait_caught_up,
)
from lifeline.tasks.adapters.replication.database import ReplicatedDatabase
from lifeline.tasks.adapters.replication.split import SplitReport, report_split
from lifeline.tasks.adapters.ssh import SshCommandFailed, SshTarget
from psycopg import sql

STREAMING_TIMEOUT_SECONDS = 10.0
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


class OldPrimaryRunning(ReplicationError):
    """Refused: a running server's data directory is never moved (fence or stop it first)."""


class CannotPreserve(ReplicationError):
    user_error = True


class SwitchBackAborted(ReplicationError):
    pass


class SplitBrain(ReplicationError):
    pass


@dataclass(frozen=True)
class StandbyRebuild:
    standby_site: str
    primary_site: str
    slot: str
    already_streaming: bool  # nothing was done
    split: SplitReport | None  # None when there was no old data directory to keep
    catch_up: CatchUp
    seconds: float


@dataclass(frozen=True)
class SwitchBack:
    primary_site: str
    standby_site: str
    already_done: bool
    final_checkpoint_lsn: Lsn | None  # the old primary's shutdown checkpoint, replayed before promoting
    promotion: Promotion | None
    followed: bool  # the old primary re-attached to the new timeline without a rebuild
    rebuild: StandbyRebuild | None
    catch_up: CatchUp
    seconds: float


def slot_for(database: ReplicatedDatabase, site: str) -> str:
    """The plan's slot for its normal standby; `<site>_slot` for any other site."""
    if site != database.primary and database.replication_slot:
        return database.replication_slot
    return re.sub(r"[^a-z0-9_]", "_", site.lower()) + "_slot"


def _conninfo_value(value: object) -> str:
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./:@-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def replication_conninfo(database: ReplicatedDatabase, upstream_site: str, standby_site: str) -> str:
    """primary_conninfo for `standby_site` streaming from `upstream_site`: a passfile, never a password."""
    upstream = ConnectionInfo.from_dsn(instance_of(database, upstream_site).dsn)
    standby = instance_of(database, standby_site)
    pairs: dict[str, object] = {"host": upstream.host, "port": upstream.port, "user": database.replication_user,
                                "application_name": standby_site, **dict(upstream.options)}
    if standby.passfile:
        pairs["passfile"] = standby.passfile
    return " ".join(f"{name}={_conninfo_value(value)}" for name, value in pairs.items() if value is not None)


# --- preserve and rebuild ---------------------------------------------------------------------------

def _data_directory_kind(target: SshTarget, data_dir: Path) -> Literal["missing", "empty", "cluster", "incomplete"]:
    result = remote(target, ["env", "LC_ALL=C", "ls", "-A", data_dir], check=False)
    if not result.succeeded:
        if "No such file" in result.stderr:
            return "missing"
        raise ReplicationError(f"{target.label}: cannot list {data_dir}: {result.stderr_tail()}")
    names = set(result.stdout.splitlines())
    if not names:
        return "empty"
    if "backup_label" in names:  # a base backup that never started: possibly cut short
        return "incomplete"
    return "cluster" if {"PG_VERSION", "global"} <= names else "incomplete"


def move_aside(target: SshTarget, data_dir: Path, suffix: str) -> Path:
    kept = data_dir.with_name(f"{data_dir.name}.{suffix}-{datetime.now(UTC).strftime(STAMP_FORMAT)}")
    remote(target, ["mv", "-n", "-T", data_dir, kept])
    if remote(target, ["test", "-e", data_dir], check=False).succeeded:
        raise ReplicationError(f"{target.label}: {data_dir} could not be moved to {kept} (it exists already)")
    return kept


def _newest_kept_copy(target: SshTarget, data_dir: Path) -> Path | None:
    """After an interrupted run that moved the data directory but did not rebuild it: the newest kept copy."""
    result = remote(target, ["find", data_dir.parent, "-mindepth", "1", "-maxdepth", "1", "-type", "d",
                             "-name", f"{data_dir.name}.split-*", "-printf", "%f\\n"])
    pattern = re.compile(re.escape(data_dir.name) + r"\.split-\d{8}T\d{6}Z")
    names = sorted(name for name in result.stdout.splitlines() if pattern.fullmatch(name))
    return data_dir.with_name(names[-1]) if names else None


def _restore_configuration(target: SshTarget, kept: Path, data_dir: Path) -> None:
    result = remote(target, ["find", kept, "-mindepth", "1", "-maxdepth", "1", "-type", "f", "-name", "*.conf",
                             "!", "-name", "postgresql.auto.conf", "-printf", "%f\\n"])
    names = [name for name in result.stdout.splitlines() if name]
    if names:
        remote(target, ["cp", "-p", *(kept / name for name in names), f"{data_dir}/"])


def _drop_inactive_slot(database: ReplicatedDatabase, site: str, slot: str) -> None:
    with database_session(observation_connection(instance_of(database, site)), f"drop slot {slot} at {site}") as session:
        row = session.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row and row[0]:
            raise ReplicationError(f"replication slot {slot} at {site} is in use by another standby: refusing to drop it")
        if row:
            session.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def _wait_streaming(database: ReplicatedDatabase, primary_site: str, standby_site: str, slot: str, timeout: float) -> bool:
    return wait_until(lambda: streams_from(database, primary_site, standby_site, slot), timeout=timeout, interval=0.1)


def preserve_and_rebuild_standby(
    database: ReplicatedDatabase, old_primary_site: str, new_primary_site: str, targets: Targets, *, slot: str | None = None,
    spare_port: int | None = None, catch_up_timeout: float = 60.0, basebackup_timeout: float = 600.0,
    start_timeout: float = 120.0,
) -> StandbyRebuild:
    """Keep the old primary's data aside, report what only it had, and make it a caught-up standby."""
    started = time.monotonic()
    old = instance_of(database, old_primary_site)
    target = target_of(old, targets)
    slot = slot or slot_for(database, old_primary_site)
    primary = instance_state(database, new_primary_site)
    if primary.role != "primary":
        raise ReplicationError(f"{new_primary_site} is {primary.detail or primary.role}, not a primary to rebuild from")
    if streams_from(database, new_primary_site, old_primary_site, slot):
        catch_up = wait_caught_up(database, new_primary_site, old_primary_site, catch_up_timeout)
        return StandbyRebuild(old_primary_site, new_primary_site, slot, True, None, catch_up,
                              time.monotonic() - started)
    status = server_status(old, target)
    if status.state is ServerState.RUNNING:
        raise OldPrimaryRunning(f"{old_primary_site}'s server is running ({target.label}, pid {status.pid}) and does "
                                f"not stream from {new_primary_site}: stop or fence it first")
    if not remote(target, ["test", "-w", old.data_dir.parent], check=False).succeeded:
        raise CannotPreserve(f"{target.label}: {old.data_dir.parent} is not writable by {target.user}, so "
                             f"{old.data_dir} cannot be moved aside; nothing was changed")
    kind = _data_directory_kind(target, old.data_dir)
    if kind == "incomplete":
        move_aside(target, old.data_dir, "incomplete")
    kept = move_aside(target, old.data_dir, "split") if kind == "cluster" else _newest_kept_copy(target, old.data_dir)
    split = report_split(database, old_primary_site, kept, new_primary_site, targets, spare_port=spare_port,
                         start_timeout=start_timeout) if kept else None
    _drop_inactive_slot(database, new_primary_site, slot)
    try:
        remote(target, [*libpq_tool(old, "pg_basebackup"), "-D", old.data_dir, "-R", "-X", "stream", "-C",
                        "-S", slot, "-c", "fast", "-d", replication_conninfo(database, new_primary_site,
                                                                             old_primary_site)],
               basebackup_timeout)
    except SshCommandFailed as error:
        raise ReplicationError(f"cloning {new_primary_site} into {old_primary_site} failed: {error.detail}") from None
    if kept:
        _restore_configuration(target, kept, old.data_dir)
    start_server(old, target, start_timeout)
    catch_up = wait_caught_up(database, new_primary_site, old_primary_site, catch_up_timeout)
    if not _wait_streaming(database, new_primary_site, old_primary_site, slot, STREAMING_TIMEOUT_SECONDS):
        raise ReplicationError(f"{old_primary_site} caught up but does not stream from {new_primary_site}")
    return StandbyRebuild(old_primary_site, new_primary_site, slot, False, split, catch_up,
                          time.monotonic() - started)


# --- planned switchover -----------------------------------------------------------------------------

def _apply_follow_settings(database: ReplicatedDatabase, site: str, upstream_site: str, slot: str) -> None:
    """ALTER SYSTEM: ignored while `site` is a primary, used once it starts with standby.signal."""
    settings = {"primary_conninfo": replication_conninfo(database, upstream_site, site), "primary_slot_name": slot,
                "recovery_target_timeline": "latest"}
    with database_session(observation_connection(instance_of(database, site)), f"configure {site} to follow "
                                                                                 f"{upstream_site}") as session:
        for name, value in settings.items():
            session.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        session.execute("SELECT pg_reload_conf()")


def _ensure_slot(database: ReplicatedDatabase, site: str, slot: str) -> None:
    """A physical slot reserving WAL from now (allowed on a standby too; it survives promotion)."""
    with database_session(observation_connection(instance_of(database, site)), f"create slot {slot} at {site}") as session:
        session.execute("SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS "
                        "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)", (slot, slot))


def _final_checkpoint(database: ReplicatedDatabase, site: str, targets: Targets) -> tuple[str, Lsn | None]:
    """The stopped instance's pg_controldata: its cluster state and latest checkpoint location."""
    instance = instance_of(database, site)
    output = remote(target_of(instance, targets), ["env", "LC_ALL=C", tool(instance, "pg_controldata"),
                                                    instance.data_dir]).stdout
    fields = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    return fields.get("Database cluster state", "").strip(), Lsn.parse(fields.get("Latest checkpoint location",
                                                                                  "").strip())


def _replayed_past(database: ReplicatedDatabase, site: str, lsn: Lsn, timeout: float) -> bool:
    """Has `site` replayed the record that starts at `lsn` (its replay position is beyond it)?"""
    def replayed() -> bool:
        state = instance_state(database, site)
        return bool(state.in_recovery and state.current_lsn is not None and state.current_lsn > lsn)

    return wait_until(replayed, timeout=timeout, interval=0.05)


def _other_site(database: ReplicatedDatabase, site: str) -> str:
    others = [name for name in database.instances if name != site]
    if len(others) != 1:
        raise ReplicationError(f"name the standby site: the database has {len(others)} instances besides {site}")
    return others[0]


def switch_back_cut_short(database: ReplicatedDatabase, targets: Targets, *, primary_site: str,
                          standby_site: str) -> bool:
    """A switch-back stopped `standby_site` (the current primary) cleanly and was cut short before promoting
    `primary_site`, still its standby: `switch_back` resumes from there, nothing needs rebuilding."""
    if instance_state(database, primary_site).role != "standby":
        return False
    stopped = instance_of(database, standby_site)
    if server_status(stopped, target_of(stopped, targets)).state is not ServerState.STOPPED:
        return False
    return _final_checkpoint(database, standby_site, targets)[0] == "shut down"


def switch_back(
    database: ReplicatedDatabase, targets: Targets, *, primary_site: str | None = None, standby_site: str | None = None,
    follow_timeout: float = 5.0, final_wal_timeout: float = 10.0, catch_up_timeout: float = 60.0,
) -> SwitchBack:
    """Planned switchover: `primary_site` (default the plan's primary) becomes primary again, losing nothing,
    and `standby_site` (the current primary) streams from it through its slot."""
    started = time.monotonic()
    to_site = primary_site or database.primary
    from_site = standby_site or _other_site(database, to_site)
    slot = slot_for(database, from_site)
    from_instance = instance_of(database, from_site)
    from_target = target_of(from_instance, targets)
    to_state = instance_state(database, to_site)
    if to_state.role == "primary" and streams_from(database, to_site, from_site, slot):
        catch_up = wait_caught_up(database, to_site, from_site, catch_up_timeout)
        return SwitchBack(to_site, from_site, True, None, None, True, None, catch_up, time.monotonic() - started)
    checkpoint: Lsn | None = None
    promotion: Promotion | None = None
    if to_state.role == "standby":
        if instance_state(database, from_site).role == "primary":
            wait_caught_up(database, from_site, to_site, catch_up_timeout)
            _apply_follow_settings(database, from_site, to_site, slot)
            stop_server(from_instance, from_target, "fast")
        elif server_status(from_instance, from_target).state is not ServerState.STOPPED:  # else resumed after the stop
            raise SwitchBackAborted(f"{from_site} is neither the primary {to_site} follows nor stopped")
        cluster_state, checkpoint = _final_checkpoint(database, from_site, targets)
        if cluster_state != "shut down" or checkpoint is None or not _replayed_past(database, to_site, checkpoint,
                                                                                     final_wal_timeout):
            start_server(from_instance, from_target)  # still a primary (no standby.signal): service goes on
            raise SwitchBackAborted(f"{to_site} did not replay {from_site}'s final checkpoint {checkpoint} "
                                    f"({cluster_state}) within {final_wal_timeout:g} s: {from_site} restarted as primary")
        _ensure_slot(database, to_site, slot)
        promotion = promote(database, to_site, targets)
    elif to_state.role == "primary":  # resumed after the promotion
        if instance_state(database, from_site).role == "primary":
            raise SplitBrain(f"both {to_site} and {from_site} are primaries: fence one before failing back")
    else:
        raise SwitchBackAborted(f"{to_site} does not answer: {to_state.detail}")
    if server_status(from_instance, from_target).state is not ServerState.RUNNING:
        remote(from_target, ["touch", from_instance.data_dir / "standby.signal"])
        start_server(from_instance, from_target)
    _apply_follow_settings(database, from_site, to_site, slot)
    followed = _wait_streaming(database, to_site, from_site, slot, follow_timeout)
    rebuild = None
    if not followed:
        stop_server(from_instance, from_target, "fast")
        rebuild = preserve_and_rebuild_standby(database, from_site, to_site, targets, slot=slot,
                                               catch_up_timeout=catch_up_timeout)
    _drop_stale_slot(database, from_site, slot_for(database, to_site))
    catch_up = wait_caught_up(database, to_site, from_site, catch_up_timeout)
    return SwitchBack(to_site, from_site, False, checkpoint, promotion, followed, rebuild, catch_up,
                      time.monotonic() - started)


def _drop_stale_slot(database: ReplicatedDatabase, site: str, slot: str) -> None:
    """The slot `site` kept for the other site while it was primary: on a standby it only holds WAL back."""
    with database_session(observation_connection(instance_of(database, site)), f"drop slot {slot} at {site}") as session:
        session.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = %s AND NOT active", (slot,))
