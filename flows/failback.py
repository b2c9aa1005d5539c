"""Fail back to the primary site, losing nothing.

The old primary becomes a standby of the DR site again (its old data moved aside and the rows
only it had reported), catches up, and then the call centre switches back the same way it
left, with the same measurements.

What a drill left behind is swept here too: a drill that failed over returns to normal by failing back.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from lifeline.configs.drills import Scenario
from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.plan import Plan
from lifeline.configs.settings import Settings, load_settings
from lifeline.flows.pitr import repair_corruption
from lifeline.tasks.adapters import replication
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import replicated_database
from lifeline.tasks.run.holds import Holds
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.measurements import measure_outage, write_positions
from lifeline.tasks.run.record import Journal, Trigger, utc_now
from lifeline.tasks.steps import drills
from lifeline.tasks.steps.approval import ApprovalMode
from lifeline.tasks.steps.approvers import approvers_for
from lifeline.tasks.steps.communication_drills import cancel_warning
from lifeline.tasks.steps.corruption_drill import corrupted_rows, drop_repair_schema
from lifeline.tasks.steps.failover import (
    rebuild_old_primary_as_standby,
    resumes_switch_back,
    switch_database_back,
    switch_dns,
)
from lifeline.tasks.steps.pitr import keep_archiving
from lifeline.tasks.steps.prefect_run import RunInProgress, refused
from lifeline.tasks.steps.preflight import approved_past_preflight, assess_failback_readiness
from lifeline.tasks.steps.recorded_run import exclusive_run, flow_result, recorded_run
from lifeline.tasks.steps.restore import restore_dataset
from lifeline.tasks.steps.step import step
from lifeline.tasks.steps.telephony import route_calls, take_down_announcement
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
    # an explicit failback is how a drill kept for inspection returns to normal
    sweep = partial(sweep_drill_leftovers, loaded, settings, kept_too=True)
    try:
        with exclusive_run("failback", loaded, settings, sweep=sweep, trigger=trigger, record_id=record_id) as journal:
            fail_back(loaded, journal, reason=reason, approval=approval, force=force)
    except RunInProgress as busy:
        return refused(busy)
    return flow_result(journal)


def describe_failback(plan: Plan) -> str:
    """What a failback would do, step by step with resolved values; changes nothing."""
    home = topology.normal_primary_site(plan)
    away = topology.other_site(plan, home)
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
    if plan.telephony is not None and home in plan.telephony.sites:
        steps.append(f"route calls to {home}: SBC dispatcher.set_state a {plan.telephony.sites[home].destination}, "
                     f"the others i; a test call must be answered at {home}")
        if plan.telephony.sites.get(away) and plan.telephony.sites[away].ivr_host:
            steps.append(f"take down {away}'s emergency announcement (kept as .withdrawn)")
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
    home = topology.normal_primary_site(plan)
    away = topology.other_site(plan, home)
    journal.milestone("declared", record.started_at)
    journal.message_fields.update(from_site=away, to_site=home, site=home, reason=reason or "")
    databases = plan.databases_at(home, away)
    # a failback killed after switching a database back resumes with the rest; one killed between stopping the
    # DR site's database and promoting home's resumes that switch (nothing to rebuild)
    switched_back = {name for name in databases if replication.streams_from(replicated_database(plan.databases[name]), home, away)}
    if len(switched_back) == len(databases) and topology.has_taken_over(plan, home):
        journal.record_skipped("fail back", f"{home} already serves and {away} streams from it")
        recovered = wait_until_recovered(plan, home, journal=journal, step_name=f"verify {home}")
        journal.milestone("recovered", recovered.recovered_at)
        keep_archiving(plan, journal, home)  # the run it takes over may have been killed before this
        return
    readiness = failback_preflight(plan, home, away, journal=journal, step_name="preflight")
    decision = approved_past_preflight(
        journal, readiness, f"Fail back {plan.name} from {away} to {home}?", force=force, approval=approval,
        timeout_seconds=plan.recovery.approval_timeout_seconds, reason=reason, public_events=("failback_done",),
        approvers=approvers_for(plan, Ledger(load_settings().ledger), journal))
    if not decision.approved:
        record.status, record.error = "cancelled", "not approved; nothing was changed"
        return
    cut_short = {name for name in databases if name not in switched_back and resumes_switch_back(plan, name, home, away)}
    rebuilds = [
        rebuild_old_primary_as_standby.submit(plan, name, home, away, journal=journal, step_name=f"rebuild {name} at {home} as standby")
        for name in databases if name not in switched_back | cut_short
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
    route_calls_home(plan, journal, home, away)
    recovered = wait_until_recovered(plan, home, journal=journal, step_name=f"verify {home}")
    journal.milestone("recovered", recovered.recovered_at)
    keep_archiving(plan, journal, home)
    measure_outage(plan, record, away, home, positions_before=before)
    journal.public.post("failback_done", resolved=True)


def route_calls_home(plan: Plan, journal: Journal, home: str, away: str) -> None:
    """The carrier's calls go home again and the DR site's IVR stops playing the emergency announcement."""
    if plan.telephony is None or home not in plan.telephony.sites:
        return
    route_calls(plan, home, journal=journal, step_name=f"route calls to {home}")
    journal.milestone("calls_routed")
    away_site = plan.telephony.sites.get(away)
    if away_site is not None and away_site.ivr_host is not None:
        take_down_announcement(plan, away, journal=journal, step_name=f"take down announcement at {away}")


# --- what a drill left ----------------------------------------------------------------------------

def clean_up_drill(loaded: LoadedPlan, settings: Settings, scenario: Scenario, marker: drills.DrillMarker) -> dict:
    """Undo the drill's fault, fail back if it failed over, remove its sentinels and its marker."""
    plan, done = loaded.plan, {}
    if scenario.fault.undo and not marker.fault_undone:
        done["undo"] = drills.run_fault_command(scenario.fault.undo, "undo fault")
        marker.fault_undone = True
        marker.save(settings.drills_dir)
    home = topology.normal_primary_site(plan)
    if marker.failed_over and not marker.failing_back and \
            not topology.has_begun_serving(plan, topology.other_site(plan, home)):
        done["failback"] = "not needed: the failover stopped before anything at the other site took over"
    elif marker.failed_over:
        marker.failing_back = True  # a failback cut short after switching back still keeps archiving, verifies
        marker.save(settings.drills_dir)
        with recorded_run("failback", loaded, settings, trigger="cli", scenario=marker.scenario,
                          parent_id=marker.record_id) as failback:
            fail_back(loaded, failback, reason=f"end of drill {marker.scenario}", approval="yes")
            done["failback_run"] = failback.record.id
        if scenario.fault.undo:
            drills.run_fault_command(scenario.fault.undo, "undo fault")  # faults the failback's restarts recorded
    if data_left_destroyed(plan, scenario, marker, home):
        done["recovery_run"] = recover_what_the_drill_destroyed(loaded, settings, scenario, marker, home)
    if marker.repair_schema and scenario.recovery.point_in_time is not None:
        done["repair_schema_dropped"] = drop_repair_schema(plan, scenario.recovery.point_in_time, marker.repair_schema)
    if marker.warning_sent_at is not None and scenario.recovery.alert is not None:
        done["warning"] = cancel_left_warning(loaded.plan, Ledger(settings.ledger), scenario, marker)
    if released := Holds(Ledger(settings.ledger)).release_placed_by(marker.record_id):  # a data-leak drill's
        done["holds_released"] = [hold.name for hold in released]
    if marker.sentinel_token:
        done["sentinels_removed"] = drills.remove_sentinels(plan, scenario, marker.sentinel_token, marker.sentinel_file)
    marker.remove(settings.drills_dir)
    return done


