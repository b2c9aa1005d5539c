"""A person says yes: on the terminal for a CLI run, in a Prefect form for a deployment run."""

from __future__ import annotations

import sys
import threading
from datetime import datetime
from typing import Literal

from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.record import Journal, utc_now
from lifeline.tasks.steps.approvers import Approvers
from lifeline.tasks.steps.forms import answer_form
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

ApprovalMode = Literal["terminal", "yes", "ui"]


class Approval(RunInput):
    """The form the Prefect UI shows on a paused run."""

    operator: str = Field("", description="Who decides (name or login).")
    reason: str = Field("", description="Why: the incident, the ticket.")
    approve: bool = Field(False, description="Tick to go ahead; leave unticked to cancel with nothing changed.")


class ApprovalNeeded(LifelineError):
    user_error = True


class Decision(BaseModel):
    approved: bool
    operator: str
    reason: str
    asked_at: datetime
    answered_at: datetime

    @property
    def detail(self) -> dict:
        return {
            "approved": self.approved,
            "operator": self.operator,
            "reason": self.reason,
            "waited_seconds": round((self.answered_at - self.asked_at).total_seconds(), 3),
        }


def ask(prompt: str, description: str, mode: ApprovalMode, timeout_seconds: float, reason: str = "",
        approvers: Approvers | None = None) -> Decision:
    asked_at = utc_now()
    if mode == "yes":
        return Decision(approved=True, operator="--yes", reason=reason, asked_at=asked_at, answered_at=utc_now())
    if mode == "terminal":
        if not sys.stdin.isatty():
            raise ApprovalNeeded(f"{prompt} needs a person's yes: run from a terminal, or pass --yes")
        print(description, file=sys.stderr)
        answer = input(f"{prompt} [y/N] ").strip().lower()
        return Decision(approved=answer in ("y", "yes"), operator="terminal", reason=reason, asked_at=asked_at,
                        answered_at=utc_now())
    return ask_in_ui(description, timeout_seconds, reason, asked_at, approvers)


def ask_recorded(
    journal: Journal, step_name: str, prompt: str, description: str, mode: ApprovalMode, timeout_seconds: float,
    reason: str = "", public_events: tuple[str, ...] = (), approvers: Approvers | None = None,
) -> Decision:
    """Ask, and record the wait: the step spans it, between the `awaiting_approval` milestone and the
    `approved` (or `rejected`) one, since the time a person takes counts in the RTO. The form also shows the
    public status page's text for `public_events`: approving the run approves that text."""
    description += journal.public.preview(list(public_events)) if public_events else ""
    journal.milestone("awaiting_approval")
    if mode != "yes" and journal.record.kind not in ("drill", "alert"):
        journal.tell("approval_needed")
    with journal.step(step_name) as entry:
        decision = ask(prompt, description, mode, timeout_seconds, reason, approvers)
        entry.detail.update(decision.detail)
    journal.milestone("approved" if decision.approved else "rejected", decision.answered_at)
    if decision.approved and public_events:
        journal.public.approve(decision.operator)
    if decision.operator:
        journal.answered_by(decision.operator)
    return decision


# Prefect fails a paused run whose pause times out, and refuses any later state but Failed: so the
# pause lasts this much longer than the approval timeout, and at that timeout Lifeline itself answers
# "not approved" through the form's own resume call, while the run can still end as Cancelled.
PAUSE_GRACE_SECONDS = 60


def ask_in_ui(description: str, timeout_seconds: float, reason: str, asked_at: datetime,
              approvers: Approvers | None = None) -> Decision:
    """The form on this run's page; an approval by somebody who may not give it is refused there, and the form
    asked again, until the deadline."""
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    run_id = flow_run.id  # read here: the timer's thread has no flow run context
    no_answer = f"no answer within {timeout_seconds:g} s"
    firing, answered_by_deadline, pause_over = threading.Event(), threading.Event(), threading.Event()

    def answer_no() -> None:
        firing.set()
        refusal = Approval(operator="", reason=no_answer, approve=False).model_dump()
        if answer_form(run_id, refusal, pause_over):
            answered_by_deadline.set()

    deadline = threading.Timer(timeout_seconds, answer_no)
    deadline.daemon = True
    # A bare initial value would replace the field and drop its description from the form.
    prefilled = Field(reason, description=Approval.model_fields["reason"].description)
    deadline.start()
    deputies_clock = approvers.start_clock() if approvers else None
    shown = description + (approvers.markdown() if approvers else "")
    try:
        while True:
            remaining = timeout_seconds - (utc_now() - asked_at).total_seconds()
            answer = pause_flow_run(
                wait_for_input=Approval.with_initial_data(description=shown, reason=prefilled),
                timeout=int(max(0.0, remaining)) + PAUSE_GRACE_SECONDS,
                poll_interval=1,
            )
            refused = approvers.refusal(answer.operator) if approvers and answer.approve else None
            if refused is None or firing.is_set():
                break
            get_run_logger().warning("approval refused: %s", refused)
            shown = f"**Refused: {refused}.**\n\n" + description + approvers.markdown()
    except (FlowPauseTimeout, TimeoutError):  # Prefect raises FlowPauseTimeout, which is no TimeoutError
        return Decision(approved=False, operator="", reason=no_answer, asked_at=asked_at, answered_at=utc_now())
    finally:
        pause_over.set()
        deadline.cancel()
        if deputies_clock is not None:
            deputies_clock.cancel()
    if firing.is_set():
        deadline.join(30)  # it may have resumed the run but not yet said so
    if answered_by_deadline.is_set():
        return Decision(approved=False, operator="", reason=no_answer, asked_at=asked_at, answered_at=utc_now())
    return Decision(approved=answer.approve, operator=answer.operator, reason=answer.reason or reason,
                    asked_at=asked_at, answered_at=utc_now())
