"""The step's time limit, and the one way to wait for a condition within it.

A step's timeout reaches everything that runs inside it through `time_limit`: each program run
(commands.run_command), each SSH command, and each wait (`wait_until`) takes the earlier of its own
timeout and the step's deadline, so nothing outlives the step that started it. A timeout on a thread
cannot interrupt a blocking call; a child process and a poll loop can always stop at the deadline.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_step_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("step_deadline", default=None)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Everything run or waited for inside this block stops when the block's time is up."""
    if seconds is None:
        yield
        return
    token = _step_deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _step_deadline.reset(token)


def within_step(timeout: float | None) -> float | None:
    """`timeout`, shortened to what is left of the step's time limit (None: no limit at all)."""
    deadline = _step_deadline.get()
    if deadline is None:
        return timeout
    remaining = max(deadline - time.monotonic(), 0.001)
    return remaining if timeout is None else min(timeout, remaining)


def wait_until(condition: Callable[[], T], *, timeout: float | None, interval: float) -> T:
    """Call `condition` every `interval` seconds until it returns something true, and return that.

    Gives up at the earlier of `timeout` and the step's deadline, returning the last (false) result:
    the caller says what did not happen. `condition` is always called at least once.
    """
    limit = within_step(timeout)
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        started = time.monotonic()
        result = condition()
        if result or (deadline is not None and time.monotonic() >= deadline):
            return result
        pause = interval - (time.monotonic() - started)
        if deadline is not None:
            pause = min(pause, deadline - time.monotonic())
        if pause > 0:
            time.sleep(pause)
