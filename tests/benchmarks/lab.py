"""The lab for the benchmarks that need one (a helper module, not a benchmark).

    with backed_up_lab(root) as lab:       # failover, drills: a Prefect server too, and a first backup
        ...
    with running_lab(root) as lab:         # fanout: the lab alone
        ...

Both start `lab up` on free ports in root/home (readable by the lab's PostgreSQL user) and wait for the
normal state; afterwards the lab is brought down with --purge and its home removed, whatever happens.
`backed_up_lab` also points LIFELINE_HOME at the lab's home (no LIFELINE_PLAN, no LIFELINE_LEDGER_URL:
the ledger is the home's), starts a Prefect server under root/prefect while the lab starts, and backs
every dataset up once, untimed, so that preflight finds fresh snapshots.

Like common.py, importing this module imports neither Prefect nor Lifeline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.benchmarks.common import environment, log, prefect_server, timed

NORMAL_TIMEOUT = 60.0
BACKUP_REFRESH_FRACTION = 0.5  # back a dataset up again once half its RPO target has passed
PREFECT_SERVER_TIMEOUT = 300.0  # started beside the lab: a loaded machine can take minutes


def quiet(_message: str) -> None:
    pass


@dataclass
class LabRun:
    """The lab under test, and what a benchmark needs to know about it."""

    home: Path
    plan: Path
    backed_up_at: dict[str, float] = field(default_factory=dict)  # dataset -> monotonic time of its backup
    rebuilds: int = 0

    def normal_problems(self, timeout: float = NORMAL_TIMEOUT) -> list[str]:
        """Why the lab is not in its normal state after waiting up to `timeout` seconds (empty: it is)."""
        from lifeline.infra.lab import status

        deadline = time.monotonic() + timeout
        while True:
            current = status(self.home)
            if current.normal or time.monotonic() > deadline:
                return current.not_normal_because
            time.sleep(0.3)

    def wait_normal(self, timeout: float = NORMAL_TIMEOUT) -> float:
        """Seconds until the lab was normal; raises when it is not after `timeout`."""
        started = time.monotonic()
        problems = self.normal_problems(timeout)
        if problems:
            raise RuntimeError(f"the lab is not normal after {timeout:g} s: {problems}")
        return time.monotonic() - started

    def back_up(self, datasets: list[str] | None = None) -> None:
        """Untimed: preflight refuses when a dataset's newest snapshot is older than its RPO target."""
        from lifeline.configs.loading import load_plan
        from lifeline.flows.backup import backup_flow

        for dataset in datasets or [None]:
            seconds, _ = timed(lambda dataset=dataset: backup_flow(str(self.plan), dataset=dataset))
            log(f"backup {dataset or 'of every dataset'}: {seconds:.1f} s (not timed)")
        names = datasets or list(load_plan(self.plan).plan.datasets)
        self.backed_up_at.update({name: time.monotonic() for name in names})

    def refresh_backups(self) -> None:
        """Back up again, untimed, each dataset whose last backup here is older than half its RPO target."""
        from lifeline.configs.loading import load_plan

        plan = load_plan(self.plan).plan
        stale = [name for name in plan.datasets
                 if time.monotonic() - self.backed_up_at.get(name, float("-inf"))
                 > BACKUP_REFRESH_FRACTION * plan.rpo_target(name).total_seconds()]
        if stale:
            self.back_up(stale)

    def rebuild(self) -> None:
        """From scratch (counted in `rebuilds`: a finding): down --purge, drill markers removed, up on new
        free ports, normal, every dataset backed up again."""
        from lifeline.infra.lab import down, up

        self.rebuilds += 1
        down(self.home, purge=True, log=quiet)
        shutil.rmtree(self.home / "drills", ignore_errors=True)  # markers a failed drill left (Settings.drills_dir)
        self.plan = Path(up(self.home, free_ports=True, log=quiet))
        self.wait_normal()
        self.backed_up_at.clear()
        self.back_up()


def start_lab(home: Path, log_to: Callable[[str], None] = quiet, timeout: float = NORMAL_TIMEOUT,
              call_rate: float | None = None) -> LabRun:
    """`lab up` on free ports at `home`, then the normal state within `timeout` seconds."""
    from lifeline.infra.lab import up

    seconds, plan = timed(lambda: up(home, free_ports=True, log=log_to, call_rate=call_rate))
    lab = LabRun(home=home, plan=Path(plan))
    lab.wait_normal(timeout)
    log(f"lab up and normal in {seconds:.1f} s: {plan}")
    return lab


def lab_home(root: Path) -> Path:
    """root/home, new; root made traversable: the lab's PostgreSQL runs as its own user and must reach
    its data dirs (mkdtemp makes 0700 directories)."""
    os.chmod(root, 0o755)
    home = root / "home"
    home.mkdir(mode=0o755)
    return home


def remove_lab(home: Path) -> None:
    from lifeline.infra.lab import down

    down(home, purge=True, log=quiet)
    shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def running_lab(root: Path, log_to: Callable[[str], None] = quiet,
                timeout: float = NORMAL_TIMEOUT) -> Iterator[LabRun]:
    """A normal lab in root/home (LIFELINE_HOME untouched); removed afterwards."""
    home = lab_home(root)
    try:
        yield start_lab(home, log_to, timeout)
    finally:
        remove_lab(home)


@contextlib.contextmanager
def backed_up_lab(root: Path, call_rate: float | None = None) -> Iterator[LabRun]:
    """A normal lab in root/home as LIFELINE_HOME, a Prefect server under root/prefect (started while the
    lab starts), and one untimed backup of every dataset; all removed afterwards."""
    home = lab_home(root)
    starting = ThreadPoolExecutor(1)
    with environment({"LIFELINE_HOME": str(home)}, remove=("LIFELINE_PLAN", "LIFELINE_LEDGER_URL")):
        try:
            lab_future = starting.submit(start_lab, home, call_rate=call_rate)
            with prefect_server(root / "prefect", timeout=PREFECT_SERVER_TIMEOUT):
                lab = lab_future.result()
                lab.back_up()
                yield lab
        finally:
            starting.shutdown(wait=True)
            remove_lab(home)
