"""A run's communications: the events it announces, its `notified` milestone, and its escalation."""

from __future__ import annotations

import sys
import threading

from lifeline.configs.plan import Plan
from lifeline.tasks.run.deliveries import Delivery
from lifeline.tasks.run.ledger import Deliveries, Ledger
from lifeline.tasks.run.record import Journal, RunRecord, utc_now
from lifeline.tasks.steps.escalation import Escalation, acknowledge
from lifeline.tasks.steps.notify import Announcement, Notifier

DELIVERY_WAIT_SECONDS = 120
"""How long a run waits, at its end, for its messages still on their way."""


INCIDENT_NOTICES = ("incident_declared", "approval_needed", "failover_started")
"""The liaison's first delivery of one of these is the run's `notified` milestone."""


def end_event(record: RunRecord) -> str | None:
    """The event a run's end announces (None: nothing to say)."""
    if record.parent_id is not None:
        return None  # the run that started it speaks for both
    match record.kind, record.status:
        case "drill", _:
            return "drill_result"
        case "backup", "failed":
            return "backup_failed"
        case ("failover" | "restore"), "completed":
            return "recovered"
        case "failback", "completed":
            return "failback_done"
        case ("failover" | "failback" | "restore"), ("failed" | "cancelled"):
            return str(record.status)
    return None


def end_fields(record: RunRecord) -> dict:
    minutes = round(record.rto_seconds / 60, 1) if record.rto_seconds is not None else "—"
    return {"kind": record.kind, "status": record.status, "error": record.error or "unknown error",
            "reason": record.error or "", "rto_minutes": minutes,
            "affected_customers": record.affected_customers if record.affected_customers is not None else "—",
            "scenario": record.scenario or "—", "met_targets": bool(record.met_targets),
            "datasets": ", ".join(s.name.removeprefix("backup ") for s in record.steps if s.status == "failed") or "—"}


def communicates(plan: Plan) -> bool:
    return bool(plan.audiences and plan.channels and plan.contacts)


class RunCommunications:
    def __init__(self, plan: Plan, journal: Journal, ledger: Ledger) -> None:
        self.plan, self.journal = plan, journal
        self.deliveries = Deliveries(ledger)
        self.notifier = Notifier(plan, journal.record.id, self.deliveries, on_delivered=self._delivered)
        self.escalations: list[tuple[Escalation, threading.Thread]] = []

    def _delivered(self, delivery: Delivery) -> None:
        if delivery.audience == "liaison" and delivery.event in INCIDENT_NOTICES \
                and "declared" in self.journal.record.milestones:
            self.journal.milestone("notified", delivery.at)

    def common_fields(self) -> dict:
        record = self.journal.record
        return {"plan": self.plan.name, "hotline": self.plan.hotline or "—", "run_id": record.id,
                "site": "—", **self.journal.message_fields}

    def announce(self, event: str, **fields: object) -> None:
        announcement = Announcement(event, {**self.common_fields(), **fields})
        told = self.notifier.announce(announcement)
        if event in self.plan.escalation.events and self.plan.escalation.levels and not self.acknowledged():
            escalation = Escalation(self.plan, self.notifier, self.deliveries, announcement, self.journal.record.started_at
                                    if event == "incident_declared" else utc_now(),
                                    frozenset(recipient.contact_id for recipient in told))
            self.escalations.append((escalation, escalation.start()))

    def acknowledged(self) -> bool:
        return self.deliveries.acknowledgement(self.journal.record.id) is not None

    def approved_by(self, operator: str) -> None:
        """A person who answered the run's approval knows of it: that acknowledges it."""
        known = operator if operator in self.plan.contacts else ""
        if known:
            acknowledge(self.deliveries, self.journal.record.id, known, via="approval")

    def finish(self) -> None:
        """Announce the run's end, wait for its messages, and escalate in the foreground while it is unresolved."""
        record = self.journal.record
        event = end_event(record)
        if record.status == "completed":
            for escalation, _ in self.escalations:
                escalation.resolved.set()
        if event is not None:
            self.announce(event, **end_fields(record))
        self.notifier.wait(DELIVERY_WAIT_SECONDS)
        for _, thread in self.escalations:
            if thread.is_alive():
                print(f"Escalating until somebody acknowledges: lifeline ack {record.id} --by CONTACT",
                      file=sys.stderr, flush=True)
                thread.join()
        self.notifier.wait(DELIVERY_WAIT_SECONDS)
        self.notifier.close()

