"""A run's communications: the events it announces, its `notified` milestone, and its escalation."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable

from lifeline.configs.messages import unknown_fields, written_by_hand
from lifeline.configs.plan import Plan
from lifeline.tasks.run.deliveries import Delivery, EscalationState, reach_of
from lifeline.tasks.run.ledger import Deliveries, Escalations, Ledger
from lifeline.tasks.run.record import Journal, RunRecord, utc_now
from lifeline.tasks.steps.escalation import DELIVERY_WAIT_SECONDS, Escalation, acknowledge, contact_named
from lifeline.tasks.steps.failover import StepOutcome
from lifeline.tasks.steps.notify import Announcement, Notifier
from lifeline.tasks.steps.step import step

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
    def __init__(self, plan: Plan, plan_path: str, journal: Journal, ledger: Ledger,
                 carries_on: Iterable[str] = ()) -> None:
        """`carries_on`: runs this one takes over from (killed ones it closed); whom they told of an event
        is not told of it again."""
        self.plan, self.plan_path, self.journal, self.ledger = plan, plan_path, journal, ledger
        self.deliveries = Deliveries(ledger)
        self.notifier = Notifier(plan, journal.record.id, self.deliveries, on_delivered=self._delivered)
        self.escalations: list[threading.Thread] = []
        self.told_before: set[tuple[str, str]] = set()
        for run_id in carries_on:
            self.carry_on(run_id)

    def carry_on(self, run_id: str) -> None:
        """Whom run `run_id` told of an event (of the same incident) is not told of it again by this run; nor is
        whoever it was telling when it was killed (at most once: the escalation reaches them if nobody acks)."""
        self.told_before |= {(delivery.event, delivery.contact)
                             for delivery in self.deliveries.of_run(run_id, with_cut_off=True)
                             if delivery.status != "failed"}

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
        told_before = self.told_of(event)
        told = self.notifier.announce(announcement, exclude=told_before)
        if event in self.plan.escalation.events and self.plan.escalation.levels and not self.acknowledged():
            self.escalate(announcement, told_before | {recipient.contact_id for recipient in told})

    def told_of(self, event: str) -> frozenset[str]:
        """Who a run this one carries on already told of `event`."""
        return frozenset(contact for told_event, contact in self.told_before if told_event == event)

    def tell_contacts(self, event: str, contact_ids: list[str], level: int | None = None) -> None:
        """The event to these people, on the channels of the first audience the event goes to (not to those a run
        this one carries on told of it)."""
        audiences = self.plan.audiences_for(event) or list(self.plan.audiences)  # type: ignore[arg-type]
        contact_ids = [contact for contact in contact_ids if contact not in self.told_of(event)]
        if not audiences or not contact_ids:
            return
        self.notifier.announce_to(Announcement(event, self.common_fields(), level=level), contact_ids, audiences[0])

    def escalate(self, announcement: Announcement, already_told: frozenset[str]) -> None:
        """One escalation per run: while one is open, a later event of the same incident does not start another.
        Under `lifeline serve` it is a flow run of its own; otherwise a thread of this process."""
        from lifeline.tasks.steps.escalation_runs import start_escalation_run, under_a_deployment

        record, store = self.journal.record, Escalations(self.ledger)
        existing = store.get(record.id)
        if existing is not None and existing.status == "open":
            return
        started_at = record.started_at if announcement.event == "incident_declared" else utc_now()
        state = EscalationState(run_id=record.id, plan=self.plan.name, event=announcement.event,
                                fields=announcement.fields, started_at=started_at, already_told=sorted(already_told))
        store.save(state)
        if under_a_deployment():
            try:
                start_escalation_run(self.plan_path, state, self.ledger)
                return
            except Exception as error:  # noqa: BLE001 - escalate here rather than not at all
                print(f"could not start the escalation as a flow run of its own ({error}); it runs in this run's "
                      "process", file=sys.stderr, flush=True)
        self.escalations.append(Escalation(self.plan, self.notifier, self.ledger, state).start())

    def send(self, audiences: list[str], template: str | None, message: str | None) -> list[Delivery]:
        """A runbook `notify` step: a template or a message to audiences; returns once every delivery has ended."""
        event = template or "test"
        announcement = Announcement(event, {**unknown_fields(event), **self.common_fields()},
                                    text=None if message is None else written_by_hand(message))
        notifier = Notifier(self.plan, self.journal.record.id, self.deliveries, on_delivered=self._delivered)
        notifier.announce(announcement, audiences or None)
        try:
            return notifier.wait(DELIVERY_WAIT_SECONDS)
        finally:
            notifier.close()

    def acknowledged(self) -> bool:
        return self.deliveries.acknowledgement(self.journal.record.id) is not None

    def answered_by(self, person: str) -> None:
        """A person who answered the run's approval knows of it: that acknowledges it."""
        contact = contact_named(self.plan, person)
        if contact is not None:
            acknowledge(self.deliveries, self.journal.record.id, contact, via="approval")

    def finish(self) -> None:
        """Announce the run's end, wait for its messages, and escalate in the foreground while it is unresolved
        (a completed run resolves its escalation: the ledger already says so)."""
        record = self.journal.record
        event = end_event(record)
        if event is not None:
            self.announce(event, **end_fields(record))
        self.notifier.wait(DELIVERY_WAIT_SECONDS)
        for thread in self.escalations:
            if thread.is_alive():
                print(f"Escalating until somebody acknowledges: lifeline ack {record.id} --by CONTACT",
                      file=sys.stderr, flush=True)
                thread.join()
        self.notifier.wait(DELIVERY_WAIT_SECONDS)
        self.notifier.close()


@step(retries=0, timeout_seconds=DELIVERY_WAIT_SECONDS + 60)
def notify(send: Callable[..., list[Delivery] | None], audiences: list[str], template: str | None,
           message: str | None) -> StepOutcome:
    """The runbook's `notify` step: told as the plan's channels allow; a recipient nobody reached is a warning,
    never a failed failover."""
    told = send(audiences, template, message)
    if told is None:
        warning = "the plan has no communication plan (contacts, channels, audiences): nobody was told"
        return StepOutcome(changed=False, detail={"message": message or template}, warnings=[warning])
    reach = reach_of(told)
    detail = {"event": template or "test", "audiences": ",".join(audiences) or "per notifications", **reach.detail}
    return StepOutcome(changed=bool(reach.reached), detail=detail, warnings=[reach.missed] if reach.missed else [])
