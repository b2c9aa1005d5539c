"""The embedded default: without PREFECT_API_URL the first command starts Lifeline's Prefect server in the
background under LIFELINE_HOME, later commands reuse it, its UI's API lists every CLI run, and
`lifeline server stop` leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from lifeline.tasks.adapters.daemons import running

from tests.helpers import files_plan, make_recordings, write_password, write_plan
from tests.servers import free_port


def lifeline(home: Path, port: int, *arguments: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_HOME")}
    environment.update({"LIFELINE_HOME": str(home), "LIFELINE_SERVER_PORT": str(port)})
    return subprocess.run([sys.executable, "-m", "lifeline.flows.cli", *arguments], capture_output=True, text=True,
                          env=environment, stdin=subprocess.DEVNULL, timeout=300)


def test_the_first_command_starts_the_background_server_the_next_reuses_it_and_stop_ends_it(tmp_path):
    home, port = tmp_path / "home", free_port()
    write_password(tmp_path / "restic.pw")
    plan = str(write_plan(tmp_path, files_plan(tmp_path, make_recordings(tmp_path / "recordings"))))
    assert "no Lifeline server running" in lifeline(home, port, "server", "status").stdout
    try:
        first = lifeline(home, port, "backup", "--plan", plan)
        assert first.returncode == 0, first.stderr
        assert f"Starting Lifeline's Prefect server at http://127.0.0.1:{port}" in first.stderr
        assert "temporary server" not in first.stderr
        status = json.loads(lifeline(home, port, "server", "status", "--json").stdout)
        assert status["running"] and status["answering"] and status["database"] == "sqlite"
        assert Path(status["home"]) == home / "prefect" and (home / "prefect" / "prefect.db").exists()

        second = lifeline(home, port, "backup", "--plan", plan)
        assert second.returncode == 0, second.stderr
        assert "Starting Lifeline's Prefect server" not in second.stderr and "temporary server" not in second.stderr
        assert json.loads(lifeline(home, port, "server", "status", "--json").stdout)["pid"] == status["pid"]
        # The UI at the server's address shows both CLI runs.
        runs = httpx.post(f"{status['api_url']}/flow_runs/filter",
                          json={"flows": {"name": {"any_": ["backup"]}}}, timeout=10).json()
        assert [run["state_type"] for run in runs] == ["COMPLETED", "COMPLETED"]
    finally:
        stopped = lifeline(home, port, "server", "stop")
    assert stopped.returncode == 0 and "stopped the Prefect server" in stopped.stdout
    assert not running(status["pid"])
    try:
        httpx.get(f"{status['api_url']}/health", timeout=2)
        answered = True
    except httpx.TransportError:
        answered = False
    assert not answered
    assert "no Lifeline server running" in lifeline(home, port, "server", "status").stdout
    assert lifeline(home, port, "server", "status", "--wait").returncode == 1
