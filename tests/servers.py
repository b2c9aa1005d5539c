"""Ports and server start-up shared by the test session and the benchmarks.

Imports no Prefect: tests/conftest.py uses it before Prefect reads its settings.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from lifeline.infra.lab.ports import free_ports  # at import: two threads importing it late deadlocked


def free_port() -> int:
    """Free now, and outside the ephemeral range like the lab's ports: a server the test stops and starts again
    must find its port unused by the machine's outgoing connections."""
    return free_ports(["port"])["port"]


def wait_until_healthy(api_url: str, server: subprocess.Popen, log_file: Path, timeout: float) -> None:
    """Until the Prefect server at api_url answers /health; RuntimeError when it exits or the time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{api_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the Prefect server did not start: see {log_file}")
        time.sleep(0.2)
