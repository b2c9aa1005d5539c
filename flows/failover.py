"""Fail the call centre over to its DR site: preflight, approval, fence, recover, verify, measure.

Reads like the runbook: every step checks first whether its effect is already there, so a
failover killed half-way and started again converges, and one that already happened says so.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from pathlib import Path

from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.plan import Plan
from lifeline.configs.recovery import (
    AgentsReadyStep,
    AnnouncementStep,
    DnsSwitchStep,
    PromoteStep,
    RecoveryStep,
    RestoreStep,
    SipRouteStep,
    StepGroup,
)
from lifeline.configs.settings import load_settings
from lifeline.flows.failback import sweep_drill_leftovers
from lifeline.flows.restore import restore_flow
from lifeline.tasks.run import topology
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.measurements import measure_outage, recorded_incident_time, write_positions
from lifeline.tasks.run.record import Journal, Trigger
from lifeline.tasks.steps.approval import ApprovalMode
from lifeline.tasks.steps.approvers import approvers_for
from lifeline.tasks.steps.failover import StepOutcome, fence_site
from lifeline.tasks.steps.pitr import keep_archiving
from lifeline.tasks.steps.prefect_run import RunInProgress, refused
from lifeline.tasks.steps.preflight import approved_past_preflight, assess_readiness
from lifeline.tasks.steps.recorded_run import exclusive_run, flow_result
from lifeline.tasks.steps.runbook import INLINE_STEPS, describe_runbook, run_inline_step, step_title, submit_step
from lifeline.tasks.steps.step import LifelineError, step
from lifeline.tasks.steps.verification import verify_site, wait_until_recovered
from prefect import flow
from prefect.futures import wait
from prefect.logging import get_run_logger


class StepsFailed(LifelineError):
    pass


def default_runbook(plan: Plan, target: str) -> list[StepGroup]:
    groups = []
    promotable = plan.databases_at(target)
    if promotable:
        groups.append(StepGroup(name="promote", steps=[PromoteStep(type="postgres_promote", database=name) for name in promotable]))
    switches: list[RecoveryStep] = [DnsSwitchStep(type="dns_switch")] if plan.dns is not None else []
    telephony = plan.telephony.sites.get(target) if plan.telephony is not None else None
    if telephony is not None:
        switches.append(SipRouteStep(type="sip_route"))
        if telephony.ivr_host is not None:
            switches.append(AnnouncementStep(type="ivr_announcement"))
    if switches:
        groups.append(StepGroup(name="switch", steps=switches))
    if telephony is not None and telephony.agents_required:
        groups.append(StepGroup(name="agents", steps=[AgentsReadyStep(type="agents_ready")]))
    return groups


def describe_failover(plan: Plan) -> str:
    source = topology.normal_primary_site(plan)
    target = topology.other_site(plan, source)
    return describe_runbook(plan, plan.recovery.failover or default_runbook(plan, target), source, target)


@step(retries=0, timeout_seconds=120)
def preflight(plan: Plan, target_site: str):
    return assess_readiness(plan, load_settings(), target_site)


@step(retries=0, timeout_seconds=30)
def probe_site(plan: Plan, site: str):
    """Is the site we leave actually down? Its first failing probe is when the outage was detected."""
    return verify_site(plan, site)


def _restore_subflow(loaded: LoadedPlan, journal: Journal, definition: RestoreStep) -> str:
    return restore_flow(str(loaded.path), definition.dataset, definition.target, replace=definition.replace,
                        trigger=journal.record.trigger, parent_id=journal.record.id)


def run_runbook(
    loaded: LoadedPlan, groups: list[StepGroup], journal: Journal, source: str, target: str, *,
    approval: ApprovalMode, reason: str,
) -> bool:
    """Run the groups in order; False when a person declined an approval step."""
    plan = loaded.plan
    for group in groups:
        for definition in (d for d in group.steps if isinstance(d, INLINE_STEPS)):
            if not run_inline_step(definition, journal, approval_mode=approval, reason=reason,
                                   approval_timeout_seconds=plan.recovery.approval_timeout_seconds,
                                   restore=partial(_restore_subflow, loaded, journal)):
                return False
        submitted = [(step_title(definition, source, target),
                      submit_step(plan, definition, journal, source=source, target=target, group=group.name))
                     for definition in group.steps if not isinstance(definition, INLINE_STEPS)]
        wait([future for _, future in submitted])
        failed = [(name, future) for name, future in submitted if not future.state.is_completed()]
        if failed:
            raise StepsFailed(f"runbook group {group.name!r}: " + "; ".join(
                f"step {name!r} failed: {_failure(future)}" for name, future in failed)
                + f" ({source} is fenced; fix the cause and run the failover again: it resumes where it stopped)")
        if any(isinstance(d, PromoteStep) for d in group.steps):
            journal.milestone("promoted")
        if any(isinstance(d, DnsSwitchStep) for d in group.steps):
            journal.milestone("dns_switched")
        if any(isinstance(d, SipRouteStep) for d in group.steps):
            journal.milestone("calls_routed")
        if any(isinstance(d, AgentsReadyStep) for d in group.steps):
            journal.milestone("agents_ready")
    return True


def _failure(future) -> str:
    """The step's own error message (Prefect's state message wraps it in boilerplate)."""
    try:
        error = future.state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - the result could not be read back: fall back to the state's message
        error = None
    return str(error) if isinstance(error, BaseException) and str(error) else str(future.state.message or "failed")


@flow(name="failover", log_prints=False)
def failover_flow(
    plan_path: str,
    reason: str = "",
    dry_run: bool = False,
    force: bool = False,
    approval: ApprovalMode = "terminal",
    incident_at: datetime | None = None,
    trigger: Trigger = "cli",
    record_id: str | None = None,
) -> str:
    """Fail over from the primary site to the DR site, then verify and measure the outage.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        reason: Why: the incident or ticket; shown in the approval form and kept in the record.
        dry_run: Only describe every step with its resolved command; change nothing.
        force: Go on even when preflight says NOT READY, or when a site that fenced itself still seems to take
            writes (the override is recorded).
        approval: How a person approves: ui (a form on this run's page), terminal, or yes (already approved).
        incident_at: When the incident began; default the monitoring's fault record, else the run's start.
        trigger: Who started the run: schedule, ui or cli.
        record_id: Id for the run record (the CLI sets it); empty for a new one.
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    plan = loaded.plan
    source = topology.normal_primary_site(plan)
    target = topology.other_site(plan, source)
    groups = plan.recovery.failover or default_runbook(plan, target)
    if dry_run:
        description = describe_failover(plan)
        get_run_logger().info("%s", description)
        return description
    sweep = partial(sweep_drill_leftovers, loaded, settings, kept_too=False)
    try:
        with exclusive_run("failover", loaded, settings, sweep=sweep, trigger=trigger, record_id=record_id) as journal:
            fail_over(loaded, journal, source, target, groups, reason=reason, force=force, approval=approval,
                      incident_at=incident_at)
    except RunInProgress as busy:
        return refused(busy)
    return flow_result(journal)


def carry_on_the_incident(journal: Journal) -> None:
    """The incident began with the first failover since the last failback: whom any of its runs told of an
    event is not told of it again."""
    record, ledger = journal.record, Ledger(load_settings().ledger)
    failbacks = ledger.runs(kind="failback", plan=record.plan, status="completed", last=1)
    since = failbacks[0].started_at if failbacks else None
    for run in ledger.runs(kind="failover", plan=record.plan, last=50):
        if run.id != record.id and run.status != "cancelled" and (since is None or run.started_at > since):
            journal.carry_on(run.id)


def fail_over(
    loaded: LoadedPlan, journal: Journal, source: str, target: str, groups: list[StepGroup], *,
    reason: str, force: bool, approval: ApprovalMode, incident_at: datetime | None,
) -> None:
    plan, record = loaded.plan, journal.record
    record.incident_at = incident_at or plan_incident_time(plan) or record.started_at
    journal.milestone("incident", record.incident_at)
    journal.milestone("declared", record.started_at)
    journal.message_fields.update(from_site=source, to_site=target, site=target, reason=reason or "")
    real = record.kind == "failover"  # a drill says what it rehearses, never that an incident is real
    taken_over = topology.has_taken_over(plan, target)
    if taken_over and real:  # the same incident as the failover that did it: its people know already
        carry_on_the_incident(journal)
    if real:
        journal.tell("incident_declared")
    if taken_over:
        journal.record_skipped("fail over", f"{target} already serves: databases promoted and DNS names it")
        fence(plan, journal, source, force)
        recovered = wait_until_recovered(plan, target, journal=journal, step_name=f"verify {target}")
        journal.milestone("recovered", recovered.recovered_at)
        keep_archiving(plan, journal, target)  # the run it takes over may have been killed before this
        return
    seen = probe_site(plan, source, journal=journal, step_name=f"probe {source}")
    if not seen.critical_healthy:
        journal.milestone("detected", seen.at)
    readiness = preflight(plan, target, journal=journal, step_name="preflight")
    decision = approved_past_preflight(
        journal, readiness, f"Fail over {plan.name} from {source} to {target}?", force=force, approval=approval,
        timeout_seconds=plan.recovery.approval_timeout_seconds, reason=reason,
        public_events=("failover_started", "recovered"),
        approvers=approvers_for(plan, Ledger(load_settings().ledger), journal))
    if not decision.approved:
        record.status = "cancelled"
        record.error = f"not approved: {decision.reason or 'no reason given'}; nothing was changed"
        return
    if real:
        journal.tell("failover_started")
    journal.public.post("failover_started")
    before = write_positions(plan, source)
    fenced = fence(plan, journal, source, force)
    record.milestones.setdefault("fenced", fenced.at)
    if not run_runbook(loaded, groups, journal, source, target, approval=approval, reason=reason):
        record.status = "cancelled"
        record.error = "an approval step was declined"
        return
    recovered = wait_until_recovered(plan, target, journal=journal, step_name=f"verify {target}")
    journal.milestone("recovered", recovered.recovered_at)
    keep_archiving(plan, journal, target)
    measure_outage(plan, record, source, target, positions_before=before)
    journal.public.post("recovered", resolved=True)


def fence(plan: Plan, journal: Journal, site: str, force: bool) -> StepOutcome:
    """Self-fencing is waited out from the recorded incident; a forced pass over its missing proof is recorded."""
    fenced = fence_site(plan, site, journal.record.incident_at, force, journal=journal, step_name=f"fence {site}")
    if fenced.detail.get("forced_past"):
        journal.milestone("forced")
    return fenced


def plan_incident_time(plan: Plan) -> datetime | None:
    """The earliest active fault in the plan's incident record (monitoring or the lab writes it)."""
    return recorded_incident_time(plan.incident_record) if plan.incident_record else None
