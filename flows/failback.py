"""Fail back to the primary site, losing nothing.

The old primary becomes a standby of the DR site again (its old data moved aside and the rows
only it had reported), catches up, and then the call centre switches back the same way it
left, with the same measurements.
"""

from __future__ import annotations

from pathlib import Path

from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.settings import load_settings
from lifeline.flows.failover import already_serving, normal_primary_site, other_site
from lifeline.flows.runs import recorded_run
from lifeline.tasks import replication
from lifeline.tasks.approval import ApprovalMode, ask
from lifeline.tasks.failover import rebuild_old_primary_as_standby, switch_database_back, switch_dns
from lifeline.tasks.locks import plan_lock
from lifeline.tasks.measurements import measure_outage, write_positions
from lifeline.tasks.record import Journal, Trigger
from lifeline.tasks.verification import wait_until_recovered
from prefect import flow
from prefect.states import Cancelled


@flow(name="failback", log_prints=False)
def failback_flow(
    plan_path: str,
    reason: str = "",
    approval: ApprovalMode = "terminal",
    trigger: Trigger = "cli",
    record_id: str | None = None,
) -> str:
    """Make the primary site a standby again, let it catch up, switch back, verify and measure.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        reason: Why now; shown in the approval form and kept in the record.
        approval: How a person approves: ui (a form on this run's page), terminal, or yes (already approved).
        trigger: Who started the run: schedule, ui or cli.
        record_id: Id for the run record (the CLI sets it); empty for a new one.
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    with plan_lock(settings.locks_dir, loaded.plan.name, "failback"), recorded_run(
        "failback", loaded, settings, trigger=trigger, record_id=record_id
    ) as journal:
        fail_back(loaded, journal, reason=reason, approval=approval)
    if journal.record.status == "cancelled":
        return Cancelled(message=journal.record.error or "not approved; nothing was changed")
    return journal.record.id


def fail_back(loaded: LoadedPlan, journal: Journal, *, reason: str, approval: ApprovalMode) -> None:
    plan, record = loaded.plan, journal.record
    home = normal_primary_site(plan)
    away = other_site(plan, home)
    journal.milestone("declared", record.started_at)
    if already_serving(plan, home) and all(
        replication.streams_from(database, home, away)
        for database in plan.databases.values()
        if home in database.instances and away in database.instances
    ):
        journal.record_skipped("fail back", f"{home} already serves and {away} streams from it")
        recovered = wait_until_recovered(plan, home, journal=journal, step_name=f"verify {home}")
        journal.milestone("recovered", recovered.recovered_at)
        return
    decision = ask(f"Fail back {plan.name} from {away} to {home}?", f"Switch back to `{home}`.", approval,
                   plan.recovery.approval_timeout_seconds, reason)
    with journal.step("approval") as entry:
        entry.detail.update(decision.detail)
    if not decision.approved:
        record.status, record.error = "cancelled", "not approved; nothing was changed"
        return
    journal.milestone("approved", decision.answered_at)
    databases = [name for name, database in plan.databases.items() if home in database.instances and away in database.instances]
    rebuilds = [
        rebuild_old_primary_as_standby.submit(plan, name, home, away, journal=journal, step_name=f"rebuild {name} at {home} as standby")
        for name in databases
    ]
    for future in rebuilds:
        future.result()
    # The planned outage starts when the DR site stops taking writes.
    before = write_positions(plan, away)
    record.incident_at = journal.milestone("incident")
    switches = [
        switch_database_back.submit(plan, name, home, away, journal=journal, step_name=f"switch {name} back to {home}")
        for name in databases
    ]
    for future in switches:
        future.result()
    journal.milestone("fenced")
    journal.milestone("promoted")
    if plan.dns is not None:
        switch_dns(plan, home, journal=journal, step_name=f"switch dns to {home}")
        journal.milestone("dns_switched")
    recovered = wait_until_recovered(plan, home, journal=journal, step_name=f"verify {home}")
    journal.milestone("recovered", recovered.recovered_at)
    measure_outage(plan, record, away, home, positions_before=before)