def cancel_left_warning(plan: Plan, ledger: Ledger, scenario: Scenario, marker: drills.DrillMarker) -> dict:
    """A warning drill killed before it cancelled its exercise: cancel it now, or say why not (an intake that
    does not answer must not stop the failover or failback that sweeps)."""
    try:
        cancelled = cancel_warning(plan, ledger, scenario.recovery.alert, marker.record_id, marker.warning_sent_at)
    except (LifelineError, OSError) as error:  # OSError: intake's token file
        get_run_logger().warning("drill %s: its exercise warning is still open: %s", marker.record_id, error)
        return {"cancelled": False, "error": str(error)}
    return cancelled


def data_left_destroyed(plan: Plan, scenario: Scenario, marker: drills.DrillMarker, home: str) -> bool:
    """The drill's fault ran and its recovery did not succeed, and the data the fault destroys is still gone."""
    recovery = scenario.recovery
    if marker.fault_injected_at is None or marker.repaired:
        return False
    if recovery.point_in_time is not None:
        return corrupted_rows(plan, recovery.point_in_time, home) > 0
    return recovery.restore is not None and bool(drills.missing_data(plan, scenario, None))


def recover_what_the_drill_destroyed(loaded: LoadedPlan, settings: Settings, scenario: Scenario,
                                     marker: drills.DrillMarker, home: str) -> str:
    """The drill's fault ran, its recovery did not (killed, or it failed): the lab does not restore data, so the
    drill's own recovery runs now as a run of its own, from before the fault."""
    assert marker.fault_injected_at is not None
    with recorded_run("restore", loaded, settings, trigger="cli", scenario=marker.scenario,
                      parent_id=marker.record_id) as recovering:
        recovering.record.incident_at = marker.fault_injected_at
        recover_destroyed_data(loaded, settings, recovering, scenario, marker, home, marker.fault_injected_at,
                               reason=f"end of drill {marker.scenario}: its fault ran, its recovery did not")
    return recovering.record.id


