"""Escalations as flow runs of their own, under `lifeline serve`: visible in the UI with a form to acknowledge,
and carried on by a restarted `serve` from the level the ledger says they had reached."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from lifeline.configs.plan import Plan
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.deliveries import EscalationState, EscalationStatus
from lifeline.tasks.run.ledger import Deliveries, Escalations, Ledger
from lifeline.tasks.steps.escalation import DELIVERY_WAIT_SECONDS, POLL_SECONDS, Escalation, acknowledge
from lifeline.tasks.steps.forms import answer_form
from lifeline.tasks.steps.notify import Notifier


class EscalationMissing(LifelineError):
    user_error = True


ESCALATION_FLOW = "escalation"
ESCALATION_DEPLOYMENT = "escalation"
"""The flow and deployment `lifeline serve` runs escalations as (the flow layer registers it under these names)."""


def acknowledgement_form(plan: Plan) -> type:
    """The form on an escalation's flow run: who acknowledges, chosen from the roster, and a note."""
    from prefect.input import RunInput
    from pydantic import Field, create_model

    who = Literal[tuple(plan.contacts)]  # type: ignore[valid-type]
    return create_model(
        "Acknowledge", __base__=RunInput,
        contact=(who | None, Field(None, description="You, from the plan's roster.")),
        note=(str, Field("", description="What you are doing about it.")),
    )


def escalate_with_form(plan: Plan, ledger: Ledger, run_id: str) -> EscalationStatus:
    """The escalation of `run_id` as a flow run of its own (under `lifeline serve`): it pauses on a form a person
    answers to acknowledge, while the levels go out; when the escalation ends otherwise, it closes its own form."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    store = Escalations(ledger)
    state = store.get(run_id)
    if state is None:
        raise EscalationMissing(f"run {run_id} has no escalation in the ledger")
    if state.status != "open":
        return state.status
    state.flow_run_id = str(flow_run.id)
    store.save(state)
    notifier = Notifier(plan, run_id, Deliveries(ledger))
    escalation = Escalation(plan, notifier, ledger, state)
    form = acknowledgement_form(plan)
    logger = get_run_logger()
    last_notice = max((minutes for minutes, _ in plan.escalation.level_times()), default=0)
    pause_seconds = int(max(0.0, state.started_at.timestamp() + last_notice * 60 - time.time())) + 600
    form_closed = threading.Event()

    def escalate_then_close_the_form() -> None:
        escalation.run()
        answer_form(flow_run.id, {"contact": None, "note": f"escalation {escalation.outcome}"}, form_closed)

    threading.Thread(target=escalate_then_close_the_form, name=f"escalation-{run_id}", daemon=True).start()
    logger.info("escalating %s of run %s: acknowledge in this run's form, or `lifeline ack %s --by CONTACT`",
                state.event, run_id, run_id)
    try:
        while escalation.outcome is None:  # an empty form answers nothing: ask again
            answer = pause_flow_run(wait_for_input=form.with_initial_data(
                description=f"**Acknowledge run {run_id}** ({state.event.replace('_', ' ')}): choose yourself and "
                            "submit; the escalation stops and your name is recorded."),
                timeout=pause_seconds, poll_interval=1)
            if answer.contact:
                done = acknowledge(Deliveries(ledger), run_id, answer.contact, via="ui", note=answer.note)
                logger.info("run %s acknowledged by %s", run_id, done.contact)
                while escalation.outcome is None:
                    time.sleep(POLL_SECONDS)  # the levels' thread sees it within POLL_SECONDS
    except FlowPauseTimeout:
        logger.warning("nobody acknowledged run %s within %d s of its last level", run_id, pause_seconds)
    finally:
        form_closed.set()
    notifier.wait(DELIVERY_WAIT_SECONDS)  # an acknowledgement ends the levels' thread before its last ones arrive
    notifier.close()
    return escalation.outcome or "open"


def under_a_deployment() -> bool:
    from prefect.runtime import deployment

    return deployment.id is not None


def escalation_deployment(plan: str) -> str:
    """`lifeline serve` and `lifeline deploy` name every deployment after its plan: `<plan>-escalation`."""
    return f"{ESCALATION_FLOW}/{plan}-{ESCALATION_DEPLOYMENT}"


def start_escalation_run(plan_path: str, state: EscalationState, ledger: Ledger) -> str:
    """Create the escalation's flow run on the escalation deployment beside the running one; its id is kept in
    the ledger."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        target = client.read_deployment_by_name(escalation_deployment(state.plan))
        created = client.create_flow_run_from_deployment(
            target.id, parameters={"plan_path": plan_path, "run_id": state.run_id},
            name=f"escalation-{state.run_id}", tags=["lifeline", f"plan:{state.plan}", f"run:{state.run_id}"])
    state.flow_run_id = str(created.id)
    Escalations(ledger).save(state)
    return state.flow_run_id


def carry_on_escalations(plan_path: str, plan: Plan, ledger: Ledger, log: Callable[[str], None],
                         served_since: datetime, wait_seconds: float = 120) -> list[str]:
    """At `serve`'s start: every escalation of the plan still open whose flow run died with an earlier `serve`
    gets a new flow run, which carries on from the level reached. Escalations a CLI process runs in its
    foreground have no flow run and are left to it. Returns the new flow runs' ids."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    still_open = [state for state in Escalations(ledger).still_open(plan.name) if state.flow_run_id]
    if not still_open:
        return []
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + wait_seconds
        while True:  # this serve's runner registers the deployment first, then polls for its runs
            try:
                target = client.read_deployment_by_name(escalation_deployment(plan.name))
                if target.updated is not None and target.updated >= served_since.astimezone(UTC):
                    break
            except Exception:  # noqa: BLE001 - not registered yet
                pass
            if time.monotonic() > deadline:
                log("escalations left open were not carried on: the escalation deployment was not registered")
                return []
            time.sleep(POLL_SECONDS)
        started = []
        for state in still_open:
            try:
                previous = client.read_flow_run(state.flow_run_id)
            except Exception:  # noqa: BLE001 - deleted with its deployment: carry on anew
                previous = None
            if previous is not None and previous.state is not None:
                if previous.state.type in (StateType.SCHEDULED, StateType.PENDING):
                    continue  # not started yet: this serve picks it up itself
                if not previous.state.is_final():
                    client.set_flow_run_state(previous.id, Cancelled(
                        message="its `lifeline serve` stopped; a new escalation run carries on"), force=True)
            started.append(start_escalation_run(plan_path, state, ledger))
            log(f"escalation of run {state.run_id} carried on in flow run {started[-1]} "
                f"({state.notices_sent} level notifications sent before)")
        return started
