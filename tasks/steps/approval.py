"""A person says yes: on the terminal for a CLI run, in a Prefect form for a deployment run."""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.record import Journal, utc_now
from lifeline.tasks.steps.approvers import Approvers
from lifeline.tasks.steps.forms import answer_form
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

ApprovalMode = Literal["terminal", "yes", "ui"]


NOT_BLANK = r"\S"  # Prefect's server checks the form against its schema: a blank name or reason is refused there


class Approval(RunInput):
    """The form the Prefect UI shows on a paused run: every field is required, so an empty form is refused."""

    operator: str = Field(pattern=NOT_BLANK, description="Who decides: your name or contact id.")
    reason: str = Field(pattern=NOT_BLANK, description="Why: the incident, the ticket.")
    decision: Literal["Approve", "Reject"] = Field(
        description="Approve goes ahead; Reject cancels the run with nothing changed.")

    @property
    def approve(self) -> bool:
        return self.decision == "Approve"


class ForcedApproval(Approval):
    """The form when preflight says NOT READY: going on takes Force as well as Approve."""

    force: bool = Field(False, description="Go on although preflight says NOT READY (recorded, with every reason).")


class ApprovalNeeded(LifelineError):
    user_error = True


class Decision(BaseModel):
    approved: bool
    operator: str
    reason: str
    asked_at: datetime
    answered_at: datetime
    forced: bool = False  # past a NOT READY preflight, in the form

    @property
    def detail(self) -> dict:
        return {
            "approved": self.approved,
            "operator": self.operator,
            "reason": self.reason,
            "waited_seconds": round((self.answered_at - self.asked_at).total_seconds(), 3),
            **({"forced": True} if self.forced else {}),
        }


def ask(prompt: str, description: str, mode: ApprovalMode, timeout_seconds: float, reason: str = "",
        approvers: Approvers | None = None, *, offer_force: bool = False, timezone: str = "UTC") -> Decision:
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
    return ask_in_ui(description, timeout_seconds, reason, asked_at, approvers, offer_force=offer_force,
                     timezone=timezone)


def ask_recorded(
    journal: Journal, step_name: str, prompt: str, description: str, mode: ApprovalMode, timeout_seconds: float,
    reason: str = "", public_events: tuple[str, ...] = (), approvers: Approvers | None = None,
    offer_force: bool = False,
) -> Decision:
    """Ask, and record the wait: the step spans it, between the `awaiting_approval` milestone and the
    `approved` (or `rejected`) one, since the time a person takes counts in the RTO. The form also shows the
    public status page's text for `public_events`: approving the run approves that text."""
    description += journal.public.preview(list(public_events)) if public_events else ""
    journal.milestone("awaiting_approval")
    if mode != "yes" and journal.record.kind not in ("drill", "alert"):
        journal.tell("approval_needed")
    with journal.step(step_name) as entry:
        decision = ask(prompt, description, mode, timeout_seconds, reason, approvers, offer_force=offer_force,
                       timezone=journal.timezone)
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
              approvers: Approvers | None = None, *, offer_force: bool = False, timezone: str = "UTC") -> Decision:
    """The form on this run's page; an answer that may not stand (somebody who may not approve, Approve without
    Force past NOT READY) is refused there with the reason, and the form asked again, until the deadline."""
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    run_id = flow_run.id  # read here: the timer's thread has no flow run context
    no_answer = f"no answer within {timeout_seconds:g} s"
    firing, answered_by_deadline, pause_over = threading.Event(), threading.Event(), threading.Event()

    def answer_no() -> None:
        firing.set()
        if answer_form(run_id, {"operator": "Lifeline", "reason": no_answer, "decision": "Reject"}, pause_over):
            answered_by_deadline.set()

    deadline = threading.Timer(timeout_seconds, answer_no)
    deadline.daemon = True
    form = ForcedApproval if offer_force else Approval
    # A bare initial value would replace the field and drop its description and its check from the form; without
    # a reason to prefill, the field stays required (the UI marks a field with a value "Optional").
    initial = {"reason": Field(reason, pattern=NOT_BLANK, description=Approval.model_fields["reason"].description)} \
        if reason.strip() else {}
    deadline.start()
    deputies_clock = approvers.start_clock() if approvers else None
    until = (asked_at + timedelta(seconds=timeout_seconds)).astimezone(ZoneInfo(timezone))
    waiting = (f"Awaiting approval until {until:%Y-%m-%d %H:%M:%S} ({timezone}): press Resume at the top of this "
               "run's page, give your name and the reason, choose Approve or Reject, then Submit.")
    get_run_logger().warning("%s", waiting)
    heading = f"**{waiting}**\n\n"
    shown = heading + description + (approvers.markdown() if approvers else "")
    try:
        while True:
            remaining = timeout_seconds - (utc_now() - asked_at).total_seconds()
            answer = pause_flow_run(
                wait_for_input=form.with_initial_data(description=shown, **initial),
                timeout=int(max(0.0, remaining)) + PAUSE_GRACE_SECONDS,
                poll_interval=1,
            )
            refused = None if firing.is_set() else refusal(answer, approvers, offer_force)
            if refused is None:
                break
            get_run_logger().warning("approval refused: %s", refused)
            shown = f"{heading}**Refused: {refused}.**\n\n" + description + (approvers.markdown() if approvers else "")
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
    return Decision(approved=answer.approve, operator=answer.operator.strip(), reason=answer.reason.strip() or reason,
                    asked_at=asked_at, answered_at=utc_now(), forced=bool(getattr(answer, "force", False)))


def refusal(answer: Approval, approvers: Approvers | None, offer_force: bool) -> str | None:
    """Why an answer may not stand (None: it may). A Reject always stands, if it is signed."""
    if not answer.operator.strip() or not answer.reason.strip():
        return "a decision needs the operator's name and a reason"
    if not answer.approve:
        return None
    if approvers is not None and (refused := approvers.refusal(answer.operator.strip())) is not None:
        return refused
    if offer_force and not getattr(answer, "force", False):
        return "preflight says NOT READY: tick Force to go past it (recorded), or Reject"
    return None
