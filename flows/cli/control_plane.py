"""`lifeline server start|stop|status`, `lifeline deploy` and `lifeline worker`: the control plane.

`server` is the Prefect server the CLI's runs report to.

Without PREFECT_API_URL, the first command that runs a flow starts it in the background under
LIFELINE_HOME/prefect and later commands reuse it (LIFELINE_PREFECT=ephemeral keeps Prefect's temporary
server per command). Its UI shows every CLI run. `deploy` puts the plan's flows on a work pool per site,
and `worker` starts one site's Prefect worker.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Annotated

import typer
from lifeline.configs.settings import Settings, load_settings
from lifeline.flows.cli.common import JsonOption, PlanOption, app, fail, loaded_plan
from lifeline.tasks.adapters.prefect_server import LocalServer, ServerFailed

server_app = typer.Typer(help="The local Prefect server: SQLite under LIFELINE_HOME, or PostgreSQL.",
                         no_args_is_help=True)
app.add_typer(server_app, name="server")


def local_server(settings: Settings) -> LocalServer:
    return LocalServer(settings.server_dir, settings.server_host, settings.server_port, settings.server_database_url)


def api_url_for_cli() -> str | None:
    """The Prefect API a CLI run reports to: PREFECT_API_URL, else Lifeline's background server (started now
    if needed); None for Prefect's temporary server (LIFELINE_PREFECT=ephemeral)."""
    from prefect.settings import PREFECT_API_URL

    if url := PREFECT_API_URL.value():
        return url
    settings = load_settings()
    if settings.prefect == "ephemeral":
        return None
    server = local_server(settings)
    if server.pid() is None:
        print(f"Starting Lifeline's Prefect server at {server.url} (once; `lifeline server stop` ends it)",
              file=sys.stderr, flush=True)
    try:
        server.start()
    except ServerFailed as error:
        fail(str(error))
    from prefect.context import refresh_global_settings_context

    # Prefect's threads (logs, events) and child processes read the process-wide settings, made at import.
    os.environ["PREFECT_API_URL"] = server.api_url
    refresh_global_settings_context()
    return server.api_url


def lasting_api_url(command: str) -> str:
    """For a command whose work outlives it (serve, deploy, a worker): a server, never a temporary one."""
    url = api_url_for_cli()
    if url is None:
        fail(f"{command} needs a Prefect server that outlives it: set PREFECT_API_URL, or unset LIFELINE_PREFECT")
    return url


@server_app.command()
def start() -> None:
    """Start the server in the background (or find it running) and print its address."""
    server = local_server(load_settings())
    try:
        pid = server.start()
    except ServerFailed as error:
        fail(str(error))
    database = "PostgreSQL" if server.database_url else f"SQLite in {server.home}"
    typer.echo(f"Prefect server at {server.url} (pid {pid}, {database}); export PREFECT_API_URL={server.api_url}")


@server_app.command()
def stop() -> None:
    """Stop the background server; returns once no process of it is left."""
    server = local_server(load_settings())
    typer.echo(f"stopped the Prefect server at {server.url}" if server.stop() else "no server was running")


@server_app.command()
def status(
    as_json: JsonOption = False,
    wait: Annotated[bool, typer.Option("--wait", help="Exit 1 unless it runs and answers.")] = False,
) -> None:
    """Whether the background server runs, where, and on which database."""
    server = local_server(load_settings())
    pid = server.pid()
    answering = pid is not None and server.healthy()
    facts = {"running": pid is not None, "answering": answering, "pid": pid, "url": server.url,
             "api_url": server.api_url, "database": "postgresql" if server.database_url else "sqlite",
             "home": str(server.home), "log": str(server.log_file)}
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
    elif pid is None:
        typer.echo(f"no Lifeline server running (it would listen at {server.url}; `lifeline server start`)")
    else:
        typer.echo(f"running: pid {pid} at {server.url}, {'answering' if answering else 'NOT answering'}, "
                   f"{facts['database']}, log {server.log_file}")
    if wait and not answering:
        raise typer.Exit(1)


@app.command()
def deploy(plan: PlanOption = None, as_json: JsonOption = False) -> None:
    """Deploy every flow of the plan to its site's Prefect work pool (`lifeline-<site>`); again: update in place."""
    loaded = loaded_plan(plan)
    lasting_api_url("deploy")
    from lifeline.flows.deploy import deploy_plan

    applied = deploy_plan(loaded)
    if as_json:
        typer.echo(json.dumps([{"deployment": name, "work_pool": pool, "id": deployment_id}
                               for name, pool, deployment_id in applied], indent=2))
        return
    for name, pool, _ in applied:
        typer.echo(f"{name:<45} on {pool}")
    sites = ", ".join(loaded.plan.sites)
    typer.echo(f"{len(applied)} deployments; start a worker at each site ({sites}): lifeline worker --site NAME")


@app.command()
def worker(
    site: Annotated[str, typer.Option("--site", help="The site this machine stands at.")],
    plan: PlanOption = None,
    name: Annotated[str | None, typer.Option("--name", help="The worker's name (default lifeline-SITE-HOST).")] = None,
    query_seconds: Annotated[float, typer.Option(
        "--query-seconds", min=0.1, max=60, help="How often it asks the server for runs (Prefect's default is 10 s: "
        "up to 10 s more before a failover starts).")] = 1.0,
) -> None:
    """Start this site's Prefect worker: `prefect worker start --pool lifeline-SITE --type process` (blocks)."""
    loaded = loaded_plan(plan)
    if site not in loaded.plan.sites:
        fail(f"--site: no site {site!r} in plan {loaded.plan.name} (its sites: {', '.join(loaded.plan.sites)})")
    lasting_api_url("worker")
    from lifeline.flows.deploy import POOL_TYPE, site_pool

    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", site_pool(site), "--type", POOL_TYPE,
            "--name", name or f"{site_pool(site)}-{socket.gethostname()}"]
    os.environ["PREFECT_WORKER_QUERY_SECONDS"] = str(query_seconds)
    from lifeline.flows.crashed_runs import send_heartbeats_often

    send_heartbeats_often()  # its flow-run processes inherit it: the server crashes a run whose process died
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # the worker is Prefect's own; systemd's signals reach it directly
