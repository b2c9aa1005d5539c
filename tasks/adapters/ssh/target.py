"""What callers of the SSH adapter name: a target, a command's result, and the errors, each naming its host."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lifeline.tasks.adapters.errors import LifelineError

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
    key_passphrase_file: Path | None = None  # the passphrase itself is read only when the key is opened

    @property
    def label(self) -> str:
        return f"host {self.name} {self.address}:{self.port}"


@dataclass(frozen=True)
class SshResult:
    command: str  # as the remote shell received it
    exit_status: int
    stdout: str
    stderr: str

    @property
    def succeeded(self) -> bool:
        return self.exit_status == 0

    def stderr_tail(self, lines: int = 3) -> str:
        return _tail(self.stderr, lines)


class SshError(LifelineError):
    """One line naming the host (its plan name and address:port), never a secret."""

    def __init__(self, target: SshTarget, detail: str) -> None:
        super().__init__(f"{target.label}: {detail}")
        self.detail = detail  # without the host: for a message that names the host its own way

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
