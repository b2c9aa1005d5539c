"""The lab's control plane (`lab up --control-plane`): a Prefect server on the ops side, on a database of the
ops PostgreSQL cluster (the one that holds the call log), the lab plan deployed to a work pool per site, a
Prefect worker per site, and `lifeline intake` (the warnings' service) on the ops side. Powering a site off
stops its worker with it; powering it on starts it again.

Each piece is Lifeline's own command, as an operator runs it: `lifeline server start|stop`, `lifeline deploy`,
`lifeline worker --site` and `lifeline intake`. With --netns the server runs in the ops namespace; the workers run there too,
since the lab's plan makes Lifeline reach the sites from ops (`network_namespace: ops`), and each still goes
down with its site's power.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from pydantic import BaseModel

from . import postgres
from .context import LabContext
from .processes import is_alive, read_pid, run, start_daemon, stop_tree
from .state import SITES

DATABASE = "prefect"
START_TIMEOUT_SECONDS = 240.0  # the first start creates Prefect's tables; a busy 2-core machine is slow at it


INTAKE = "intake"


class ControlPlaneStatus(BaseModel):
    api_url: str
    server_pid: int | None
    database: str
    workers: dict[str, int | None]
    intake_pid: int | None = None


def worker_name(site: str) -> str:
    return f"worker-{site}"


def api_url(context: LabContext) -> str:
    return f"http://{context.address('ops')}:{context.state.ports.prefect}/api"


def server_home(context: LabContext) -> Path:
    """LIFELINE_HOME of the control plane's `lifeline server`: its server lives in ./prefect there."""
    return context.paths.root / "ops" / "control-plane"


def _lifeline(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "lifeline.flows.cli", *arguments]


def _environment(**updates: str) -> dict[str, str]:
    inherited = {key: value for key, value in os.environ.items()
                 if key not in ("PREFECT_API_URL", "PREFECT_UI_API_URL", "LIFELINE_PREFECT")}
    return {**inherited, "PYTHONUNBUFFERED": "1", **updates}


def server_environment(context: LabContext) -> dict[str, str]:
    database = (f"postgresql+asyncpg://{context.user.name}@{postgres.address(context, 'calllog')}:"
                f"{postgres.port(context, 'calllog')}/{DATABASE}")
    return _environment(LIFELINE_HOME=str(server_home(context)), LIFELINE_SERVER_HOST=context.address("ops"),
                        LIFELINE_SERVER_PORT=str(context.state.ports.prefect), LIFELINE_SERVER_DATABASE_URL=database,
                        PGPASSFILE=str(context.paths.postgres_passfile))


def client_environment(context: LabContext) -> dict[str, str]:
    """What `deploy` and the workers run with: the server's API, and the operator's LIFELINE_HOME (its ledger)."""
    return _environment(PREFECT_API_URL=api_url(context), LIFELINE_HOME=str(context.paths.root.parent))


def server_pid(context: LabContext) -> int | None:
    found = read_pid(server_home(context) / "prefect" / "lifeline-server.pid")
    return found if is_alive(found) else None


def worker_pid(context: LabContext, site: str) -> int | None:
    found = read_pid(context.paths.pid_file(worker_name(site)))
    return found if is_alive(found) else None


def start(context: LabContext, plan_path: Path, *, deploy: bool = True) -> list[str]:
    """Server, deployments and the workers of the sites that have power (idempotent). `deploy=False` (heal):
    only what is missing is started; the deployments live in the server's database and outlast it."""
    done = []
    if not postgres.query(context, "calllog", "SELECT 1 FROM pg_database WHERE datname = %s", parameters=(DATABASE,)):
        postgres.query(context, "calllog", f"CREATE DATABASE {DATABASE}")
        done.append(f"database {DATABASE}: created on the ops cluster")
    if server_pid(context) is None:
        run(_lifeline("server", "start"), netns=context.namespace("ops"), env=server_environment(context),
            timeout=START_TIMEOUT_SECONDS)
        done.append(f"prefect server: running at {api_url(context).removesuffix('/api')}")
    if deploy:
        run(_lifeline("deploy", "--plan", str(plan_path)), netns=context.namespace("ops"),
            env=client_environment(context), timeout=180)
        done.append("deployments: applied to the site pools")
    for site in SITES:
        if site not in context.state.powered_off:
            done.append(start_worker(context, site, plan_path))
    done.append(start_intake(context, plan_path))
    return done


def intake_pid(context: LabContext) -> int | None:
    found = read_pid(context.paths.pid_file(INTAKE))
    return found if is_alive(found) else None


def start_intake(context: LabContext, plan_path: Path) -> str:
    if intake_pid(context) is not None:
        return f"{INTAKE}: running"
    start_daemon(_lifeline("intake", "--plan", str(plan_path)), pid_file=context.paths.pid_file(INTAKE),
                 log_file=context.paths.log_file(INTAKE), netns=context.namespace("ops"),
                 env=client_environment(context))
    return f"{INTAKE}: started on {context.address('ops')}:{context.state.ports.intake}"


def start_worker(context: LabContext, site: str, plan_path: Path | None = None) -> str:
    if worker_pid(context, site) is not None:
        return f"{worker_name(site)}: running"
    if server_pid(context) is None:
        return f"{worker_name(site)}: not started, the control plane's server is not running (`lab heal` starts both)"
    plan = plan_path or context.paths.plan_file
    start_daemon(_lifeline("worker", "--site", site, "--plan", str(plan)), pid_file=context.paths.pid_file(
        worker_name(site)), log_file=context.paths.log_file(worker_name(site)), netns=context.namespace("ops"),
        env=client_environment(context))
    return f"{worker_name(site)}: started"


def stop_worker(context: LabContext, site: str, *, crash: bool = False) -> list[int]:
    stopped = stop_tree(worker_pid(context, site), first_signal=signal.SIGKILL if crash else signal.SIGTERM,
                        timeout=10.0)
    context.paths.pid_file(worker_name(site)).unlink(missing_ok=True)
    return stopped


def stop(context: LabContext) -> list[int]:
    stopped = [pid for site in SITES for pid in stop_worker(context, site)]
    stopped += stop_tree(intake_pid(context), timeout=10.0)
    context.paths.pid_file(INTAKE).unlink(missing_ok=True)
    pid = server_pid(context)
    if pid is not None:
        run(_lifeline("server", "stop"), netns=context.namespace("ops"), env=server_environment(context), timeout=60,
            check=False)
        stopped.extend(stop_tree(pid, timeout=5.0) if is_alive(pid) else [pid])
    return stopped


def status(context: LabContext) -> ControlPlaneStatus:
    return ControlPlaneStatus(api_url=api_url(context), server_pid=server_pid(context),
                              database=f"{DATABASE} on postgres-calllog (ops)",
                              workers={site: worker_pid(context, site) for site in SITES},
                              intake_pid=intake_pid(context))
