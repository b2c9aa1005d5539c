"""Kill points: where a run can be cut off, read from the journal of a run of the flow itself, and a
SIGKILL delivered there from outside, as a power cut or the OOM killer would.

A run saves its record at every step's start and end (the journal's `on_change`), so the ledger
shows, while the run goes on, which step has started and which has ended. A `KillPoint` names a step
and a moment: `start` (the boundary before it), `end` (the boundary after it) or `middle` (half of
the step's length in the reference run, for steps that take long). `kill_at` starts a `lifeline`
command in its own process group, polls the ledger every 20 ms and kills the whole group once the
point is reached: the process, Prefect's engine in it, and every restic, psql or ssh it started.

Nothing here imports pytest: tests/reliability/test_kill_points.py uses it on the session's lab, and
`make soak` (tests/reliability/kill_matrix.py) runs every point of every flow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import RunKind, RunRecord, Step

Moment = Literal["start", "middle", "end"]
POLL_SECONDS = 0.02
LONG_STEP_SECONDS = 2.0  # a step at least this long in the reference run is also cut in its middle


@dataclass(frozen=True)
class KillPoint:
    kind: RunKind
    step: str
    moment: Moment
    after_seconds: float = 0.0  # `middle`: this long after the step started

    def __str__(self) -> str:
        return {"start": f"before {self.step}", "end": f"after {self.step}",
                "middle": f"{self.after_seconds:.1f} s into {self.step}"}[self.moment]


def kill_points(reference: RunRecord, long_step_seconds: float = LONG_STEP_SECONDS) -> list[KillPoint]:
    """Every boundary of the steps the reference run went through (each step once, in the order they started),
    and the middle of every long one. Skipped steps did nothing, so nothing can be cut there."""
    points: list[KillPoint] = []
    seen: set[str] = set()
    for step in sorted(reference.steps, key=lambda step: step.started_at):
        if step.name in seen or step.status == "skipped":
            continue
        seen.add(step.name)
        points.append(KillPoint(reference.kind, step.name, "start"))
        seconds = step.seconds or 0.0
        if seconds >= long_step_seconds:
            points.append(KillPoint(reference.kind, step.name, "middle", round(seconds / 2, 2)))
        points.append(KillPoint(reference.kind, step.name, "end"))
    return points


def reached(point: KillPoint, record: RunRecord, now: datetime) -> bool:
    step = first_step(record, point.step)
    if step is None:
        return False
    if point.moment == "start":
        return True
    if point.moment == "end":
        return step.ended_at is not None
    return step.ended_at is not None or now - step.started_at >= timedelta(seconds=point.after_seconds)


def first_step(record: RunRecord, name: str) -> Step | None:
    return next((step for step in record.steps if step.name == name), None)


@dataclass
class Cut:
    """What became of one run killed at a point."""

    point: KillPoint
    killed: bool  # False: the run ended before the point was reached (the point was not on its path)
    record_id: str | None
    returncode: int | None
    stderr: str
    seconds: float
    late_by_ms: float | None = None  # how long after the point's step event the kill landed


def cli_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "lifeline.flows.cli", *arguments]


def kill_at(point: KillPoint, arguments: list[str], ledger: Ledger, *, timeout: float = 300,
            env: dict[str, str] | None = None, before_kill: Callable[[], None] | None = None) -> Cut:
    """Run `lifeline ARGUMENTS` and SIGKILL its process group once `point` is reached in its record."""
    known = {record.id for record in ledger.runs(kind=point.kind)}
    started = time.monotonic()
    process = subprocess.Popen(cli_command(*arguments), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                               env={**os.environ, **(env or {})})
    record: RunRecord | None = None
    try:
        while process.poll() is None and time.monotonic() - started < timeout:
            record = newest_new_run(ledger, point.kind, known) or record
            now = datetime.now(UTC)
            if record is not None and reached(point, record, now):
                if before_kill is not None:
                    before_kill()
                os.killpg(process.pid, signal.SIGKILL)
                _, stderr = process.communicate(timeout=30)
                return Cut(point, True, record.id, process.returncode, stderr, time.monotonic() - started,
                           late_by_ms(point, record, now))
            time.sleep(POLL_SECONDS)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            raise TimeoutError(f"{point.kind} did not reach '{point}' within {timeout:g} s")
        _, stderr = process.communicate(timeout=30)
        record = newest_new_run(ledger, point.kind, known) or record
        return Cut(point, False, record.id if record else None, process.returncode, stderr,
                   time.monotonic() - started)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=30)


def newest_new_run(ledger: Ledger, kind: str, known: set[str]) -> RunRecord | None:
    try:
        fresh = [record for record in ledger.runs(kind=kind, last=5) if record.id not in known]
    except Exception:  # noqa: BLE001 - the writer holds the SQLite file this instant: ask again
        return None
    return fresh[0] if fresh else None


def late_by_ms(point: KillPoint, record: RunRecord, now: datetime) -> float | None:
    step = first_step(record, point.step)
    if step is None:
        return None
    event = {"start": step.started_at, "end": step.ended_at,
             "middle": step.started_at + timedelta(seconds=point.after_seconds)}[point.moment]
    return None if event is None else max(0.0, (now - event).total_seconds() * 1000)
