"""Streaming replication: what each PostgreSQL instance is doing, and the server actions failover needs.

Knows nothing of Prefect. Observations are SQL with short timeouts and report an instance that cannot
be reached as `reachable=False` instead of raising. Actions run `pg_ctl` and friends over SSH on the
instance's host, as the host's login user; each first looks whether its effect is already there and
then does nothing, and returns what it did. Lag is measured in LSNs; time only when the standby is
behind (docs/facts.md, PostgreSQL). Passwords stay in passfiles: remote tools get `PGPASSFILE=<path>`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as replaced_copy
from enum import StrEnum
from pathlib import Path
from typing import Literal

from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.deadline import wait_until
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.postgres.connection import ConnectionInfo, PostgresError, connection_info, database_session
from lifeline.tasks.adapters.replication.database import DatabaseNode, ReplicatedDatabase
from lifeline.tasks.adapters.ssh import SshResult, SshTarget

OBSERVATION_CONNECT_TIMEOUT_SECONDS = 3
OBSERVATION_STATEMENT_TIMEOUT = "5s"
REMOTE_COMMAND_TIMEOUT_SECONDS = 20.0
SERVER_LOG = "log/lifeline-pg_ctl.log"  # inside the data directory: pg_ctl start needs somewhere to send output

Targets = Mapping[str, SshTarget]  # the plan's host name -> SSH target (see tasks/run/topology.py)
StopMode = Literal["smart", "fast", "immediate"]


class ReplicationError(LifelineError):
    """One line naming the site or host; never a password."""


class UnknownInstance(ReplicationError):
    user_error = True


class ServerControlFailed(ReplicationError):
    """pg_ctl (or another server tool) did not do what was asked."""


class NotCaughtUp(ReplicationError):
    transient = True


class Lsn(int):
    """A WAL position: an int (so it subtracts and compares) printed as PostgreSQL prints it."""

    @classmethod
    def parse(cls, text: str | None) -> Lsn | None:
        if not text:
            return None
        high, low = text.split("/")
        return cls((int(high, 16) << 32) | int(low, 16))

    def __str__(self) -> str:
        return f"{self >> 32:X}/{self & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn('{self}')"


@dataclass(frozen=True)
class InstanceState:
    site: str
    reachable: bool
    in_recovery: bool | None = None
    current_lsn: Lsn | None = None  # primary: pg_current_wal_lsn(); standby: pg_last_wal_replay_lsn()
    timeline: int | None = None
    replay_age_seconds: float | None = None  # standby: now() - pg_last_xact_replay_timestamp()
    receiver_status: str | None = None  # standby: pg_stat_wal_receiver.status (streaming, waiting...)
    detail: str | None = None  # why it is unreachable

    @property
    def role(self) -> Literal["primary", "standby", "unreachable"]:
        if not self.reachable:
            return "unreachable"
        return "standby" if self.in_recovery else "primary"


@dataclass(frozen=True)
class Lag:
    bytes: int | None
    seconds: float | None

    @property
    def known(self) -> bool:
        return self.bytes is not None


@dataclass(frozen=True)
class StandbyConnection:
    """One row of the primary's pg_stat_replication."""

    application_name: str
    state: str
    slot_name: str | None


@dataclass(frozen=True)
class CatchUp:
    seconds: float


class ServerState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    NO_DATA_DIRECTORY = "no data directory"


@dataclass(frozen=True)
class ServerStatus:
    host: str
    data_dir: Path
    state: ServerState
    pid: int | None = None


@dataclass(frozen=True)
class ServerAction:
    host: str
    data_dir: Path
    action: str
    done: bool  # False: the effect was already there, nothing was run
    detail: str
    seconds: float


@dataclass(frozen=True)
class Promotion:
    site: str
    promoted: bool  # False: it was already a primary
    timeline: int
    lsn: Lsn | None  # where the new timeline forked off (the history file's switch point)
    seconds: float


# --- instance lookups -------------------------------------------------------------------------------

