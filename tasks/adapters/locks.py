"""A reader-writer file lock per repository, shared by every Lifeline process on this machine.

restic's own locks make a colliding command fail; these make it wait its turn instead:
backups, copies and restores share a repository, forget, prune and check have it alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lifeline.tasks.adapters.deadline import wait_until
from lifeline.tasks.adapters.errors import LifelineError


class RepositoryBusy(LifelineError):
    transient = True

    def __init__(self, repository: str, waited: float):
        super().__init__(f"repository {repository}: still in use by another Lifeline run after {waited:.0f} s")


def _try_lock(handle: IO[str], mode: int) -> bool:
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


REPOSITORY_WAIT_SECONDS = 600


@contextmanager
def repository_lock(locks_dir: Path, repository: str, url: str, *, exclusive: bool) -> Iterator[None]:
    """Waits for its turn at most REPOSITORY_WAIT_SECONDS, and never beyond the step's own time limit."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    path = locks_dir / f"repository-{hashlib.sha256(url.encode()).hexdigest()[:16]}.lock"
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    started = time.monotonic()
    with open(path, "a+") as handle:
        if not wait_until(lambda: _try_lock(handle, mode), timeout=REPOSITORY_WAIT_SECONDS, interval=0.1):
            raise RepositoryBusy(repository, time.monotonic() - started)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class RunInProgress(LifelineError):
    """Another run holds the plan: failovers, failbacks and drills never overlap."""

    user_error = True


@contextmanager
def plan_lock(locks_dir: Path, plan: str, kind: str, run_id: str, where: str = "") -> Iterator[None]:
    """Held for a whole run; a second run of the same plan is refused at once, never queued, naming the first
    (and `where` a person finds it, such as its Prefect run's name and link)."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    path = locks_dir / f"plan-{plan}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another run"
            raise RunInProgress(f"plan {plan}: {holder} is in progress; refusing to start a {kind} meanwhile") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{kind} run {run_id} ({where + ', ' if where else ''}pid {os.getpid()}, "
                     f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')})")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
