"""Escalation: without an acknowledgement, the plan's next level is told after its delay, and repeated.

It ends at the first of: a person acknowledges (`lifeline ack`, the form on the escalation's flow run in
the UI, or answering the run's approval), the run that raised it resolves the incident (it completed), or
the last level has been told. Its state lives in the ledger, so a restarted `lifeline serve` carries on
from the level it had reached.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

from lifeline.configs.plan import Plan
from lifeline.tasks.run.deliveries import Acknowledgement, EscalationState, EscalationStatus
from lifeline.tasks.run.ledger import Deliveries, Escalations, Ledger
from lifeline.tasks.run.record import utc_now
from lifeline.tasks.steps.notify import Announcement, Notifier

POLL_SECONDS = 0.5
DELIVERY_WAIT_SECONDS = 120
"""How long a run, or an escalation, waits at its end for its messages still on their way."""


@dataclass
class Escalation:
    plan: Plan
    notifier: Notifier
    ledger: Ledger
    state: EscalationState

    @property
    def outcome(self) -> EscalationStatus | None:
        return None if self.state.status == "open" else self.state.status

    def run(self) -> EscalationStatus:
        """Blocks until the escalation ends; returns how."""
        self.state.status, self.state.ended_at = self._run(), utc_now()
        Escalations(self.ledger).save(self.state)
        return self.state.status

    def _run(self) -> EscalationStatus:
        announcement = Announcement(self.state.event, self.state.fields)
        for position, (minutes, index) in enumerate(self.plan.escalation.level_times()):
            if position < self.state.notices_sent:
                continue  # told before a restart
            due = self.state.started_at.timestamp() + minutes * 60
            while (ended := self._ended()) is None and time.time() < due:
                time.sleep(min(POLL_SECONDS, max(0.0, due - time.time())))
            if ended is not None:
                return ended
            level = self.plan.escalation.levels[index]
            exclude = frozenset(self.state.already_told) if minutes == 0 else frozenset()
            self.notifier.announce(Announcement(announcement.event, announcement.fields, level=index + 1),
                                   [name for name in level.notify if name in self.plan.audiences], exclude)
            self.state.notices_sent = position + 1
            Escalations(self.ledger).save(self.state)
        self.notifier.wait(DELIVERY_WAIT_SECONDS)
        return self._ended() or "exhausted"

    def _ended(self) -> EscalationStatus | None:
        if Deliveries(self.ledger).acknowledgement(self.state.run_id) is not None:
            return "acknowledged"
        raised_by = self.ledger.run(self.state.run_id)
        if raised_by is not None and raised_by.status == "completed":
            return "resolved"
        return None

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"escalation-{self.state.run_id}", daemon=True)
        thread.start()
        return thread


def acknowledge(deliveries: Deliveries, run_id: str, contact: str, via: Literal["cli", "ui", "approval"] = "cli",
                note: str = "") -> Acknowledgement:
    return deliveries.acknowledge(Acknowledgement(run_id=run_id, contact=contact, at=utc_now(), via=via, note=note))


def contact_named(plan: Plan, person: str) -> str | None:
    """The contact id a person gave as their name in a form: the id itself, or the contact's name."""
    wanted = person.strip().casefold()
    for contact_id, contact in plan.contacts.items():
        if wanted in (contact_id.casefold(), contact.name.casefold()):
            return contact_id
    return None