def recover_destroyed_data(loaded: LoadedPlan, settings: Settings, journal: Journal, scenario: Scenario,
                           marker: drills.DrillMarker, home: str, incident_at: datetime, reason: str) -> None:
    """A drill's recovery of what its fault destroys, for the drill and for its clean-up: the dataset restored in
    place, or the tables repaired from just before the bad write; the marker then says it was done."""
    recovery = scenario.recovery
    if recovery.point_in_time is not None:
        marker.repair_schema = marker.repair_schema or f"lifeline_drill_{marker.record_id}"
        marker.save(settings.drills_dir)
        repair_corruption(loaded, settings, journal, recovery.point_in_time, home, marker.repair_schema,
                          incident_at - timedelta(seconds=recovery.point_in_time.rewind_seconds), reason=reason)
    elif recovery.restore is not None:
        dataset = recovery.restore.dataset
        restore_dataset(loaded, settings, journal, dataset,
                        recovery.restore.target or str(loaded.plan.datasets[dataset].paths[0]), replace=True,
                        incident_at=incident_at)
    marker.repaired = True
    marker.save(settings.drills_dir)


def sweep_drill_leftovers(loaded: LoadedPlan, settings: Settings, *, kept_too: bool, settle: bool = False) -> list[str]:
    """Clean up after drills of this plan whose process is gone (killed, machine restarted) and, when
    `kept_too`, after drills kept for inspection. Only a failover, failback or drill calls this, holding
    the plan lock, before it opens its own record. `settle` (a drill, which needs the normal state next):
    after a clean-up, wait as a drill's own return to normal does, for a healed primary's standby to stream."""
    swept = []
    for marker in drills.markers(settings.drills_dir, loaded.plan.name):
        if marker.process_alive or (marker.kept and not kept_too) or marker.scenario not in loaded.plan.scenarios:
            continue
        get_run_logger().warning("sweeping the leftovers of drill %s (%s), %s", marker.record_id, marker.scenario,
                                 "kept for inspection" if marker.kept else "whose process is gone")
        marker.pid, marker.kept = os.getpid(), False  # ours now: a nested run must not sweep it a second time
        marker.save(settings.drills_dir)
        clean_up_drill(loaded, settings, loaded.plan.scenarios[marker.scenario], marker)
        ledger = Ledger(settings.ledger)
        killed = ledger.run(marker.record_id)
        if killed is not None and killed.status == "running":
            killed.status, killed.ended_at = "failed", utc_now()
            killed.error = "interrupted: the drill's process was killed; a later run swept its leftovers"
            ledger.save_run(killed)
        swept.append(marker.record_id)
    if swept and settle:
        home = topology.normal_primary_site(loaded.plan)
        drills.wait_until_normal(loaded.plan, home, topology.other_site(loaded.plan, home))
    return swept
