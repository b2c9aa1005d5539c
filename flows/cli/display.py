"""What a person sees on the terminal: tables on stdout, progress and logs on stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lifeline.tasks.run import progress
from lifeline.tasks.run.record import RunRecord
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

stdout = Console(width=None if sys.stdout.isatty() else 140)  # piped output: wide enough to read
stderr = Console(stderr=True)


def print_rows(rows: list[dict], columns: list[str], title: str) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in (row[c] for c in columns)))
    stdout.print(table)


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def print_records(records: list[RunRecord]) -> None:
    table = Table(title="Runs")
    for column in ("id", "kind", "status", "started", "seconds", "RTO s", "RPO s", "targets", "bytes", "started by"):
        table.add_column(column)
    for record in records:
        took = (record.ended_at - record.started_at).total_seconds() if record.ended_at else None
        table.add_row(
            record.id, record.kind, record.status, record.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            _seconds(took), _seconds(record.rto_seconds), _seconds(record.rpo_seconds),
            {True: "met", False: "missed", None: ""}[record.met_targets], str(record.bytes), record.parent_id or "",
        )
    stdout.print(table)


def print_verification(record: RunRecord) -> None:
    table = Table(title=f"verify run {record.id}: {record.status}")
    for column in ("service", "check", "status", "latency ms", "detail"):
        table.add_column(column, overflow="fold")
    for step in record.steps:
        service, _, check = step.name.partition(": ")
        status = {"completed": "healthy", "failed": "UNHEALTHY", "warning": "unhealthy (not critical)"}.get(step.status, step.status)
        table.add_row(service, check, status, str(step.detail.get("latency_ms", "")), str(step.detail.get("detail", ""))[:80])
    stdout.print(table)


def print_record(record: RunRecord) -> None:
    if record.kind == "verify":
        print_verification(record)
        return
    table = Table(title=f"{record.kind} run {record.id}: {record.status}")
    for column in ("step", "status", "seconds", "attempts", "detail"):
        table.add_column(column, overflow="fold")
    for step in record.steps:
        detail = ", ".join(f"{k}={v}" for k, v in step.detail.items() if k not in ("row_counts",))
        table.add_row(step.name, step.status, _seconds(step.seconds), str(step.attempts), detail[:160])
    stdout.print(table)
    figures = [f"RTO {_seconds(record.rto_seconds)} s" if record.rto_seconds is not None else "",
               f"RPO {_seconds(record.rpo_seconds)} s" if record.rpo_seconds is not None else "",
               {True: "targets met", False: "targets MISSED", None: ""}[record.met_targets]]
    if any(figures):
        stdout.print("  ".join(f for f in figures if f))


@contextmanager
def show_progress(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=stderr, transient=True
    )
    ids: dict[str, int] = {}

    def update(label: str, fraction: float, bytes_done: int) -> None:
        if label not in ids:
            ids[label] = bars.add_task(label, total=1000)
        bars.update(ids[label], completed=int(fraction * 1000))

    stop_listening = progress.listen(update)
    with bars:
        try:
            yield
        finally:
            stop_listening()


class _ExplainedErrorsWithoutTraceback(logging.Filter):
    """Lifeline's own errors explain themselves in one line; their tracebacks only hide that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and hasattr(record.exc_info[1], "transient"):
            record.exc_info, record.exc_text = None, None
        return True


def configure_quiet_tracebacks() -> None:
    quiet = _ExplainedErrorsWithoutTraceback()
    for handler in logging.getLogger("prefect").handlers + logging.getLogger().handlers:
        handler.addFilter(quiet)
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(quiet)
