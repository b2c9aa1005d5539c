"""Shared by the benchmarks: a Prefect server of their own, temp dirs, timing, samples, tables with ratios.

Importing this module imports neither Prefect nor Lifeline: a benchmark sets the environment
(`quiet_prefect_environment`, `prefect_server`) first, because Prefect reads its settings when
it is imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.servers import free_port, wait_until_healthy

T = TypeVar("T")

QUIET_PREFECT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",  # as in the tests; also keeps stdout/stderr readable
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
}


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the tables."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def quiet_prefect_environment() -> None:
    """Defaults only: a caller's own PREFECT_* settings win."""
    for name, value in QUIET_PREFECT.items():
        os.environ.setdefault(name, value)


# --- places -------------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_tmpdir(prefix: str) -> Iterator[Path]:
    """A temp dir under $TMPDIR (tempfile's rule), removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def environment(updates: Mapping[str, str], remove: Sequence[str] = ()) -> Iterator[None]:
    """os.environ with `updates` set and `remove` unset while the block runs; each name as it was afterwards."""
    saved = {name: os.environ.get(name) for name in (*updates, *remove)}
    os.environ.update(updates)
    for name in remove:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- a Prefect server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    home: Path
    log_file: Path
    pid: int  # also its process group id

    def cpu_seconds(self) -> float:
        return process_group_cpu_seconds(self.pid)


@contextlib.contextmanager
def prefect_server(home: Path, timeout: float = 90) -> Iterator[PrefectServer]:
    """`prefect server start` on a free port with PREFECT_HOME=home (UI off), like tests/conftest.py.

    While the block runs, PREFECT_API_URL and PREFECT_HOME point at it in os.environ (children
    inherit them) and, when Prefect is already imported here, in its settings context too.
    """
    quiet_prefect_environment()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log_file = home / "prefect-server.log"
    updates = {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(home)}
    started = time.perf_counter()
    with open(log_file, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **updates, "PREFECT_UI_ENABLED": "false"},
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    try:
        wait_until_healthy(api_url, server, log_file, timeout)
        log(f"Prefect server at {api_url} ready in {time.perf_counter() - started:.1f} s")
        with environment(updates), _prefect_settings_if_imported(api_url, home):
            yield PrefectServer(api_url=api_url, home=home, log_file=log_file, pid=server.pid)
    finally:
        _stop_group(server)


@contextlib.contextmanager
def _prefect_settings_if_imported(api_url: str, home: Path) -> Iterator[None]:
    if "prefect" not in sys.modules:  # it will read os.environ when imported
        yield
        return
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url, PREFECT_HOME: home}):
        yield


def _stop_group(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM to the group this module started (the server and its uvicorn child), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- Lifeline's CLI as a process ----------------------------------------------------------------


def cli_argv() -> list[str]:
    """The `lifeline` command of this interpreter's environment (or the module, where it is not installed)."""
    script = Path(sys.executable).with_name("lifeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lifeline.flows.cli"]


def cli_heartbeat_off_argv() -> list[str]:
    """The CLI's main() under `cli.prefect_for_cli()` (the flow heartbeat off); arguments follow."""
    return [sys.executable, "-c", "from lifeline.flows.cli import main, prefect_for_cli\n"
                                  "with prefect_for_cli(): main()"]


# --- timing -------------------------------------------------------------------------------------


def timed(function: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    outcome = function()
    return time.perf_counter() - started, outcome


@dataclass(frozen=True)
class ProcessRun:
    seconds: float
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str) -> ProcessRun:
        if self.returncode != 0:
            tail = " | ".join(self.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"{what} exited with {self.returncode}: {tail}")
        return self


def run_timed(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> ProcessRun:
    """Wall time of one process, stdin closed, stdout and stderr drained (as Lifeline does)."""
    started = time.perf_counter()
    result = subprocess.run(
        list(argv), env=dict(env) if env is not None else None, cwd=cwd,
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    return ProcessRun(time.perf_counter() - started, result.returncode, result.stdout, result.stderr)


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds (user + system) spent while a block ran, by whom."""

    server: float  # the Prefect server's process group
    own: float  # this process, all its threads
    children: float  # child processes that ended meanwhile (restic)
    children_user: float  # their user time alone


class CpuMeter:
    """`with meter.measure() as use: ...` then `use()` is a CpuUse. Linux only (reads /proc)."""

    def __init__(self, server: PrefectServer | None = None) -> None:
        self.server = server

    @contextlib.contextmanager
    def measure(self) -> Iterator[Callable[[], CpuUse]]:
        before = self._now()
        result: list[CpuUse] = []
        yield lambda: result[0]
        after = self._now()
        result.append(CpuUse(*(late - early for late, early in zip(after, before, strict=True))))

    def _now(self) -> tuple[float, float, float, float]:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = self.server.cpu_seconds() if self.server else 0.0
        return server, own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime, children.ru_utime


def process_group_cpu_seconds(group: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat_file:
                stat = stat_file.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ... utime stime
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def settle() -> None:
    """Before a timed run: flush what earlier runs wrote, so their writeback does not land in it."""
    os.sync()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """min-max of the samples, for the reader to judge the noise."""
    return f"{min(values):.2f}-{max(values):.2f}" if values else ""


@dataclass
class NamedSamples:
    """Samples by name, in the order taken; a name never added has no median (None) and no spread ("")."""

    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, value: float) -> None:
        self.values[name].append(value)

    def last(self, name: str) -> float:
        return self.values[name][-1]

    def median(self, name: str) -> float | None:
        return median(self.values[name]) if self.values.get(name) else None

    def spread(self, name: str) -> str:
        return spread(self.values[name]) if self.values.get(name) else ""


# --- tables -------------------------------------------------------------------------------------

Cell = str | float | int | None


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs <= 0:
        return ""
    return f"{ours / theirs:.2f}x"


def format_cell(value: Cell, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(
    header: Sequence[str], rows: Sequence[Sequence[Cell]], *, title: str | None = None,
    notes: Sequence[str] = (), digits: int = 2, file=None,
) -> None:
    """Plain text, one header rule; numbers and ratios right-aligned, text left-aligned."""
    file = file or sys.stdout
    lines = [list(header)] + [[format_cell(cell, digits) for cell in row] for row in rows]
    numeric = [
        all(_looks_numeric(line[column]) for line in lines[1:] if line[column]) for column in range(len(header))
    ]
    numeric[0] = False
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    if title:
        print(title, file=file)
    for index, line in enumerate(lines):
        cells = [cell.rjust(width) if numeric[column] else cell.ljust(width)
                 for column, (cell, width) in enumerate(zip(line, widths, strict=True))]
        print("  ".join(cells).rstrip(), file=file)
        if index == 0:
            print("  ".join("-" * width for width in widths), file=file)
    for note in notes:
        print(note, file=file)
    file.flush()


def _looks_numeric(text: str) -> bool:
    """Seconds, ratios (1.03x), differences (+0.40) and ranges (0.98-1.20)."""
    return re.fullmatch(r"[-+]?\d+(\.\d+)?(x|-\d+(\.\d+)?)?", text) is not None
