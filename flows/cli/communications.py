"""`lifeline contacts`, `lifeline notify` and `lifeline ack`: the roster, a message by hand, an acknowledgement."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer
from lifeline.configs.messages import EVENTS, unknown_fields, written_by_hand
from lifeline.configs.settings import load_settings
from lifeline.flows.cli.common import EXIT_FAILED, JsonOption, PlanOption, app, fail, loaded_plan


@app.command()
def contacts(
    plan: PlanOption = None,
    on_call: Annotated[bool, typer.Option("--on-call", help="Only who holds each on-call role now.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The emergency contact roster, who holds each on-call role now, and who may approve."""
    from lifeline.tasks.run.ledger import Ledger
    from lifeline.tasks.run.public import Modes
    from lifeline.tasks.steps.approvers import STAFF_SHORTAGE

    loaded = loaded_plan(plan)
    roster = loaded.plan
    now = datetime.now(UTC)
    holders = {role: rotation.holder(now, roster.timezone) for role, rotation in roster.oncall.items()}
    shortage_until = Modes(Ledger(load_settings().ledger)).active_until(roster.name, STAFF_SHORTAGE)
    if as_json:
        people = {} if on_call else {cid: person.model_dump(mode="json") for cid, person in roster.contacts.items()}
        typer.echo(json.dumps({"hotline": roster.hotline, "contacts": people, "on_call": holders,
                               "approvers": roster.recovery.approvers,
                               "staff_shortage_until": shortage_until.isoformat() if shortage_until else None},
                              ensure_ascii=False, indent=2))
        return
    typer.echo(f"Emergency hotline: {roster.hotline or '— (set `hotline` in the plan)'}")
    if not on_call:
        for cid, person in roster.contacts.items():
            reach = ", ".join([*person.phones, *([person.email] if person.email else [])]) or "no phone or email"
            deputy = f"; deputy {person.deputy}" if person.deputy else ""
            typer.echo(f"  {cid:<18} {person.name:<20} {person.role:<20} {person.language}  {reach}{deputy}")
    for role, holder in holders.items():
        person = roster.contacts[holder]
        typer.echo(f"On call now, {role}: {holder} ({person.name}, {', '.join(person.phones) or 'no phone'})")
    if roster.recovery.approvers:
        typer.echo(f"Approvers: {', '.join(roster.recovery.approvers)}")
    if shortage_until is not None:
        typer.echo(f"Staff-shortage mode until {shortage_until.isoformat(timespec='minutes')}: the approvers' deputies "
                   "approve from the start")


@app.command()
def notify(
    plan: PlanOption = None,
    audience: Annotated[list[str] | None, typer.Option("--audience", "-a", help="Audience to tell (repeatable).")] = None,
    template: Annotated[str | None, typer.Option("--template", help=f"Event whose template to send: {', '.join(EVENTS)}.")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Text to send instead of a template.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show who would get what, on which channel; send nothing.")] = False,
    confirm: Annotated[str | None, typer.Option("--confirm", help="Message id of a manual delivery you made.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="With --confirm: your contact id.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Send a message by hand (the monthly roster test, an update), or confirm a manual delivery."""
    from lifeline.tasks.run.deliveries import reach_of
    from lifeline.tasks.run.ledger import Deliveries, Ledger
    from lifeline.tasks.steps.notify import Announcement, Notifier, message_for

    loaded = loaded_plan(plan)
    roster = loaded.plan
    deliveries = Deliveries(Ledger(load_settings().ledger))
    if confirm is not None:
        if not by or by not in roster.contacts:
            fail(f"--by: {by!r} is not a contact of plan {roster.name}" if by else "--confirm needs --by CONTACT")
        confirmed = deliveries.confirm(confirm, by)
        if confirmed is None:
            fail(f"--confirm: no message {confirm!r}")
        typer.echo(confirmed.model_dump_json(indent=2) if as_json else f"{confirmed.message_id}: {confirmed.status}")
        return
    audiences = audience or []
    unknown = [name for name in audiences if name not in roster.audiences]
    if not audiences or unknown:
        fail(f"--audience: {'no audience named ' + repr(unknown[0]) if unknown else 'required'} "
             f"(the plan's: {', '.join(roster.audiences) or 'none'})")
    if (template is None) == (message is None):
        fail("give one of --template EVENT and --message TEXT")
    if template is not None and template not in EVENTS:
        fail(f"--template: no event {template!r} (one of {', '.join(EVENTS)})")
    event = template or "test"
    text = None if message is None else written_by_hand(message)
    run_id = "notify-" + uuid.uuid4().hex[:10]
    fields = {**unknown_fields(event), "plan": roster.name, "hotline": roster.hotline or "—", "run_id": run_id}
    notifier = Notifier(roster, run_id, None if dry_run else deliveries)
    announcement = Announcement(event, fields, text=text)
    if dry_run:
        recipients = notifier.recipients(audiences, datetime.now(UTC))
        plan_out = [{"contact": r.contact_id, "audience": r.audience, "language": r.contact.language,
                     "channels": roster.audiences[r.audience].channels,
                     "body": message_for(roster, event, r.audience, r.contact.language, text).body}
                    for r in recipients]
        typer.echo(json.dumps({"dry_run": True, "recipients": plan_out}, ensure_ascii=False, indent=2) if as_json
                   else "\n".join(f"{r['contact']} ({r['audience']}, {r['language']}): {' → '.join(r['channels'])}"
                                  for r in plan_out))
        return
    notifier.announce(announcement, audiences)
    sent = notifier.wait()
    notifier.close()
    reach = reach_of(sent)
    if as_json:
        typer.echo(json.dumps({"run_id": run_id, "event": event, "messages": len(reach.messages),
                               "reached": len(reach.reached),
                               "deliveries": [json.loads(d.model_dump_json()) for d in sent]}, ensure_ascii=False,
                              indent=2))
    else:
        for delivery in sent:
            print(f"{delivery.contact:<18} {delivery.channel:<10} {delivery.recipient:<22} {delivery.status:<22} "
                  f"attempt {delivery.attempt}  {delivery.answer}", file=sys.stdout)
        typer.echo(f"{len(reach.reached)} of {len(reach.messages)} recipients reached (run {run_id})")
    if reach.missed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def ack(
    run_id: Annotated[str, typer.Argument(help="The run whose escalation to stop.")],
    by: Annotated[str, typer.Option("--by", help="Your contact id in the plan's roster.")],
    note: Annotated[str, typer.Option("--note", help="What you are doing about it.")] = "",
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Acknowledge a run: its escalation stops; who and when is recorded."""
    from lifeline.tasks.run.ledger import Deliveries, Ledger
    from lifeline.tasks.steps.escalation import acknowledge

    loaded = loaded_plan(plan)
    if by not in loaded.plan.contacts:
        fail(f"--by: {by!r} is not a contact of plan {loaded.plan.name}")
    ledger = Ledger(load_settings().ledger)
    run = ledger.run(run_id)
    if run is None:
        fail(f"no run {run_id!r} in the ledger")
    done = acknowledge(Deliveries(ledger), run.id, by, via="cli", note=note)
    if as_json:
        typer.echo(done.model_dump_json(indent=2))
    elif done.contact != by:
        typer.echo(f"run {run.id} was already acknowledged by {done.contact} at {done.at.isoformat(timespec='seconds')}")
    else:
        typer.echo(f"run {run.id} acknowledged by {by} at {done.at.isoformat(timespec='seconds')}")
