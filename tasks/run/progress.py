"""Progress of long steps (backups, restores): shown by whoever listens.

The CLI listens with a progress bar on a terminal; otherwise progress goes to the run's
log every tenth of the way, so a deployment's log shows it too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol


class ProgressListener(Protocol):
    def __call__(self, label: str, fraction: float, bytes_done: int) -> None: ...


_listeners: list[ProgressListener] = []
_lock = threading.Lock()


def listen(listener: ProgressListener) -> Callable[[], None]:
    with _lock:
        _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def reporter(label: str, logger: logging.Logger | logging.LoggerAdapter | None = None) -> Callable[[float, int], None]:
    """A callback for one long operation: `report(fraction_done, bytes_done)`.

    Each call starts a new operation: the tenths already logged belong to it alone, so the
    next backup of the same dataset in a long-lived process logs its own progress.
    """
    logged_tenth = -1
    operation_lock = threading.Lock()

    def report(fraction: float, bytes_done: int) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        for listener in list(_listeners):
            listener(label, fraction, bytes_done)
        nonlocal logged_tenth
        tenth = int(fraction * 10)
        with operation_lock:
            if logger is not None and tenth > logged_tenth:
                logged_tenth = tenth
                logger.info("%s: %d%% (%.1f MiB)", label, tenth * 10, bytes_done / 2**20)

    return report
