"""`lifeline call`: a test call to the service number through the carrier's SBC, as a customer makes it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from lifeline.flows.cli.common import JsonOption, PlanOption, app, fail, loaded_plan


@app.command()
def call(
    plan: PlanOption = None,
    listen: Annotated[float, typer.Option("--listen", min=0, max=300,
                                          help="Seconds to listen to what the IVR plays (0: hang up at once).")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Call the service number through the SBC: which site answers, how fast, and what a caller hears.
    Exit 1 when nobody answers."""
    from lifeline.tasks.steps.telephony import place_test_call, routed_sites

    telephony = loaded_plan(plan).plan.telephony
    if telephony is None:
        fail("telephony: the plan has no `telephony` section to call through")
    result, site = place_test_call(telephony, record_seconds=listen)
    heard = result.listening
    facts = {"outcome": result.outcome, "status": result.status, "site": site, "answered_by": result.answered_by,
             "setup_seconds": result.setup_seconds, "routed_to": routed_sites(telephony),
             **({"heard_seconds": heard.seconds, "level_dbfs": heard.level_dbfs, "silent": heard.silent}
                if listen else {})}
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
    else:
        typer.echo(f"{telephony.service_number}: {result.summary}" + (f" (site {site})" if site else "")
                   + (f"; heard {heard.seconds:.1f} s at {heard.level_dbfs} dBFS"
                      + (" (silence)" if heard.silent else "") if listen and result.outcome == "answered" else ""))
    if result.outcome != "answered":
        raise typer.Exit(1)
