"""restic failures: one classifier from exit code and stderr to an error that explains itself.

restic 0.14 exits 1 for nearly everything, so stderr tells a wrong password, a missing
repository and a lock conflict apart; 0.17+ adds exit codes 10, 11 and 12.
"""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Any

from lifeline.tasks.adapters.commands import CommandResult
from lifeline.tasks.adapters.errors import LifelineError

EXIT_PARTIAL_BACKUP, EXIT_REPOSITORY_MISSING, EXIT_LOCKED, EXIT_WRONG_PASSWORD = 3, 10, 11, 12

_WRONG_PASSWORD = re.compile(r"wrong password or no key found", re.I)
_LOCKED = re.compile(r"repository is already locked|unable to create lock", re.I)
# "Is there a repository at the following location?" follows *any* config error (even a refused connection).
_MISSING = re.compile(
    r"repository does not exist|unable to open config file: .*(no such file|not exist|not found|NoSuch)", re.I
)
_NETWORK = re.compile(
    r"connection refused|connection reset|broken pipe|i/o timeout|timed? ?out|deadline exceeded|no such host"
    r"|temporary failure in name resolution|network is unreachable|no route to host|tls handshake|unexpected eof"
    r"|\b(?:429|5\d\d) (?-i:[A-Z][a-z])|status(?: code)?:? ?(?:429|5\d\d)\b|service unavailable|slow ?down"
    r"|too many requests",
    re.I,
)
# A full disk (ENOSPC) is never fixed by a retry; restic 0.14 ends such a restore with "There were N errors".
_NO_SPACE = re.compile(r"no space left on device|disk quota exceeded", re.I)
# The snapshot named was forgotten (retention of a backup running at the same time) after it was chosen.
_SNAPSHOT_GONE = re.compile(r"no matching ID found for prefix", re.I)
_HINT_LINES = re.compile(r"^(is there a repository|lock was created at|storage id|the `unlock` command)", re.I)


class ResticError(LifelineError):
    """One line naming the repository (plan name) and the cause; never a password."""

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient

    @classmethod
    def during(cls, operation: str, repository: str, detail: str, *, transient: bool | None = None) -> ResticError:
        where = f" on repository {repository!r}" if repository else ""
        return cls(f"restic {operation}{where} failed: {detail}", transient=transient)


class WrongPassword(ResticError):
    user_error = True


class RepositoryMissing(ResticError):
    user_error = True


class RepositoryLocked(ResticError):
    transient = True


class PartialBackup(ResticError):
    """Exit 3: the snapshot exists but some files could not be read. backup() returns instead of raising."""


class ResticFailed(ResticError):
    pass


class NoSpace(ResticError):
    """The disk restic writes to (a restore's target, the cache, a local repository) is full: not transient."""

    transient = False


class SnapshotGone(ResticError):
    """The snapshot is no longer in the repository: retrying the same id cannot help, choosing again can."""

    transient = False


class ProducerFailed(ResticError):
    """The command feeding `backup --stdin` failed; its snapshot has been forgotten."""


def _clean(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).strip()


def meaningful_stderr_line(stderr: str) -> str:
    lines = [_clean(line) for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):  # restic >= 0.18 with --json: {"message_type":"exit_error",...}
        if line.startswith("{"):
            message = _json_object(line)
            if message.get("message_type") == "exit_error" and message.get("message"):
                return str(message["message"]).removeprefix("Fatal: ")[:300]
    fatal = [line for line in lines if line.startswith("Fatal:")]
    if fatal:
        return fatal[-1].removeprefix("Fatal: ")[:300]
    plain = [line for line in lines if not line.startswith("{") and not _HINT_LINES.match(line)]
    return (plain[0] if plain else lines[-1] if lines else "no error message")[:300]


def classify_failure(result: CommandResult, *, operation: str, repository: str) -> ResticError:
    stderr, code = result.stderr_text, result.returncode
    detail = meaningful_stderr_line(stderr) if stderr.strip() else f"exit code {code}"
    if code < 0:  # killed (the OOM killer, an operator): not retried; its stale lock is removed by the next run
        return ResticFailed.during(operation, repository, f"restic was killed by {_signal_name(-code)}")
    if code == EXIT_WRONG_PASSWORD or _WRONG_PASSWORD.search(stderr):
        return WrongPassword.during(operation, repository, detail)
    if code == EXIT_LOCKED or _LOCKED.search(stderr):
        return RepositoryLocked.during(operation, repository, detail)
    if code == EXIT_PARTIAL_BACKUP:
        warnings = backup_warnings(stderr)
        return PartialBackup.during(operation, repository, f"{len(warnings)} unreadable: {'; '.join(warnings[:3])}")
    if _SNAPSHOT_GONE.search(stderr):
        return SnapshotGone.during(operation, repository, f"{detail} (forgotten since it was chosen)")
    if _NO_SPACE.search(stderr):
        return NoSpace.during(operation, repository, "no space left on device")
    # restic 0.14 reports an unreachable S3 endpoint as "unable to open config file": network first.
    if code != EXIT_REPOSITORY_MISSING and _NETWORK.search(stderr):
        return ResticFailed.during(operation, repository, detail, transient=True)
    if code == EXIT_REPOSITORY_MISSING or _MISSING.search(stderr):
        return RepositoryMissing.during(operation, repository, detail)
    return ResticFailed.during(operation, repository, detail)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _json_object(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def backup_warnings(stderr: str) -> list[str]:
    warnings = []
    for message in _json_lines(stderr):
        if message.get("message_type") != "error":
            continue
        error, item = message.get("error") or {}, message.get("item", "")
        if "message" in error:  # restic >= 0.17
            warnings.append(f"{item}: {error['message']}")
        elif isinstance(error.get("Err"), int):  # restic 0.14: {"Op","Path","Err": errno}
            warnings.append(f"{error.get('Path', item)}: {error.get('Op', 'read')}: {os.strerror(error['Err'])}")
        else:
            warnings.append(f"{item}: {error}")
    return warnings


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [value for line in text.splitlines() if line.strip().startswith("{") and (value := _json_object(line))]
