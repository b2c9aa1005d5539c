"""The one place where Lifeline runs external programs.

Every child gets its own session (process group) so a timeout can stop it and
everything it started, stdin is /dev/null, and stdout and stderr are always
drained to the end: a child blocked on a full pipe never exits, and restic
killed on a closed pipe leaves a stale lock behind (docs/facts.md, restic).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lifeline.tasks.adapters.deadline import within_step
from lifeline.tasks.adapters.errors import LifelineError

# Mapping value None removes an inherited variable (e.g. a stray RESTIC_PASSWORD).
Environment = Mapping[str, str | None]
LineCallback = Callable[[str], None]

# SIGINT first: restic removes its lock on SIGINT, but not on SIGTERM (docs/facts.md, restic).
INTERRUPT_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")

    def stderr_tail(self, lines: int = 5) -> str:
        meaningful = [line.strip() for line in self.stderr_text.splitlines() if line.strip()]
        return " | ".join(meaningful[-lines:])


@dataclass(frozen=True)
class PipelineResult:
    producer: CommandResult
    consumer: CommandResult


class CommandError(LifelineError):
    """A program could not be run to completion at all."""

    def __init__(self, argv: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.argv = tuple(argv)


class CommandNotFound(CommandError):
    pass


class CommandTimeout(CommandError):
    def __init__(self, argv: Sequence[str], timeout_seconds: float) -> None:
        program = Path(argv[0]).name if argv else "command"
        super().__init__(argv, f"{program} did not finish within {timeout_seconds:g} s and was stopped")


def build_environment(overrides: Environment | None) -> dict[str, str]:
    environment = dict(os.environ)
    for name, value in (overrides or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return environment


class _StreamDrain(threading.Thread):
    """Reads a pipe to its end; with a callback, line by line."""

    def __init__(self, stream: IO[bytes], on_line: LineCallback | None = None) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.on_line = on_line
        self.chunks: list[bytes] = []
        self.callback_error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            if self.on_line is None:
                while chunk := self.stream.read(65536):
                    self.chunks.append(chunk)
                return
            for line in iter(self.stream.readline, b""):
                self.chunks.append(line)
                if self.callback_error is None:
                    try:
                        self.on_line(line.decode("utf-8", errors="replace").rstrip("\r\n"))
                    except BaseException as error:  # keep draining; re-raised by the caller
                        self.callback_error = error
        finally:
            self.stream.close()

    def collected(self, deadline: float | None) -> bytes:
        # The process has exited: allow a moment for the last bytes even at the deadline.
        self.join(None if deadline is None else max(1.0, deadline - time.monotonic()))
        return b"".join(self.chunks)


def _start(argv: Sequence[str], *, env: Environment | None, stdin: int | IO[bytes]) -> subprocess.Popen[bytes]:
    if not argv:
        raise CommandError(argv, "empty command")
    try:
        return subprocess.Popen(
            [os.fspath(argument) for argument in argv],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=build_environment(env),
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as error:
        raise CommandNotFound(argv, f"cannot run {argv[0]}: {error.strerror or error}") from None


def _signal_group(process: subprocess.Popen[bytes], signal_number: int) -> None:
    try:
        os.killpg(process.pid, signal_number)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(processes: Sequence[subprocess.Popen[bytes]], grace_seconds: float) -> None:
    for process in processes:
        _signal_group(process, signal.SIGINT)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:  # also sweeps grandchildren still in the group
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _wait_all(processes: Sequence[subprocess.Popen[bytes]], deadline: float | None) -> bool:
    """True when every process exited before the deadline."""
    for process in processes:
        try:
            process.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
    return True


def _raise_callback_error(*drains: _StreamDrain) -> None:
    for drain in drains:
        if drain.callback_error is not None:
            raise drain.callback_error


def run_command(
    argv: Sequence[str],
    *,
    env: Environment | None = None,
    timeout: float | None = None,
    on_line: LineCallback | None = None,
) -> CommandResult:
    """Runs argv (never through a shell). env is merged over a copy of os.environ.

    On timeout the whole process group gets SIGINT, then SIGKILL after the grace
    period, and CommandTimeout is raised. on_line receives each stdout line.
    """
    timeout = within_step(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    process = _start(argv, env=env, stdin=subprocess.DEVNULL)
    assert process.stdout is not None and process.stderr is not None
    stdout_drain = _StreamDrain(process.stdout, on_line)
    stderr_drain = _StreamDrain(process.stderr)
    if not _wait_all([process], deadline):
        _stop([process], INTERRUPT_GRACE_SECONDS)
        raise CommandTimeout(argv, timeout or 0.0)
    stdout = stdout_drain.collected(deadline)
    stderr = stderr_drain.collected(deadline)
    if stdout_drain.is_alive() or stderr_drain.is_alive():  # a grandchild keeps a pipe open
        _stop([process], 0.0)
        raise CommandTimeout(argv, timeout or 0.0)
    _raise_callback_error(stdout_drain)
    return CommandResult(tuple(argv), process.returncode, stdout, stderr)


def run_pipeline(
    producer_argv: Sequence[str],
    consumer_argv: Sequence[str],
    *,
    producer_env: Environment | None = None,
    consumer_env: Environment | None = None,
    timeout: float | None = None,
    on_line: LineCallback | None = None,
) -> PipelineResult:
    """producer stdout → consumer stdin, like `producer | consumer`, without a shell.

    Both exit codes and both stderr streams are kept; on_line sees consumer stdout lines.
    """
    timeout = within_step(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    producer = _start(producer_argv, env=producer_env, stdin=subprocess.DEVNULL)
    assert producer.stdout is not None and producer.stderr is not None
    try:
        consumer = _start(consumer_argv, env=consumer_env, stdin=producer.stdout)
    except CommandError:
        _stop([producer], 0.0)
        producer.stdout.close()
        producer.stderr.close()
        raise
    producer.stdout.close()  # the consumer holds the only reading end: SIGPIPE reaches the producer
    assert consumer.stdout is not None and consumer.stderr is not None
    producer_stderr = _StreamDrain(producer.stderr)
    consumer_stdout = _StreamDrain(consumer.stdout, on_line)
    consumer_stderr = _StreamDrain(consumer.stderr)
    if not _wait_all([consumer, producer], deadline):
        _stop([producer, consumer], INTERRUPT_GRACE_SECONDS)
        raise CommandTimeout(consumer_argv, timeout or 0.0)
    drains = (producer_stderr, consumer_stdout, consumer_stderr)
    outputs = [drain.collected(deadline) for drain in drains]
    if any(drain.is_alive() for drain in drains):
        _stop([producer, consumer], 0.0)
        raise CommandTimeout(consumer_argv, timeout or 0.0)
    _raise_callback_error(consumer_stdout)
    return PipelineResult(
        producer=CommandResult(tuple(producer_argv), producer.returncode, b"", outputs[0]),
        consumer=CommandResult(tuple(consumer_argv), consumer.returncode, outputs[1], outputs[2]),
    )


def let_children_be_interrupted() -> None:
    """A process started as a background job of a non-interactive shell (`lifeline backup &` in a script)
    inherits SIGINT as ignored and passes that on to every program it starts: a timed-out restic would then
    ignore the SIGINT that asks it to stop cleanly, and be killed only after the grace. Python's own handler
    here makes the children start with the default again. Call from the main thread."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
