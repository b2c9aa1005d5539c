"""SSH adapter: commands on the plan's hosts, over verified host keys only.

Knows nothing of Prefect nor of the plan. `target` holds what callers name (targets, results, errors);
this module holds the process-wide pool's `run`; the paramiko side (connecting with host-key verification,
the pool) is `pool`, imported at the first command, so that loading a flow does not load paramiko.

Host keys are checked against the plan's known_hosts file with a RejectPolicy: an unknown or changed
key refuses the connection, never adds it. Authentication is by the plan's key file alone (no agent,
no ~/.ssh keys). Commands get /dev/null as stdin and are quoted for a POSIX shell (the remote user's
login shell).
"""

from __future__ import annotations

import atexit
import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from lifeline.tasks.adapters.deadline import within_step
from lifeline.tasks.adapters.ssh.target import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    AuthenticationFailed,
    HostKeyMismatch,
    HostUnreachable,
    SshCommandFailed,
    SshCommandTimeout,
    SshError,
    SshResult,
    SshTarget,
    UnknownHostKey,
    command_line,
    program_name,
)

if TYPE_CHECKING:
    from lifeline.tasks.adapters.ssh.pool import SshPool

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_SECONDS", "AuthenticationFailed", "HostKeyMismatch", "HostUnreachable", "SshCommandFailed",
    "SshCommandTimeout", "SshError", "SshResult", "SshTarget", "UnknownHostKey", "close_all", "command_line",
    "default_pool", "program_name", "run", "sessions_gated_by", "write_file",
]

_default_pool: SshPool | None = None
_default_pool_lock = threading.Lock()

SessionGate = Callable[[SshTarget], AbstractContextManager[object]]
_session_gate: contextvars.ContextVar[SessionGate | None] = contextvars.ContextVar("ssh_session_gate", default=None)


def default_pool() -> SshPool:
    """The process-wide pool, made (and paramiko imported) at the first command."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            from lifeline.tasks.adapters.ssh.pool import SshPool

            _default_pool = SshPool()
            atexit.register(_default_pool.close_all)
        return _default_pool


@contextmanager
def sessions_gated_by(gate: SessionGate) -> Iterator[None]:
    """Inside this block, and in threads started with its context, every command first enters `gate(target)`:
    how a caller limits the commands a host runs at once (the steps: a limit shared by every worker)."""
    token = _session_gate.set(gate)
    try:
        yield
    finally:
        _session_gate.reset(token)


def run(target: SshTarget, command: Sequence[str] | str, timeout: float, *, check: bool = False) -> SshResult:
    """Run command on target over the process-wide pool (see SshPool.run), within the step's time limit,
    once the session gate (if any) lets it."""
    gate = _session_gate.get()
    with gate(target) if gate is not None else nullcontext():
        return default_pool().run(target, command, within_step(timeout) or timeout, check=check)


def write_file(target: SshTarget, path: PurePosixPath, data: bytes, mode: int = 0o600) -> None:
    """Replace a file on target with `data` (mode 0600 unless told), never passing the data on a command line."""
    gate = _session_gate.get()
    with gate(target) if gate is not None else nullcontext():
        default_pool().write_file(target, path, data, mode)


def close_all() -> None:
    """Close every pooled connection (they are reopened on demand)."""
    if _default_pool is not None:
        _default_pool.close_all()
