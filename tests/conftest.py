"""Test session: one Prefect server for everything, state in temporary folders.

Prefect reads its settings from the environment when it is imported, so they are set
here, before any test module imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from lifeline.tasks.adapters.commands import let_children_be_interrupted

from tests.servers import free_port, wait_until_healthy

SESSION_DIR = Path(tempfile.mkdtemp(prefix="lifeline-tests-"))


PREFECT_PORT = free_port()
os.environ.update(
    {
        "PREFECT_HOME": str(SESSION_DIR / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
        # The UI on a port other than 4200 must be told where its API is before the server starts.
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "LIFELINE_HOME": str(SESSION_DIR / "home"),
    }
)
os.environ.pop("LIFELINE_PLAN", None)
let_children_be_interrupted()  # the suite behaves the same when started as `make test &`
os.environ.pop("LIFELINE_LEDGER_URL", None)

pytest_plugins = ["tests.pg_fixtures", "tests.lab_fixtures", "tests.serve_fixtures", "tests.channel_fixtures"]


# `make test` runs two pytest-xdist workers, and tests go to whichever is free: each worker has its own
# session folder, Prefect server, LIFELINE_HOME and, once a test asks for it, its own lab on free ports.
# Two labs side by side finish sooner than one worker running every lab test in turn (measured: the lab's
# tests add up to about 23 minutes, the others to 14).


# The session server, as `prefect server start` runs in production, with two changes: its UI is on
# (the browser test drives it; it costs nothing measurable at start, the bundle is copied once per
# install), and the scheduler's loops are short (60 s and 5 s by default), so a deployment served
# with a one-minute cron gets its runs scheduled within a second and its first run on the next minute.
PREFECT_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "true",
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
}


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect server for the whole session, as production would have; test modules that run
    flows ask for it with `pytestmark = pytest.mark.usefixtures("prefect_server")`."""
    log = open(SESSION_DIR / "prefect-server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(PREFECT_PORT)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **PREFECT_SERVER_ENV},
        start_new_session=True,
    )
    try:
        wait_until_healthy(os.environ["PREFECT_API_URL"], server, SESSION_DIR / "prefect-server.log",
                           timeout=180)  # a loaded 2-core machine has needed 70 s
    except RuntimeError:
        server.kill()
        raise
    yield os.environ["PREFECT_API_URL"]
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)  # the session's last flow logs reach the server before it stops
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture
def lifeline_home(tmp_path, monkeypatch) -> Path:
    """A fresh LIFELINE_HOME (ledger, cache, locks) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("LIFELINE_HOME", str(home))
    return home
