"""The lab for the tests: `lab`, one per session (brought up once, torn down at the end).

Mount it from tests/conftest.py with ``pytest_plugins = [..., "tests.lab_fixtures"]``.

The lab lives in its own temporary LIFELINE_HOME (not the per-test one) on free ports, so it
never collides with a lab a developer runs on the default ports. Tests that break it must leave
it as they found it: `lab.restore_normal()` heals and waits for the normal state; a test that
promotes dr (a failover) calls `lab.rebuild()` afterwards (about 6 s).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lifeline.infra.lab import LabContext, LabStatus, down, heal, open_lab, status, up
from lifeline.infra.lab import postgres as lab_postgres


@dataclass
class Lab:
    """A running lab: where it is, its plan, and helpers for tests."""

    home: Path

    @property
    def context(self) -> LabContext:
        return open_lab(self.home)

    @property
    def plan(self) -> Path:
        return Path(self.context.paths.plan_file)

    @property
    def lab_dir(self) -> Path:
        return Path(self.context.paths.root)

    def status(self) -> LabStatus:
        return status(self.home)

    def query(self, cluster: str, sql: str, database: str | None = None,
              parameters: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """One statement at ``main``, ``dr`` (database ``crm`` by default) or ``calllog``
        (database ``calls``)."""
        database = database or (lab_postgres.CALL_LOG_DATABASE if cluster == "calllog" else lab_postgres.CRM_DATABASE)
        rows: list[tuple[Any, ...]] = lab_postgres.query(self.context, cluster, sql, database=database,
                                                        parameters=parameters)
        return rows

    def wait_normal(self, timeout: float = 20.0) -> LabStatus:
        deadline = time.monotonic() + timeout
        while True:
            current = self.status()
            if current.normal or time.monotonic() > deadline:
                assert current.normal, f"the lab is not normal: {current.not_normal_because}"
                return current
            time.sleep(0.3)

    def restore_normal(self, timeout: float = 20.0) -> LabStatus:
        """Heal infrastructure faults and wait for the normal state."""
        heal(self.home, log=lambda message: None)
        return self.wait_normal(timeout)

    def rebuild(self) -> None:
        """From scratch (after a failover): down --purge, then up on new free ports."""
        down(self.home, purge=True, log=lambda message: None)
        up(self.home, free_ports=True, log=lambda message: None)
        self.wait_normal()


def new_lab_home(prefix: str = "lifeline-lab-") -> Path:
    """A temporary LIFELINE_HOME the lab user can traverse (mkdtemp makes 0700 directories)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(home, 0o755)
    return home


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    home = new_lab_home()
    try:
        up(home, free_ports=True)
        running = Lab(home)
        running.wait_normal(30)
        yield running
    finally:
        down(home, purge=True)
        home.rmdir()
