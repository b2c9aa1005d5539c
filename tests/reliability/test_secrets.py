"""Issue 16, part 5: the lab's secrets (its restic password and AWS secret key, random per lab: canaries) appear in
no output, log, ledger row or process (command lines of every process, environments of Lifeline's own, sampled
every 50 ms) of a backup with its off-site copy to S3, and the files holding them are 0600.

Not covered yet: a failover and failback with communications, a restore, what the Prefect API keeps (logs,
artifacts, parameters), an SMTP password canary. Lifeline takes SSH keys without a passphrase (none to leak).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lifeline.configs.settings import load_settings

from tests.lab_fixtures import Lab

pytestmark = pytest.mark.lab


def lab_secrets(lab: Lab) -> dict[str, str]:
    folder = lab.lab_dir / "secrets"
    found = {"restic": (folder / "restic.pw").read_text().strip()}
    for line in (folder / "aws.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AWS_SECRET_ACCESS_KEY":
            found["aws"] = value.strip().strip('"')
    assert all(len(value) >= 8 for value in found.values()), "the lab's secrets are too short to search for"
    return found


class ProcessSampler:
    """Every ~50 ms: every process's command line, and the environment of the CLI's own process tree (the lab's
    services may legitimately hold their own keys in their environment; Lifeline's processes may hold only paths
    such as RESTIC_PASSWORD_FILE)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.samples: list[tuple[str, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> set[int]:
        parents: dict[int, int] = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
        found = {self.root}
        while True:
            more = {pid for pid, parent in parents.items() if parent in found} - found
            if not more:
                return found
            found |= more

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = self._tree()
            for pid in filter(str.isdigit, os.listdir("/proc")):
                for name in ("cmdline", "environ") if int(pid) in tree else ("cmdline",):
                    try:
                        self.samples.append((f"{name} of " + Path(f"/proc/{pid}/cmdline").read_bytes()[:80].decode(errors="replace"), Path(f"/proc/{pid}/{name}").read_bytes()))
                    except OSError:
                        pass
            time.sleep(0.05)


def ledger_dump() -> str:
    path = load_settings().ledger.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(connection.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)


def test_lab_secrets_appear_in_no_output_log_ledger_or_process(lab: Lab, prefect_server: str) -> None:
    secrets = lab_secrets(lab)
    process = subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", "backup", "--plan", str(lab.plan), "--json"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with ProcessSampler(process.pid) as sampler:
        stdout, stderr = process.communicate(timeout=180)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr  # the secrets were used: the backup reached both repositories
    assert sampler.samples
    places = {"stdout": result.stdout, "stderr": result.stderr, "ledger": ledger_dump()}
    for log in (lab.lab_dir / "logs").glob("*"):
        if log.is_file():
            places[str(log)] = log.read_text(errors="replace")
    for name, secret in secrets.items():
        for where, text in places.items():
            assert secret not in text, f"{name} secret in {where}"
        leaks = {where for where, sample in sampler.samples if secret.encode() in sample}
        assert not leaks, f"{name} secret in {leaks}"


def test_secret_files_are_private(lab: Lab) -> None:
    folder = lab.lab_dir / "secrets"
    files = [p for p in folder.iterdir() if p.is_file()]
    assert files
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