def instance_of(database: ReplicatedDatabase, site: str) -> DatabaseNode:
    try:
        return database.instances[site]
    except KeyError:
        known = ", ".join(sorted(database.instances)) or "none"
        raise UnknownInstance(f"the database has no instance at site {site!r} (sites: {known})") from None


def target_of(instance: DatabaseNode, targets: Targets) -> SshTarget:
    try:
        return targets[instance.host]
    except KeyError:
        raise UnknownInstance(f"host {instance.host!r} of the database instance is not among the plan's hosts") from None


def tool(instance: DatabaseNode, name: str) -> str:
    return str(instance.bin_dir / name)


def libpq_tool(instance: DatabaseNode, name: str) -> list[str]:
    """`env PGPASSFILE=... <bin_dir>/<name>`: the password stays in the passfile on the host."""
    environment = ["LC_ALL=C", "PGCONNECT_TIMEOUT=10", "PGAPPNAME=lifeline"]
    if instance.passfile:
        environment.append(f"PGPASSFILE={instance.passfile}")
    return ["env", *environment, tool(instance, name)]


def observation_connection(instance: DatabaseNode) -> ConnectionInfo:
    connection = connection_info(instance.dsn, instance.passfile)
    return replaced_copy(connection, connect_timeout_seconds=OBSERVATION_CONNECT_TIMEOUT_SECONDS,
                         statement_timeout=OBSERVATION_STATEMENT_TIMEOUT)


def remote(target: SshTarget, argv: Sequence[str], timeout: float = REMOTE_COMMAND_TIMEOUT_SECONDS, *,
           check: bool = True) -> SshResult:
    return ssh.run(target, [str(argument) for argument in argv], timeout, check=check)


# --- observations -----------------------------------------------------------------------------------

_STATE_SQL = """
SELECT pg_is_in_recovery(),
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text,
       CASE WHEN NOT pg_is_in_recovery() THEN pg_walfile_name(pg_current_wal_lsn()) END,
       CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END,
       (SELECT received_tli FROM pg_stat_wal_receiver),
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT timeline_id FROM pg_control_checkpoint())
"""


def _ask(database: ReplicatedDatabase, site: str, action: str, sql: str) -> list[tuple] | str:
    """The rows `sql` returns at `site`, or why the instance did not answer. Bad credentials or a
    missing database are plan errors and raise."""
    try:
        with database_session(observation_connection(instance_of(database, site)), f"{action} {site}") as session:
            return session.execute(sql).fetchall()
    except PostgresError as error:
        if error.user_error:
            raise
        return str(error)


def instance_state(database: ReplicatedDatabase, site: str) -> InstanceState:
    """What the instance at `site` is doing; an instance that does not answer is `reachable=False`.

    Bad credentials or a missing database are plan errors and raise.
    """
    answer = _ask(database, site, "observe", _STATE_SQL)
    if isinstance(answer, str):
        return InstanceState(site=site, reachable=False, detail=answer)
    in_recovery, current, wal_file, replay_age, received_timeline, receiver_status, checkpoint_timeline = answer[0]
    timeline = int(wal_file[:8], 16) if wal_file else (received_timeline or checkpoint_timeline)
    return InstanceState(
        site=site, reachable=True, in_recovery=in_recovery, current_lsn=Lsn.parse(current), timeline=timeline,
        replay_age_seconds=replay_age, receiver_status=receiver_status,
    )


def replication_lag(primary: InstanceState, standby: InstanceState) -> Lag:
    """Bytes the standby has still to replay (observe the primary first); seconds only when behind."""
    if (primary.role != "primary" or standby.role != "standby"
            or primary.current_lsn is None or standby.current_lsn is None):
        return Lag(bytes=None, seconds=None)
    behind = max(0, primary.current_lsn - standby.current_lsn)
    return Lag(bytes=behind, seconds=0.0 if behind == 0 else standby.replay_age_seconds)


_STANDBYS_SQL = """
SELECT r.application_name, r.state, s.slot_name
FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
ORDER BY r.application_name
"""


