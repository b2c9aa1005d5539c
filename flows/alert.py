"""Prepare for a warning: what the plan's `preparedness` says for its kind, recorded as a run of its own.

Intake starts it on the `alert` deployment for every new warning it takes (CAP, Alertmanager or the plain form).
An exercise or test warning prepares the same way, and everything it says is marked as an exercise.
"""

from __future__ import annotations

from pathlib import Path

from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.settings import Settings, load_settings
from lifeline.flows.backup import run_backups
from lifeline.flows.failover import preflight
from lifeline.tasks.adapters.alerts import Alert
from lifeline.tasks.run import topology
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import Journal, Trigger
from lifeline.tasks.steps import preparedness
from lifeline.tasks.steps.alert_sites import matching_sites
from lifeline.tasks.steps.approval import ApprovalMode, ask_recorded
from lifeline.tasks.steps.approvers import approvers_for
from lifeline.tasks.steps.recorded_run import flow_result, recorded_run
from lifeline.tasks.steps.security_readiness import check_compromise_readiness
from prefect import flow


@flow(name="alert", log_prints=False)
def alert_flow(
    plan_path: str, alert: dict, approval: ApprovalMode = "terminal", trigger: Trigger = "cli",
    record_id: str | None = None,
) -> str:
    """Prepare for a warning as the plan's `preparedness` says for its kind, tell the liaison and leadership,
    then post the public status page once a person approves its text.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        alert: The warning as intake parsed it.
        approval: How a person approves the public text: ui (a form on this run's page), terminal, or yes.
        trigger: Who started the run: schedule, ui or cli.
        record_id: Id for the run record (intake sets it, and answers the sender with it).
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    warning = Alert.model_validate(alert)
    with recorded_run("alert", loaded, settings, trigger=trigger, record_id=record_id,
                      scenario=f"{warning.kind} {warning.message_type}" + (" exercise" if warning.exercise else "")
                      ) as journal:
        prepare(loaded, settings, journal, warning, "yes" if warning.exercise else approval)
    return flow_result(journal)


def prepare(loaded: LoadedPlan, settings: Settings, journal: Journal, warning: Alert, approval: ApprovalMode) -> None:
    plan, ledger = loaded.plan, Ledger(settings.ledger)
    journal.milestone("alerted", warning.sent)
    with journal.step("match sites") as entry:
        sites = matching_sites(plan, warning)
        entry.detail.update(sites=sites, key=warning.key, severity=warning.severity, status=warning.status)
    journal.message_fields.update(preparedness.alert_fields(warning, sites))
    if original := preparedness.original_run(ledger, warning):
        journal.message_fields["incident"] = original  # the status page's incident this one updates
    if warning.message_type == "cancel":
        journal.record_skipped("prepare", f"the warning was cancelled (run {original or 'unknown'} prepared for it)")
        approve_public_text(plan, ledger, journal, approval, "alert_cancelled")
        journal.public.post("alert_cancelled", resolved=True)
        return
    preparation = plan.preparedness[warning.kind]
    home = topology.normal_primary_site(plan)
    away = topology.other_site(plan, home)
    problems: list[str] = []
    if warning.kind == "security":
        readiness = check_compromise_readiness(plan, settings, journal=journal, step_name="ready to contain a compromise")
        problems += [] if readiness.ready else [f"not ready to contain a compromise: {'; '.join(readiness.reasons)}"]
    elif warning.kind == "public-health":
        problems += preparedness.staff_shortage(plan, ledger, journal, preparation, away)
    else:  # weather, natural disaster, network and any other kind the plan prepares for: the DR site ready
        if warning.kind in ("weather", "natural-disaster"):
            run_backups(loaded, settings, journal, only=preparedness.critical_datasets(plan, preparation),
                        housekeeping=False)  # raises when one fails: not prepared
            journal.milestone("offsite_snapshot")
        elif warning.kind == "network":
            problems += preparedness.verify_sites(plan, journal, [home, away])
        readiness = preflight(plan, away, journal=journal, step_name=f"preflight {away}")
        problems += preparedness.record_readiness(journal, readiness.ready, readiness.reasons)
    if preparation.notify:
        problems += preparedness.tell(journal, preparation.notify)
    preparedness.conclude(journal, problems)
    approve_public_text(plan, ledger, journal, approval, "alert_received")
    journal.public.post("alert_received")


def approve_public_text(plan, ledger: Ledger, journal: Journal, approval: ApprovalMode, event: str) -> None:
    if plan.status_page is None:
        return
    fields = journal.message_fields
    ask_recorded(journal, "approve public text", f"Post this warning on the public status page of {plan.name}?",
                 f"**{fields['severity']} {fields['kind']} warning** for {fields['sites']}: {fields['headline']}",
                 approval, plan.recovery.approval_timeout_seconds, public_events=(event,),
                 approvers=approvers_for(plan, ledger, journal))
