"""Issue 16, part 5: the lab's secrets, random per lab and so canaries (its restic password, AWS secret key, SSH key
passphrase and SMTP password), appear in no output, log, report, ledger row, Prefect log, artifact or run parameter,
and in no process (command lines of every process, environments of Lifeline's own, sampled every 50 ms) while a
backup with its off-site copy to S3, a notification by SMS and e-mail (SMTP login) and a preflight over SSH run.
The files holding them are 0600.

Not covered here: a failover and failback (the same adapters, with approvals and DNS); the kill matrix runs them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values
from lifeline.configs.settings import load_settings

from tests.helpers import run_cli, wait_for
from tests.lab_fixtures import Lab

pytestmark = pytest.mark.lab


def lab_secrets(lab: Lab) -> dict[str, str]:
    folder = lab.lab_dir / "secrets"
    found = {"restic": (folder / "restic.pw").read_text().strip(),
             "ssh key passphrase": (folder / "ssh-key.passphrase").read_text().strip(),
             "aws": dotenv_values(folder / "aws.env")["AWS_SECRET_ACCESS_KEY"],
             "smtp": dotenv_values(folder / "smtp.env")["SMTP_PASSWORD"]}
    assert all(value and len(value) >= 8 for value in found.values()), "the lab's secrets are too short to search for"
    return found  # type: ignore[return-value]


def prefect_keeps(api_url: str, since: datetime) -> dict[str, str]:
    """What Prefect's API holds of the runs since `since`: their parameters, logs and artifacts (the server
    stores logs a moment after a run sends them: waited for)."""
    return wait_for(lambda: (kept := _prefect_keeps(api_url, since))["Prefect logs"] != "[]" and kept, 60,
                    "Prefect's logs of the runs")


def _prefect_keeps(api_url: str, since: datetime) -> dict[str, str]:
    kept = {}
    with httpx.Client(base_url=api_url, timeout=30) as client:
        for what, body in (("flow_runs", {"flow_runs": {"start_time": {"after_": since.isoformat()}}}),
                           ("logs", {"logs": {"timestamp": {"after_": since.isoformat()}}}),
                           ("artifacts", {})):
            pages, offset = [], 0
            while True:
                page = client.post(f"/{what}/filter", json={**body, "limit": 200, "offset": offset}).json()
                pages += page
                offset += len(page)
                if len(page) < 200:
                    break
            kept[f"Prefect {what}"] = json.dumps(pages, ensure_ascii=False)
    assert kept["Prefect flow_runs"] != "[]", "Prefect kept no run"
    return kept


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


def test_lab_secrets_appear_in_no_output_log_report_ledger_prefect_record_or_process(lab: Lab,
                                                                                     prefect_server: str) -> None:
    secrets = lab_secrets(lab)
    since = datetime.now(UTC)
    places: dict[str, str] = {}
    commands = {"backup": ["backup", "--json"],
                "notify": ["notify", "--audience", "liaison", "--audience", "partners", "--template", "test", "--json"],
                "preflight": ["preflight", "--json"]}
    for name, arguments in commands.items():
        process = subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", *arguments, "--plan", str(lab.plan)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PREFECT_LOGGING_LEVEL": "DEBUG"})  # all it says, to Prefect
        with ProcessSampler(process.pid) as sampler:
            stdout, stderr = process.communicate(timeout=180)
        assert sampler.samples
        if name == "notify":  # the secrets were used: the mail went through the sink's login, the SMS through SNS
            told = json.loads(stdout)
            assert process.returncode == 0 and told["reached"] == told["messages"] > 0, stderr
            assert {"email", "sms"} <= {delivery["channel"] for delivery in told["deliveries"]
                                        if delivery["status"] == "delivered"}, told
        elif name == "backup":  # the backup reached both repositories
            assert process.returncode == 0, stderr
            report = run_cli("report", "--run", json.loads(stdout)["id"], "--format", "html", "--plan", str(lab.plan))
            places["report"] = report.stdout
        else:  # preflight went to every host over SSH with the encrypted key
            hosts = {item["name"]: item for item in json.loads(stdout)["items"] if item["name"].startswith("host ")}
            assert hosts and all(item["ready"] for item in hosts.values()), hosts
        places |= {f"{name} stdout": stdout, f"{name} stderr": stderr}
        for secret_name, secret in secrets.items():
            leaks = {where for where, sample in sampler.samples if secret.encode() in sample}
            assert not leaks, f"{secret_name} secret in {leaks} during {name}"
    places |= {"ledger": ledger_dump(), **prefect_keeps(prefect_server, since)}
    for log in (lab.lab_dir / "logs").glob("*"):
        if log.is_file():
            places[str(log)] = log.read_text(errors="replace")
    for name, secret in secrets.items():
        for where, text in places.items():
            assert secret not in text, f"{name} secret in {where}"


def test_secret_files_are_private(lab: Lab) -> None:
    folder = lab.lab_dir / "secrets"
    files = [p for p in folder.iterdir() if p.is_file()]
    assert files
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