def streaming_standbys(database: ReplicatedDatabase, primary_site: str) -> list[StandbyConnection] | None:
    """The standbys connected to the instance at `primary_site`; None when it cannot be asked."""
    answer = _ask(database, primary_site, "list the standbys of", _STANDBYS_SQL)
    if isinstance(answer, str):
        return None
    return [StandbyConnection(application_name=name, state=state, slot_name=slot) for name, state, slot in answer]


def streams_from(database: ReplicatedDatabase, primary_site: str, standby_site: str, slot: str | None = None) -> bool:
    """Is the standby at `standby_site` streaming from `primary_site` (matched by application_name or slot)?"""
    for standby in streaming_standbys(database, primary_site) or []:
        if standby.state == "streaming" and (standby.application_name == standby_site
                                             or (slot is not None and standby.slot_name == slot)):
            return True
    return False


def wait_caught_up(database: ReplicatedDatabase, primary_site: str, standby_site: str, timeout: float = 60.0,
                   poll_seconds: float = 0.05) -> CatchUp:
    """Wait until the standby has replayed everything the primary had written when asked."""
    started = time.monotonic()
    primary = instance_state(database, primary_site)
    if primary.role != "primary" or primary.current_lsn is None:
        raise NotCaughtUp(f"{primary_site} is not a primary ({primary.detail or primary.role}): nothing to catch up with")
    target = primary.current_lsn
    replayed: Lsn | None = None
    last_problem = "no answer yet"

    def caught_up() -> bool:
        nonlocal replayed, last_problem
        answer = _ask(database, standby_site, "follow the replay at", "SELECT pg_last_wal_replay_lsn()::text")
        if isinstance(answer, str):
            last_problem = answer
            return False
        replayed = Lsn.parse(answer[0][0])
        last_problem = f"replayed {replayed or 'nothing'}"
        return replayed is not None and replayed >= target

    if wait_until(caught_up, timeout=timeout, interval=poll_seconds):
        return CatchUp(seconds=time.monotonic() - started)
    raise NotCaughtUp(f"{standby_site} did not replay up to {primary_site}'s {target} within "
                      f"{time.monotonic() - started:.0f} s ({last_problem})")


def _whole(seconds: float) -> int:
    """pg_ctl -t takes whole seconds."""
    return max(1, round(seconds))


def _output_tail(result: SshResult, lines: int = 3) -> str:
    text = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return " | ".join(line.strip() for line in text[-lines:])[-300:]


def server_status(instance: DatabaseNode, target: SshTarget, *, data_dir: Path | None = None,
                  timeout: float = REMOTE_COMMAND_TIMEOUT_SECONDS) -> ServerStatus:
    """`pg_ctl status`: exit 0 running, 3 stopped, 4 no accessible data directory."""
    directory = data_dir or instance.data_dir
    result = remote(target, [tool(instance, "pg_ctl"), "status", "-D", directory], timeout, check=False)
    if result.exit_status == 0:
        match = re.search(r"PID: (\d+)", result.stdout)
        return ServerStatus(target.name, directory, ServerState.RUNNING, int(match.group(1)) if match else None)
    if result.exit_status == 3:
        return ServerStatus(target.name, directory, ServerState.STOPPED)
    if result.exit_status == 4:
        return ServerStatus(target.name, directory, ServerState.NO_DATA_DIRECTORY)
    raise ServerControlFailed(f"{target.label}: pg_ctl status -D {directory} exited with status "
                              f"{result.exit_status}: {_output_tail(result)}")


def stop_server(instance: DatabaseNode, target: SshTarget, mode: StopMode = "fast", timeout: float = 60.0, *,
                data_dir: Path | None = None) -> ServerAction:
    """Stop the server and confirm it stopped. A fast stop sends all WAL to connected standbys first."""
    started = time.monotonic()
    directory = data_dir or instance.data_dir
    before = server_status(instance, target, data_dir=directory)
    if before.state is not ServerState.RUNNING:
        return ServerAction(target.name, directory, "stop", False, f"already {before.state}", time.monotonic() - started)
    result = remote(target, [tool(instance, "pg_ctl"), "stop", "-D", directory, "-m", mode, "-w", "-t", _whole(timeout)],
                    timeout + 10, check=False)
    after = server_status(instance, target, data_dir=directory)
    if after.state is ServerState.RUNNING:
        raise ServerControlFailed(f"{target.label}: the server of {directory} is still running after pg_ctl stop "
                                  f"-m {mode}: {_output_tail(result)}")
    return ServerAction(target.name, directory, "stop", True, f"stopped ({mode}, pid {before.pid})",
                        time.monotonic() - started)


