"""Long-running processes Lifeline starts and stops itself: detached, logging to a file, known by a pid file.

Whether a process still runs is read from its state in /proc, not only from its pid: a killed process can
linger as a zombie until its parent (or a slow init) reaps it, and a killed multi-threaded one shows its
leader as a zombie while its other threads still hold its files (a listening socket accepts, then resets).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

GONE = (None, "Z", "X")


def process_state(pid: int, thread: int | None = None) -> str | None:
    """The one-letter state from /proc (R, S, Z...) of a process, or of one of its threads;
    None if there is no such process."""
    path = Path(f"/proc/{pid}/stat") if thread is None else Path(f"/proc/{pid}/task/{thread}/stat")
    try:
        stat = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _threads_still_exiting(pid: int) -> bool:
    try:
        tasks = [int(entry.name) for entry in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    return any(process_state(pid, task) not in GONE for task in tasks if task != pid)


def running(pid: int | None) -> bool:
    """Alive: not gone, not a zombie, no thread of it still exiting."""
    if not pid or pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # collect a child of ours that has exited
    return process_state(pid) not in GONE or _threads_still_exiting(pid)


def start_daemon(argv: Sequence[str], *, pid_file: Path, log_file: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> int:
    """Start a process detached from us (its own session, output to `log_file`) and record its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True,
                                   env=dict(env) if env is not None else None, cwd=str(cwd) if cwd else None)
    pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
    return process.pid


def recorded_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process still runs."""
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return pid if running(pid) else None


def stop_session(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM to the process's session (the daemon and what it started), SIGKILL after `timeout`.
    True when it had been running."""
    if not running(pid):
        return False
    for signal_number, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal_number)
        deadline = time.monotonic() + wait
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not running(pid):
            return True
    return True
