"""SSH adapter: commands on the plan's hosts, over verified host keys only.

Knows nothing of Prefect. This module holds what callers name (targets, results, errors) and the
process-wide pool's `run`; the paramiko side (connecting with host-key verification, the pool) is
tasks/ssh_pool.py, imported at the first command, so that loading a flow does not load paramiko.

Host keys are checked against the plan's known_hosts file with a RejectPolicy: an unknown or changed
key refuses the connection, never adds it. Authentication is by the plan's key file alone (no agent,
no ~/.ssh keys). Commands get /dev/null as stdin and are quoted for a POSIX shell (the remote user's
login shell).
"""

from __future__ import annotations

import atexit
import shlex
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lifeline.configs.plan import Host
from lifeline.tasks.errors import LifelineError

if TYPE_CHECKING:
    from lifeline.tasks.ssh_pool import SshPool

DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class SshTarget:
    name: str  # the host's name in the plan
    address: str
    user: str
    key_file: Path
    known_hosts_file: Path
    port: int = 22
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS

    @property
    def label(self) -> str:
        return f"host {self.name} {self.address}:{self.port}"

    @classmethod
    def from_host(cls, name: str, host: Host, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS) -> SshTarget:
        return cls(name=name, address=host.address, port=host.port, user=host.user, key_file=host.key_file,
                   known_hosts_file=host.known_hosts_file, connect_timeout=connect_timeout)


def targets_from_plan(hosts: Mapping[str, Host], connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS) -> dict[str, SshTarget]:
    return {name: SshTarget.from_host(name, host, connect_timeout) for name, host in hosts.items()}


@dataclass(frozen=True)
class SshResult:
    command: str  # as the remote shell received it
    exit_status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def succeeded(self) -> bool:
        return self.exit_status == 0

    def stderr_tail(self, lines: int = 3) -> str:
        return _tail(self.stderr, lines)


class SshError(LifelineError):
    """One line naming the host (its plan name and address:port), never a secret."""

    def __init__(self, target: SshTarget, detail: str) -> None:
        super().__init__(f"{target.label}: {detail}")
        self.target = target
        self.detail = detail

    def again(self) -> SshError:
        """A fresh copy, for each thread that waited on the same failed connection."""
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__)
        copied.args = self.args
        return copied


class UnknownHostKey(SshError):
    user_error = True


class HostKeyMismatch(SshError):
    user_error = True


class AuthenticationFailed(SshError):
    user_error = True


class HostUnreachable(SshError):
    """Refused, timed out, no route, or the connection dropped: retrying later may succeed."""

    transient = True


class SshCommandTimeout(SshError):
    transient = True


class SshCommandFailed(SshError):
    def __init__(self, target: SshTarget, result: SshResult) -> None:
        tail = result.stderr_tail()
        program = program_name(result.command)
        ended = (f"exited with status {result.exit_status}" if result.exit_status >= 0
                 else "ended without an exit status (killed by a signal, or the connection dropped)")
        super().__init__(target, f"{program} {ended}" + (f": {tail}" if tail else ""))
        self.result = result


def _tail(text: str, lines: int) -> str:
    meaningful = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(meaningful[-lines:])[-300:]


def command_line(command: Sequence[str] | str) -> str:
    """An argument list quoted for the remote POSIX shell; a string is taken as a shell command line."""
    if isinstance(command, str):
        return command
    if not command:
        raise ValueError("empty command")
    return shlex.join(command)


def program_name(line: str) -> str:
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    return words[0] if words else "command"


_default_pool: SshPool | None = None
_default_pool_lock = threading.Lock()


def default_pool() -> SshPool:
    """The process-wide pool, made (and paramiko imported) at the first command."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            from lifeline.tasks.ssh_pool import SshPool

            _default_pool = SshPool()
            atexit.register(_default_pool.close_all)
        return _default_pool


def run(target: SshTarget, command: Sequence[str] | str, timeout: float, *, check: bool = False) -> SshResult:
    """Run command on target over the process-wide pool (see SshPool.run)."""
    return default_pool().run(target, command, timeout, check=check)


def close_all() -> None:
    """Close every pooled connection (they are reopened on demand)."""
    if _default_pool is not None:
        _default_pool.close_all()
