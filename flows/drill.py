"""A timed recovery drill: rehearse a scenario of the emergency plan, score it, and clean up.

Normal state → sentinel → fault → detection → recovery → sentinel check → score → back to the
normal state. The clean-up runs even when the drill fails or is cancelled; a drill whose process
was killed leaves a marker, and the next failover, failback or drill of the plan sweeps what it left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from lifeline.configs.drills import Scenario
from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.settings import Settings, load_settings
from lifeline.flows.failback import clean_up_drill, recover_destroyed_data, sweep_drill_leftovers
from lifeline.flows.failover import default_runbook, fail_over
from lifeline.tasks.adapters.deadline import wait_until
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run import topology
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.measurements import recorded_incident_time
from lifeline.tasks.run.record import Journal, Trigger, utc_now
from lifeline.tasks.steps import communication_drills, drills
from lifeline.tasks.steps.corruption_drill import corrupted_rows
from lifeline.tasks.steps.prefect_run import RunInProgress, refused
from lifeline.tasks.steps.recorded_run import exclusive_run
from lifeline.tasks.steps.verification import verify_site
from prefect import flow

DETECTION_TIMEOUT_SECONDS = 30


class DrillFailed(LifelineError):
    pass


class UnknownScenario(LifelineError):
    user_error = True


def scenario_of(loaded: LoadedPlan, name: str) -> Scenario:
    if name not in loaded.plan.scenarios:
        known = ", ".join(loaded.plan.scenarios) or "none: add `scenarios` to the plan"
        raise UnknownScenario(f"no scenario named {name!r} (known: {known})")
    return loaded.plan.scenarios[name]


@flow(name="drill", log_prints=False)
def drill_flow(
    plan_path: str, scenario: str, keep: bool = False, trigger: Trigger = "cli", record_id: str | None = None
) -> str:
    """Rehearse a scenario: inject its fault, recover, verify, score against the targets, clean up.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        scenario: The scenario to rehearse, as named under the plan's `scenarios`; empty for the most overdue one.
        keep: Leave the recovered state for inspection instead of returning to the normal state.
        trigger: Who started the run: schedule, ui or cli.
        record_id: Id for the run record (the CLI sets it); empty for a new one.
    """
    loaded = load_plan(Path(plan_path))
    settings = load_settings()
    scenario = scenario or most_overdue_scenario(loaded, settings)
    chosen = scenario_of(loaded, scenario)
    sweep = partial(sweep_drill_leftovers, loaded, settings, kept_too=False, settle=True)
    try:
        with exclusive_run("drill", loaded, settings, sweep=sweep, trigger=trigger, record_id=record_id,
                           scenario=scenario) as journal:
            rehearse(loaded, settings, journal, scenario, chosen, keep=keep)
            return journal.record.id
    except RunInProgress as busy:
        return refused(busy)


def most_overdue_scenario(loaded: LoadedPlan, settings: Settings) -> str:
    """The scenario whose last drill is oldest relative to its cadence (never drilled comes first)."""
    runnable = {name: s for name, s in loaded.plan.scenarios.items()
                if not s.needs_netns and (s.fault.command or s.recovery.needs_no_fault_command)}
    if not runnable:
        raise UnknownScenario("the plan has no scenario a scheduled drill can run")
    last: dict[str, float] = {}
    for record in Ledger(settings.ledger).runs(kind="drill", plan=loaded.plan.name, last=500):
        if record.scenario in runnable and record.status == "completed":
            last.setdefault(record.scenario, record.started_at.timestamp())
    now = utc_now().timestamp()

    def overdue(name: str) -> float:
        cadence = (runnable[name].cadence_days or 365) * 86400
        return float("inf") if name not in last else (now - last[name]) / cadence

    return max(runnable, key=overdue)


def rehearse(loaded: LoadedPlan, settings: Settings, journal: Journal, name: str, scenario: Scenario, *, keep: bool) -> None:
    plan, record = loaded.plan, journal.record
    home = topology.normal_primary_site(plan)
    away = topology.other_site(plan, home)
    journal.message_fields.update(scenario=name, site=away)
    journal.tell("drill_started")
    with journal.step("check normal state") as entry:
        problems = [f"drill {kept.record_id} ({kept.scenario}) was kept for inspection: `lifeline failback --yes` "
                    "returns to normal" for kept in drills.markers(settings.drills_dir, plan.name) if kept.kept]
        problems += drills.normal_state_problems(plan, home, away)
        entry.detail["problems"] = problems
        if problems:
            raise drills.NotNormal("not in the normal state, refusing to drill: " + "; ".join(problems))
    targets = scenario.targets or plan.targets  # known from the start: a drill that fails did not meet them
    record.rto_target_seconds, record.rpo_target_seconds = targets.rto_minutes * 60, targets.rpo_minutes * 60
    marker = drills.DrillMarker(record_id=record.id, plan=plan.name, plan_path=str(loaded.path), scenario=name)
    marker.save(settings.drills_dir)
    failure: BaseException | None = None
    try:
        # Recorded before the sentinel exists: a drill killed while writing it leaves nothing a sweep cannot find.
        token = drills.new_token(record.id)
        marker.sentinel_token, marker.sentinel_file = token, drills.sentinel_file_path(plan, scenario, token)
        marker.save(settings.drills_dir)
        sentinel = None
        if scenario.sentinel.database or scenario.sentinel.dataset:
            sentinel = drills.write_sentinel(plan, scenario, token, journal=journal, step_name="write sentinel")
        else:
            journal.record_skipped("write sentinel", "the scenario marks no data (no sentinel database or dataset)")
        if scenario.recovery.point_in_time is not None and sentinel is not None:
            time.sleep(scenario.recovery.point_in_time.rewind_seconds + 1)  # the sentinel before the restore's target
        marker.fault_injected_at = utc_now()  # before the fault: a sweep repairs from before it if we are killed
        marker.save(settings.drills_dir)
        inject_fault(plan, journal, scenario)
        detect(plan, journal, scenario, scenario.fault.probe_site or home, sentinel)
        recover(loaded, settings, journal, scenario, marker, home, away)
        if sentinel is not None:
            check_sentinel(plan, journal, scenario, sentinel, in_restored_snapshot=partial(
                drills.restored_snapshot_holds, plan, settings, scenario, record.snapshots))
        score(plan, journal, scenario)
    except Exception as error:
        failure = DrillFailed(failure_message(journal, error))
        raise failure from error
    except BaseException as error:  # cancelled: the clean-up below still runs
        failure = error
        raise
    finally:
        if keep:
            journal.record_skipped("return to normal", "--keep: the recovered state is left for inspection; "
                                   "`lifeline failback --yes` returns it to normal")
            marker.kept = True
            marker.save(settings.drills_dir)
        else:
            try:
                return_to_normal(loaded, settings, journal, scenario, marker)
            except Exception as cleanup:
                if not isinstance(failure, DrillFailed):
                    raise
                # the drill's own failure stays first in the error: it is what the drill found
                raise DrillFailed(f"{failure}; then the return to normal failed: {cleanup}") from failure


def failure_message(journal: Journal, error: BaseException) -> str:
    """What failed, naming the step: the last failed step's own error (a runbook reports its failed
    group in its own words), else the error and the step it came after."""
    failed = [step for step in journal.record.steps if step.status == "failed"]
    if failed:
        return f"step {failed[-1].name!r} failed: {failed[-1].detail.get('error') or error}"
    message = str(error) or type(error).__name__
    if journal.record.steps:
        return f"after step {journal.record.steps[-1].name!r}: {message}"
    return message


def inject_fault(plan, journal: Journal, scenario: Scenario) -> None:
    fault = scenario.fault
    with journal.step("inject fault") as entry:
        if fault.command is None and scenario.recovery.needs_no_fault_command:
            entry.detail["result"] = fault.instructions or "the rehearsal plays the fault itself"
            journal.record.incident_at = journal.milestone("incident")
            return
        if fault.command is None:
            raise DrillFailed(f"this scenario's fault needs a person: {fault.instructions or 'no instructions'}; "
                              "run it from a deployment, where the drill can wait for them")
        at = utc_now()
        entry.detail["result"] = drills.run_fault_command(fault.command, "inject fault")
    recorded = recorded_incident_time(plan.incident_record) if plan.incident_record else None
    if recorded is not None and recorded >= at:  # the fault's own clock, not the time we asked for it
        at = recorded
    journal.record.incident_at = journal.milestone("incident", at)


def detect(plan, journal: Journal, scenario: Scenario, site: str, sentinel: drills.Sentinel | None) -> None:
    """Probe until the scenario's data is gone or a critical service of `site` fails; how long that
    took is the time to detect. A fault with no `probe_site` that destroys no data the drill can look
    at (a compromised host) is detected when it is reported: at once."""
    with journal.step(f"detect at {site}") as entry:
        def detected() -> bool:
            if scenario.recovery.point_in_time is not None:
                found = corrupted_rows(plan, scenario.recovery.point_in_time, site)
                if found:
                    journal.milestone("detected")
                    entry.detail["corrupted_rows"] = found
                return bool(found)
            if missing := drills.missing_data(plan, scenario, sentinel):
                journal.milestone("detected")
                entry.detail["missing"] = missing
                return True
            if scenario.fault.probe_site is None:
                journal.milestone("detected")
                entry.detail["reported"] = "no probe sees this fault: detected when it was reported"
                return True
            checked = verify_site(plan, site)
            if not checked.critical_healthy:
                journal.milestone("detected", checked.at)
                entry.detail["unhealthy"] = checked.detail["unhealthy"]
            return not checked.critical_healthy

        if not wait_until(detected, timeout=DETECTION_TIMEOUT_SECONDS, interval=0.2):
            entry.status = "warning"
            entry.detail["unhealthy"] = f"nothing at {site} failed within {DETECTION_TIMEOUT_SECONDS} s"

def recover(loaded, settings, journal: Journal, scenario: Scenario, marker, home: str, away: str) -> None:
    recovery, plan = scenario.recovery, loaded.plan
    if recovery.failover:
        marker.failed_over = True
        marker.save(settings.drills_dir)
        fail_over(loaded, journal, home, away, plan.recovery.failover or default_runbook(plan, away),
                  reason=f"drill {journal.record.scenario}", force=False, approval="yes",
                  incident_at=journal.record.incident_at)
    elif recovery.restore is not None or recovery.point_in_time is not None:
        recover_destroyed_data(loaded, settings, journal, scenario, marker, home, journal.record.incident_at,
                               reason=f"drill {journal.record.scenario}")
    elif recovery.leak is not None:
        from lifeline.tasks.steps.leak_recovery import recover_from_leak

        recover_from_leak(loaded, settings, journal, recovery.leak)
    elif recovery.notify is not None:
        communication_drills.rehearse_fallback(journal, recovery.notify, scenario.targets or plan.targets)
    elif recovery.approval is not None:
        communication_drills.rehearse_deputy_approval(plan, Ledger(settings.ledger), journal, recovery.approval,
                                                      scenario.targets or plan.targets)
    elif recovery.alert is not None:
        marker.warning_sent_at = utc_now().replace(microsecond=0)  # before the post: a sweep cancels it
        marker.save(settings.drills_dir)
        try:
            communication_drills.rehearse_warning(plan, Ledger(settings.ledger), journal, recovery.alert,
                                                  scenario.targets or plan.targets, sent=marker.warning_sent_at)
        finally:
            if communication_drills.warning_cancelled(journal):
                marker.warning_sent_at = None
                marker.save(settings.drills_dir)
    else:
        raise DrillFailed("the scenario names no recovery (failover, restore, point_in_time, leak, notify, approval "
                          "or alert)")


def check_sentinel(plan, journal: Journal, scenario: Scenario, sentinel: drills.Sentinel,
                   in_restored_snapshot: Callable[[str], bool | None]) -> None:
    """`in_restored_snapshot(path)`: does the snapshot the drill restored hold it (None: nothing restored)."""
    expected = scenario.sentinel
    with journal.step("verify sentinel") as entry:
        entry.detail.update(sentinel.detail)
        findings = []
        if expected.database:
            present = drills.sentinel_row_present(plan, scenario, sentinel.token)
            entry.detail["row_survived"] = present
            if present != expected.row_survives:
                findings.append(f"sentinel row {'lost' if expected.row_survives else 'unexpectedly present'}")
        if sentinel.file:
            present = Path(sentinel.file).exists()
            entry.detail["file_survived"] = present
            survives = expected.file_survives
            if not survives and in_restored_snapshot(sentinel.file):
                # a scheduled backup read the folder after the sentinel was written (it may have begun before)
                survives = True
                entry.detail["file_expected"] = "the restored snapshot holds it"
            if present != survives:
                findings.append(f"sentinel file {'lost' if survives else 'unexpectedly present'}")
        if findings:
            raise DrillFailed("; ".join(findings))


def score(plan, journal: Journal, scenario: Scenario) -> None:
    record = journal.record
    targets = scenario.targets or plan.targets
    record.rto_target_seconds = targets.rto_minutes * 60
    record.rpo_target_seconds = targets.rpo_minutes * 60
    record.judge_targets()


def return_to_normal(loaded, settings, journal: Journal, scenario: Scenario, marker) -> None:
    """Undo the fault, fail back if the drill failed over, remove the sentinels: every time."""
    plan = loaded.plan
    with journal.step("return to normal") as entry:
        entry.detail.update(clean_up_drill(loaded, settings, scenario, marker))
        home = topology.normal_primary_site(plan)
        problems = drills.wait_until_normal(plan, home, topology.other_site(plan, home))
        entry.detail["problems"] = problems
        if problems:
            raise DrillFailed("not back in the normal state: " + "; ".join(problems))
