"""Rehearsals of the communication plan, for the drills `comms-failure`, `staff-shortage` and `severe-weather`.

Where a person would act, the lab plays them, and says so in the record: nobody answers for the absent
approver; the deputy approves in the form once Lifeline's message has reached them.
"""

from __future__ import annotations

import threading
from datetime import datetime

from lifeline.configs.base import Targets
from lifeline.configs.drills import AlertRecovery, ApprovalRecovery, NotifyRecovery
from lifeline.configs.plan import Plan
from lifeline.tasks.adapters.alerts.cap import compose_cap, reference_to
from lifeline.tasks.adapters.alerts.posting import post_alert
from lifeline.tasks.adapters.deadline import wait_until
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.deliveries import reach_of
from lifeline.tasks.run.ledger import Deliveries, Ledger
from lifeline.tasks.run.record import Journal, RunRecord, utc_now
from lifeline.tasks.steps.approval import ask_recorded
from lifeline.tasks.steps.approvers import approvers_for
from lifeline.tasks.steps.forms import answer_form

DRILL_SENDER = "lifeline-drill@localhost"
CANCEL_SECONDS = 120
CANCEL_STEP = "cancel the warning"  # its outcome in the journal says whether the drill's cancel reached intake


class RehearsalFailed(LifelineError):
    pass


def recovered(journal: Journal, at: datetime) -> None:
    """What the rehearsal waited for happened at `at`: the drill's RTO ends there."""
    record = journal.record
    record.recovered_at = journal.milestone("recovered", at)
    record.rto_seconds = (record.recovered_at - record.incident_at).total_seconds()


def rehearse_fallback(journal: Journal, recovery: NotifyRecovery, targets: Targets) -> None:
    """The message must reach everybody although their first channel is down: through a fallback, in time."""
    with journal.step(f"notify {', '.join(recovery.audiences)} through the fallback") as entry:
        told = journal.send(list(recovery.audiences), None, recovery.message)
        if told is None:
            raise RehearsalFailed("the plan has no communication plan: nobody to tell")
        reach = reach_of(told, counted=("delivered",))  # a manual delivery is not the fallback carrying it
        failed_first = {d.message_id for d in told if not d.fallback and d.status == "failed"}
        entry.detail.update(reach.detail, first_channel_failed=len(failed_first),
                            channels=sorted({d.channel for d in told if d.status == "delivered"}))
        if not reach.everybody:
            raise RehearsalFailed(f"{reach.missed or 'nobody to tell'} by any channel")
        if not failed_first:
            raise RehearsalFailed("the first channel did not fail: the fallback was not exercised (is the fault on?)")
    last = reach.last_reached_at
    journal.milestone("notified", last)
    recovered(journal, last)
    took = (last - journal.record.incident_at).total_seconds()
    if took > targets.notify_minutes * 60:
        raise RehearsalFailed(f"the fallback carried the message in {took:.1f} s, beyond targets.notify_minutes "
                              f"({targets.notify_minutes:g} min)")


def rehearse_deputy_approval(plan: Plan, ledger: Ledger, journal: Journal, recovery: ApprovalRecovery,
                             targets: Targets) -> None:
    """An approval in the run's form that the absent approver never answers: the deputies are asked after
    `deputies_after_seconds`, and the lab plays the deputy who approves once the message reached them."""
    from prefect.runtime import flow_run

    approvers = approvers_for(plan, ledger, journal)
    if approvers is None or not approvers.deputies:
        raise RehearsalFailed("recovery.approvers names nobody with a deputy: there is no chain to rehearse")
    approvers.deputies_after_seconds = recovery.deputies_after_seconds
    shortage_mode, approvers.shortage = approvers.shortage, False  # the drill rehearses the timed escalation
    journal.message_fields.setdefault("reason", f"drill {journal.record.scenario}")
    journal.message_fields.setdefault("from_site", "—")
    journal.message_fields.setdefault("to_site", journal.message_fields.get("site", "—"))
    journal.tell_contacts("approval_needed", approvers.approvers, level=1)  # a drill's approval asks nobody else
    run_id, pause_over = flow_run.id, threading.Event()

    def deputy_answers_once_told() -> None:
        deputy = wait_for_delivery(ledger, journal.record, approvers.deputies, pause_over,
                                   told_before=journal.told_before("approval_needed"))
        while deputy is not None and not approvers.deputies_asked.wait(0.2):  # told by a killed run: not asked yet
            if pause_over.is_set():
                return
        if deputy is not None:
            answer_form(run_id, {"operator": deputy, "reason": "drill: the deputy approves", "decision": "Approve"},
                        pause_over)

    player = threading.Thread(target=deputy_answers_once_told, name="lab-plays-the-deputy", daemon=True)
    player.start()
    try:
        decision = ask_recorded(journal, "approval", f"Drill: approve for {recovery.absent} (who does not answer)?",
                                "**Drill**: the approver does not answer; a deputy approves.", "ui",
                                targets.rto_minutes * 60, approvers=approvers)
    finally:
        pause_over.set()
        player.join(5)
    approved_by = next((d for d in approvers.deputies if d == decision.operator), None)
    asked = journal.record.milestones.get("deputies_asked")
    journal.record.steps[-1].detail.update(
        absent=recovery.absent, lab_played="the deputy, once told", staff_shortage_mode_on=shortage_mode,
        deputies_asked_after_seconds=round((asked - decision.asked_at).total_seconds(), 2) if asked else None)
    if not decision.approved or approved_by is None:
        raise RehearsalFailed(f"no deputy approved: {decision.reason or 'no answer'} (answered by "
                              f"{decision.operator or 'nobody'})")
    recovered(journal, decision.answered_at)