def start_server(instance: DatabaseNode, target: SshTarget, timeout: float = 60.0, *,
                 data_dir: Path | None = None, server_options: str | None = None,
                 log_file: Path | None = None) -> ServerAction:
    """`pg_ctl start -w`; `server_options` is pg_ctl's -o (read by the host's shell: quote accordingly)."""
    started = time.monotonic()
    directory = data_dir or instance.data_dir
    before = server_status(instance, target, data_dir=directory)
    if before.state is ServerState.RUNNING:
        return ServerAction(target.name, directory, "start", False, "already running", time.monotonic() - started)
    if before.state is ServerState.NO_DATA_DIRECTORY:
        raise ServerControlFailed(f"{target.label}: cannot start a server: {directory} is not a data directory")
    log = log_file or directory / SERVER_LOG
    remote(target, ["mkdir", "-p", log.parent])
    argv = [tool(instance, "pg_ctl"), "start", "-D", directory, "-w", "-t", _whole(timeout), "-l", log]
    if server_options:
        argv += ["-o", server_options]
    result = remote(target, argv, timeout + 10, check=False)
    if result.exit_status != 0:
        log_tail = remote(target, ["tail", "-n", "5", log], check=False)
        raise ServerControlFailed(f"{target.label}: pg_ctl start -D {directory} failed: "
                                  f"{_output_tail(log_tail) or _output_tail(result)}")
    return ServerAction(target.name, directory, "start", True, "started", time.monotonic() - started)


def _history_switch_point(instance: DatabaseNode, target: SshTarget, timeline: int) -> Lsn | None:
    """The LSN where `timeline` forked off its parent, from pg_wal/<timeline>.history."""
    if timeline <= 1:
        return None
    result = remote(target, ["cat", instance.data_dir / "pg_wal" / f"{timeline:08X}.history"], check=False)
    lines = [line.split() for line in result.stdout.splitlines() if line.strip() and not line.startswith("#")]
    return Lsn.parse(lines[-1][1]) if result.succeeded and lines and len(lines[-1]) >= 2 else None


def _primary_state(database: ReplicatedDatabase, site: str) -> InstanceState | None:
    state = instance_state(database, site)
    return state if state.in_recovery is False else None


def promote(database: ReplicatedDatabase, site: str, targets: Targets, timeout: float = 60.0) -> Promotion:
    """Promote the standby at `site` (`pg_ctl promote -w`) and confirm it left recovery; no-op on a primary."""
    started = time.monotonic()
    instance = instance_of(database, site)
    target = target_of(instance, targets)
    state = instance_state(database, site)
    promoted = False
    if not state.reachable:
        status = server_status(instance, target)
        if status.state is not ServerState.RUNNING:
            raise ServerControlFailed(f"cannot promote {site}: its server is {status.state} ({state.detail})")
        raise ServerControlFailed(f"cannot promote {site}: the server runs but does not answer ({state.detail})")
    if state.in_recovery:
        result = remote(target, [tool(instance, "pg_ctl"), "promote", "-D", instance.data_dir, "-w", "-t",
                                 _whole(timeout)], timeout + 10, check=False)
        left_recovery = wait_until(lambda: _primary_state(database, site), timeout=max(5.0, timeout / 4), interval=0.05)
        state = left_recovery or instance_state(database, site)
        if state.in_recovery is not False:
            raise ServerControlFailed(f"{site} is still in recovery after pg_ctl promote: "
                                      f"{_output_tail(result) or state.detail}")
        promoted = True
    timeline = state.timeline or 1
    return Promotion(site=site, promoted=promoted, timeline=timeline,
                     lsn=_history_switch_point(instance, target, timeline), seconds=time.monotonic() - started)
