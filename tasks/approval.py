"""A person says yes: on the terminal for a CLI run, in a Prefect form for a deployment run."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Literal

from lifeline.tasks.errors import LifelineError
from lifeline.tasks.record import utc_now
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


def ask(prompt: str, description: str, mode: ApprovalMode, timeout_seconds: float, reason: str = "") -> Decision:
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
    try:
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=description, reason=reason),
            timeout=int(timeout_seconds),
            poll_interval=1,
        )
    except TimeoutError:
        return Decision(approved=False, operator="", reason=f"no answer within {timeout_seconds:g} s",
                        asked_at=asked_at, answered_at=utc_now())
    return Decision(approved=answer.approve, operator=answer.operator, reason=answer.reason or reason,
                    asked_at=asked_at, answered_at=utc_now())
