"""Who may approve: the plan's approvers, and their deputies once the approvers have not answered in time
(or at once, in staff-shortage mode, which a public-health warning turns on)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from lifeline.configs.plan import Plan
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.public import Modes
from lifeline.tasks.run.record import Journal
from lifeline.tasks.steps.escalation import contact_named

STAFF_SHORTAGE = "staff-shortage"


@dataclass
class Approvers:
    plan: Plan
    journal: Journal
    approvers: list[str]
    deputies: list[str]
    deputies_after_seconds: float
    shortage: bool = False
    deputies_asked: threading.Event = field(default_factory=threading.Event)

    def ask_deputies(self) -> None:
        """Tell the deputies that their approval is needed (as escalation level 2); from now on they may approve."""
        if self.deputies_asked.is_set():
            return
        self.deputies_asked.set()
        self.journal.milestone("deputies_asked")
        self.journal.tell_contacts("approval_needed", self.deputies, level=2)

    def start_clock(self) -> threading.Timer | None:
        """Asks the deputies when the approvers have not answered in time; at once in staff-shortage mode."""
        if not self.deputies:
            return None
        if self.shortage:
            self.ask_deputies()
            return None
        timer = threading.Timer(self.deputies_after_seconds, self.ask_deputies)
        timer.daemon = True
        timer.start()
        return timer

    def refusal(self, operator: str) -> str | None:
        """Why `operator` may not approve (None: they may)."""
        contact = contact_named(self.plan, operator)
        if contact in self.approvers:
            return None
        if contact in self.deputies and self.deputies_asked.is_set():
            return None
        allowed = [*self.approvers, *(self.deputies if self.deputies_asked.is_set() else [])]
        who = f"{operator!r}" if operator.strip() else "an empty name"
        return f"{who} may not approve: one of {', '.join(allowed)} must (recovery.approvers)"

    def markdown(self) -> str:
        deputies = ", ".join(self.deputies) or "none"
        when = "now (staff-shortage mode)" if self.shortage else f"after {self.deputies_after_seconds / 60:g} min"
        return (f"\n\n**Who may approve**: {', '.join(self.approvers)}; their deputies ({deputies}) {when}. "
                "Give your contact id or name as operator.")


def approvers_for(plan: Plan, ledger: Ledger, journal: Journal) -> Approvers | None:
    """None when the plan names no approvers: anybody who gives a name may approve."""
    named = plan.recovery.approvers
    if not named:
        return None
    deputies = [plan.contacts[name].deputy for name in named if plan.contacts[name].deputy]
    deputies = [deputy for deputy in dict.fromkeys(deputies) if deputy not in named]
    shortage = Modes(ledger).active_until(plan.name, STAFF_SHORTAGE) is not None
    return Approvers(plan, journal, list(named), deputies, plan.recovery.deputies_after_minutes * 60, shortage)