def wait_for_delivery(ledger: Ledger, record: RunRecord, contacts: list[str], stop: threading.Event,
                      told_before: frozenset[str] = frozenset()) -> str | None:
    """The first of `contacts` whom this run's approval request reached, or a killed run this one carries on did
    (None: stopped first)."""
    if earlier := [contact for contact in contacts if contact in told_before]:
        return earlier[0]
    while not stop.is_set():
        for delivery in Deliveries(ledger).of_run(record.id):
            if delivery.contact in contacts and delivery.event == "approval_needed" and delivery.status == "delivered":
                return delivery.contact
        stop.wait(0.2)
    return None


def warning_identifier(record_id: str) -> str:
    return f"drill-{record_id}"


def rehearse_warning(plan: Plan, ledger: Ledger, journal: Journal, recovery: AlertRecovery, targets: Targets,
                     sent: datetime) -> None:
    """Post a CAP exercise to intake; the preparedness run it starts must be ready (off-site snapshot, preflight
    READY, leadership notified) within the targets. The warning is cancelled afterwards, every time (and by the
    next run's sweep when the drill is killed: `sent` is in its marker before the post)."""
    area = plan.sites[recovery.site].area
    url, token = _intake(plan)
    warning = compose_cap(identifier=warning_identifier(journal.record.id), sender=DRILL_SENDER, sent=sent,
                          kind=recovery.kind, severity=recovery.severity, headline=recovery.headline,
                          area=recovery.site, geocodes=area.geocode_pairs() if area else [])
    with journal.step("post the warning to intake") as entry:
        status, answer = post_alert(url, token, warning)
        entry.detail.update(intake=url, status=status, alert_run=answer.get("run_id"), key=answer.get("key"))
        if not answer.get("run_id"):
            raise RehearsalFailed(f"intake started no run: {answer.get('ignored', answer)}")
    try:
        ready = wait_for_preparedness(ledger, journal, answer["run_id"], targets)
    finally:
        with journal.step(CANCEL_STEP) as entry:
            entry.detail.update(cancel_warning(plan, ledger, recovery, journal.record.id, sent))
            if not entry.detail["cancelled"]:
                entry.status = "warning"  # the public page still shows the exercise open: said in the record
    recovered(journal, ready)


def cancel_warning(plan: Plan, ledger: Ledger, recovery: AlertRecovery, record_id: str, sent: datetime) -> dict:
    """Cancel drill `record_id`'s exercise warning and wait for the run that resolves it. Intake takes each
    warning once by its key, so cancelling again (a sweep after a kill) starts nothing new."""
    url, token = _intake(plan)
    identifier = warning_identifier(record_id)
    cancel = compose_cap(identifier=f"{identifier}-cancel", sender=DRILL_SENDER, sent=utc_now(),
                         message_type="Cancel", kind=recovery.kind, severity=recovery.severity,
                         headline=recovery.headline, area=recovery.site,
                         references=[reference_to(DRILL_SENDER, identifier, sent)])
    answer = post_alert(url, token, cancel)[1]
    cancel_run = answer.get("run_id")
    cancelled = bool(cancel_run) and wait_until(
        lambda: getattr(ledger.run(cancel_run), "status", "running") != "running", timeout=CANCEL_SECONDS,
        interval=0.5)
    return {"cancel_run": cancel_run, "cancelled": cancelled, **({"ignored": answer["ignored"]}
                                                                  if "ignored" in answer else {})}


def warning_cancelled(journal: Journal) -> bool:
    """The drill's cancel reached intake (its step did not fail)."""
    return any(step.name == CANCEL_STEP and step.status != "failed" for step in journal.record.steps)


def _intake(plan: Plan) -> tuple[str, str]:
    intake = plan.intake
    return f"http://{intake.host}:{intake.port}/v1/alerts/cap", intake.token_file.read_text().strip()


def wait_for_preparedness(ledger: Ledger, journal: Journal, run_id: str, targets: Targets) -> datetime:
    with journal.step("wait for the preparedness run") as entry:  # one name in every run: a kill point
        entry.detail["alert_run"] = run_id
        found: list[RunRecord] = []

        def ended_or_ready() -> bool:
            run = ledger.run(run_id)
            found[:] = [run] if run is not None else []
            return run is not None and ("ready" in run.milestones or run.status != "running")

        wait_until(ended_or_ready, timeout=targets.rto_minutes * 60, interval=0.5)
        run = found[0] if found else None
        if run is None or "ready" not in run.milestones:
            raise RehearsalFailed(f"preparedness run {run_id} did not get ready within {targets.rto_minutes:g} min: "
                                  f"{run.error if run else 'it never started (is `lifeline serve` or a worker up?)'}")
        posted = journal.record.incident_at
        parts = {name: round((run.milestones[name] - posted).total_seconds(), 2)
                 for name in ("offsite_snapshot", "preflight_ready", "notified", "ready") if name in run.milestones}
        entry.detail.update(seconds_after_post=parts, alert_status=run.status)
        notified = parts.get("notified")
        if notified is None or notified > targets.notify_minutes * 60:
            raise RehearsalFailed(f"leadership was not notified within targets.notify_minutes "
                                  f"({targets.notify_minutes:g} min): {notified} s")
        return run.milestones["ready"]



