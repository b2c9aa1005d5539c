"""A Prefect server run by Lifeline in the background: `prefect server start` as a detached process under
LIFELINE_HOME/prefect, on SQLite there or on the PostgreSQL database the settings name.

Prefect's own `prefect server start --background` leaves the server writing to pipes that nobody reads once
the starting command exits (a later log line can fail on a broken pipe) and in the caller's session; so
Lifeline starts the same command in the foreground mode, detached, with its output in a log file.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lifeline.tasks.adapters import daemons
from lifeline.tasks.adapters.errors import LifelineError

START_TIMEOUT_SECONDS = 180.0  # the first start creates the database; a busy 2-core machine has needed 70 s


class ServerFailed(LifelineError):
    user_error = True


@dataclass(frozen=True)
class LocalServer:
    home: Path  # PREFECT_HOME of this server
    host: str
    port: int
    database_url: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def pid_file(self) -> Path:
        return self.home / "lifeline-server.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def pid(self) -> int | None:
        return daemons.recorded_pid(self.pid_file)

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=timeout) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> int:
        """Start it, or find it running; returns its pid once its API answers. Two commands starting at once
        start one server: the second waits on a lock for the first."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "lifeline-server.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._start(timeout)

    def _start(self, timeout: float) -> int:
        pid = self.pid()
        if pid is None:
            if self.healthy(0.5):
                raise ServerFailed(f"a server not started by Lifeline answers at {self.url}: set PREFECT_API_URL to "
                                   f"use it, or LIFELINE_SERVER_PORT to start Lifeline's on another port")
            pid = daemons.start_daemon(self._argv(), pid_file=self.pid_file, log_file=self.log_file, env=self._env())
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not daemons.running(pid):
                self.pid_file.unlink(missing_ok=True)
                raise ServerFailed(f"the Prefect server at {self.url} stopped while starting: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"the Prefect server at {self.url} did not answer within {timeout:g} s; its log: "
                                   f"{self.log_file}")
            time.sleep(0.2)
        return pid

    def stop(self) -> bool:
        """True when it had been running; returns once no process of it is left."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        return pid is not None and daemons.stop_session(pid)

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)]

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        env.update({"PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "true",
                    "PREFECT_UI_API_URL": self.api_url})  # the UI's own calls, on any port
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        return env

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(text[-lines:]) or "no output"
