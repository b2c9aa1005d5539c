"""Small builders shared by the tests: plans on disk, data sets with awkward names, CLI runs, the ledger."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from lifeline.configs.settings import load_settings
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import RunRecord, Step

CANARY_PREFIX = "canary-"


def write_password(path: Path) -> str:
    """A password that is also a canary: it must never appear in any output, log or record."""
    password = CANARY_PREFIX + secrets.token_hex(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


def make_recordings(root: Path) -> Path:
    """Recordings with the names real call centres produce: spaces, Chinese, empty files, links, nesting."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "录音 2026-11-28.wav").write_bytes(os.urandom(64 * 1024))
    (root / "empty call.wav").write_bytes(b"")
    nested = root / "2026" / "11" / "agent 7"
    nested.mkdir(parents=True)
    (nested / "call-0001.wav").write_bytes(os.urandom(10_000))
    (nested / "notes.txt").write_text("customer called twice\n")
    (root / "latest.wav").symlink_to("录音 2026-11-28.wav")
    return root


def write_plan(directory: Path, document: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "plan.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
    return path


def files_plan(directory: Path, recordings: Path, **dataset_overrides) -> dict:
    return {
        "name": "test-callcenter",
        "timezone": "UTC",
        "targets": {"rto_minutes": 15, "rpo_minutes": 5},
        "repositories": {"local": {"url": "./repo", "password_file": "./restic.pw", "init": True}},
        "datasets": {
            "recordings": {
                "repository": "local",
                "paths": [str(recordings)],
                "retention": {"last": 3},
                "rpo_minutes": 1500,
                **dataset_overrides,
            }
        },
        "checks": {"read_data_subset": "10%"},
    }


def run_cli(*arguments: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lifeline.flows.cli", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: file contents, link targets, folders."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            found[relative] = "-> " + os.readlink(path)
        elif path.is_file():
            found[relative] = path.read_bytes()
        else:
            found[relative] = "dir"
    return found


def ledger() -> Ledger:
    """The ledger of this process's LIFELINE_HOME (or LIFELINE_LEDGER_URL): where the flows record their runs."""
    return Ledger(load_settings().ledger)


def step_named(record: RunRecord, name: str) -> Step:
    matches = [step for step in record.steps if step.name == name]
    assert matches, f"no step {name!r} in {[step.name for step in record.steps]}"
    return matches[-1]


def most_at_once(spans: list[tuple[Any, Any]]) -> int:
    """The most spans (start, end) open at one moment; an end sorts before a start at the same instant."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    current = highest = 0
    for _, change in events:
        current += change
        highest = max(highest, current)
    return highest


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def one_line_error(stderr: str) -> str:
    """The CLI's user-facing error: exactly one `lifeline: ...` line, and no traceback."""
    assert "Traceback" not in stderr
    [message] = [line for line in stderr.splitlines()
                 if line.startswith("lifeline: ") and not line.startswith("lifeline: warning: ")]
    return message
