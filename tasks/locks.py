"""A reader-writer file lock per repository, shared by every Lifeline process on this machine.

restic's own locks make a colliding command fail; these make it wait its turn instead:
backups, copies and restores share a repository, forget, prune and check have it alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RepositoryBusy(Exception):
    transient = True

    def __init__(self, repository: str, waited: float):
        super().__init__(f"repository {repository}: still in use by another Lifeline run after {waited:.0f} s")


@contextmanager
def repository_lock(locks_dir: Path, repository: str, url: str, *, exclusive: bool, timeout: float = 600) -> Iterator[None]:
    locks_dir.mkdir(parents=True, exist_ok=True)
    path = locks_dir / f"repository-{hashlib.sha256(url.encode()).hexdigest()[:16]}.lock"
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    started = time.monotonic()
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > timeout:
                    raise RepositoryBusy(repository, timeout) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
