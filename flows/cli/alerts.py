"""`lifeline intake` (the warnings' HTTP service) and `lifeline status-page` (the public page's URL and statuses)."""

from __future__ import annotations

import json
import sys
import threading
from typing import Annotated

import typer
from lifeline.configs.settings import load_settings
from lifeline.flows.cli.common import JsonOption, PlanOption, app, fail, loaded_plan


@app.command()
def intake(
    plan: PlanOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default the plan's intake.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default the plan's intake.port).", min=1, max=65535)] = None,
) -> None:
    """Take warnings over HTTP (CAP, Alertmanager, plain JSON) and start the plan's preparedness (blocks)."""
    loaded = loaded_plan(plan)
    if loaded.plan.intake is None:
        fail("intake: the plan has no `intake` section (token_file, host, port)")
    from lifeline.flows.cli.control_plane import lasting_api_url
    from lifeline.flows.intake import Intake, asgi_app, poll_feeds, read_token
    from lifeline.tasks.adapters.alerts import MalformedAlert
    from lifeline.tasks.adapters.alerts.cap import schema

    try:
        service = Intake(loaded, read_token(loaded))
    except (OSError, MalformedAlert) as error:
        fail(f"intake.token_file: {error}")
    lasting_api_url("intake")
    schema()  # before the first warning, not during it
    import uvicorn

    stop = threading.Event()
    poll_feeds(service, stop, lambda line: print(line, file=sys.stderr, flush=True))
    settings = loaded.plan.intake
    print(f"intake for plan {loaded.plan.name} on http://{host or settings.host}:{port or settings.port}/v1/alerts",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(asgi_app(service), host=host or settings.host, port=port or settings.port, log_level="warning",
                    access_log=False)
    finally:
        stop.set()


@app.command(name="status-page")
def status_page(
    plan: PlanOption = None,
    publish: Annotated[bool, typer.Option("--publish", help="Render and upload the page again from the ledger.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The public status page: its URL and every component's current status."""
    loaded = loaded_plan(plan)
    if loaded.plan.status_page is None:
        fail("status-page: the plan has no `status_page` section")
    from lifeline.tasks.adapters.aws import AwsError
    from lifeline.tasks.report.status_page import page_facts
    from lifeline.tasks.run.ledger import Ledger
    from lifeline.tasks.run.public import StatusUpdates
    from lifeline.tasks.run.record import utc_now
    from lifeline.tasks.steps.status_page import page_url
    from lifeline.tasks.steps.status_page import publish as publish_page

    ledger = Ledger(load_settings().ledger)
    try:
        if publish:
            facts = publish_page(loaded.plan, ledger).facts
        else:
            facts = page_facts(loaded.plan.status_page, StatusUpdates(ledger).of_plan(loaded.plan.name),
                               loaded.plan.timezone, utc_now())
        url = page_url(loaded.plan)
    except AwsError as error:
        fail(f"status_page: {error}")
    if as_json:
        typer.echo(json.dumps({"url": url, "json_url": page_url(loaded.plan, "status.json"), **facts},
                              ensure_ascii=False, indent=2))
        return
    typer.echo(f"{url}")
    for component in facts["components"]:
        typer.echo(f"  {component['id']:<20} {component['status']}")
    open_incidents = [incident for incident in facts["incidents"] if not incident.get("resolved")]
    typer.echo(f"{len(open_incidents)} open incident(s), {len(facts['incidents'])} in all")
