"""Fail back to the primary site, losing nothing.

The old primary becomes a standby of the DR site again (its old data moved aside and the rows
only it had reported), catches up, and then the call centre switches back the same way it
left, with the same measurements.
"""

from __future__ import annotations

from pathlib import Path

from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.plan import Plan
from lifeline.configs.settings import load_settings
from lifeline.flows.failover import already_serving, go_or_refuse, normal_primary_site, other_site
from lifeline.tasks.adapters import replication
from lifeline.tasks.run.adapter_inputs import replicated_database
from lifeline.tasks.run.measurements import measure_outage, write_positions
from lifeline.tasks.run.record import Journal, Trigger
from lifeline.tasks.steps.approval import ApprovalMode, ask_recorded
from lifeline.tasks.steps.failover import rebuild_old_primary_as_standby, switch_database_back, switch_dns
from lifeline.tasks.steps.preflight import assess_failback_readiness
from lifeline.tasks.steps.recorded_run import exclusive_run, flow_result
from lifeline.tasks.steps.step import step
from lifeline.tasks.steps.verification import wait_until_recovered
from prefect import flow
from prefect.logging import get_run_logger


@flow(name="failback", log_prints=False)
def failback_flow(
    plan_path: str,
    reason: str = "",
    dry_run: bool = False,
    force: bool = False,
    approval: ApprovalMode = "terminal",
    trigger: Trigger = "cli",
    record_id: str | None = None,
) -> str:
    """Make the primary site a standby again, let it catch up, switch back, verify and measure.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        reason: Why now; shown in the approval form and kept in the record.
        dry_run: Only describe every step with its resolved command; change nothing.
        force: Go on even when the failback preflight says NOT READY (the override is recorded).
        approval: How a person approves: ui (a form on this run's page), terminal, or yes (already approved).
        trigger: Who started the run: schedule, ui or cli.
        record_id: Id for the run record (the CLI sets it); empty for a new one.
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    if dry_run:
        description = describe_failback(loaded.plan)
        get_run_logger().info("%s", description)
        return description
    with exclusive_run("failback", loaded, settings, trigger=trigger, record_id=record_id) as journal:
        fail_back(loaded, journal, reason=reason, approval=approval, force=force)
    return flow_result(journal)


def describe_failback(plan: Plan) -> str:
    """What a failback would do, step by step with resolved values; changes nothing."""
    home = normal_primary_site(plan)
    away = other_site(plan, home)
    pairs = [(name, plan.databases[name].instances[home], plan.databases[name].instances[away])
             for name in plan.databases_at(home, away)]
    steps = [
        f"preflight: {home}'s hosts over SSH, a primary at {away} for every database, DNS zone, AWS credentials",
        "approval: a person says yes",
        "rebuild (concurrently):" + "".join(
            f"\n       - rebuild {name} at {home} as standby: ssh {old.host}: mv {old.data_dir} {old.data_dir}.split-<time>"
            f" (rows only it had reported beside it); {old.bin_dir}/pg_basebackup -D {old.data_dir} -R -X stream -C"
            f" -S <slot> from {new.host}" for name, old, new in pairs),
        "switch back (concurrently):" + "".join(
            f"\n       - switch {name} back to {home}: ssh {new.host}: {new.bin_dir}/pg_ctl stop -m fast -D {new.data_dir};"
            f" wait until {home} replayed it; ssh {old.host}: {old.bin_dir}/pg_ctl promote -w -D {old.data_dir};"
            f" {away} follows {home} as a standby" for name, old, new in pairs),
    ]
    if plan.dns is not None:
        steps.append(f"switch dns to {home}: Route 53 UPSERT {plan.dns.record} A {plan.dns.values[home]} "
                     f"TTL {plan.dns.ttl}, until INSYNC")
    verification = plan.recovery.verification
    critical = ", ".join(n for n, s in plan.services.items() if s.site == home and s.critical) or "no critical service"
    steps.append(f"verify {home}: {verification.rounds} healthy rounds {verification.interval_seconds:g} s apart of {critical}")
    return "\n".join([f"Failback of {plan.name}: {away} → {home} (dry run: nothing is changed)",
                      *(f"  {number}. {text}" for number, text in enumerate(steps, start=1))])


@step(retries=0, timeout_seconds=120)
def failback_preflight(plan: Plan, home: str, away: str):
    return assess_failback_readiness(plan, home, away)


def fail_back(loaded: LoadedPlan, journal: Journal, *, reason: str, approval: ApprovalMode, force: bool = False) -> None:
    plan, record = loaded.plan, journal.record
    home = normal_primary_site(plan)
    away = other_site(plan, home)
    journal.milestone("declared", record.started_at)
    databases = plan.databases_at(home, away)
    # a failback killed after switching a database back resumes with the rest
    switched_back = {name for name in databases if replication.streams_from(replicated_database(plan.databases[name]), home, away)}
    if len(switched_back) == len(databases) and already_serving(plan, home):
        journal.record_skipped("fail back", f"{home} already serves and {away} streams from it")
        recovered = wait_until_recovered(plan, home, journal=journal, step_name=f"verify {home}")
        journal.milestone("recovered", recovered.recovered_at)
        return
    readiness = failback_preflight(plan, home, away, journal=journal, step_name="preflight")
    go_or_refuse(readiness, force, journal)
    decision = ask_recorded(journal, "approval", f"Fail back {plan.name} from {away} to {home}?",
                            readiness.markdown(), approval, plan.recovery.approval_timeout_seconds, reason)
    if not decision.approved:
        record.status, record.error = "cancelled", "not approved; nothing was changed"
        return
    rebuilds = [
        rebuild_old_primary_as_standby.submit(plan, name, home, away, journal=journal, step_name=f"rebuild {name} at {home} as standby")
        for name in databases if name not in switched_back
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
