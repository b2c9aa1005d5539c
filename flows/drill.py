"""A timed recovery drill: rehearse a scenario of the emergency plan, score it, and clean up.

Normal state → sentinel → fault → detection → recovery → sentinel check → score → back to the
normal state. The clean-up runs even when the drill fails or is cancelled; a drill whose process
was killed leaves a marker, and the next Lifeline run of the plan sweeps what it left.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lifeline.configs.drills import Scenario
from lifeline.configs.loading import LoadedPlan, load_plan
from lifeline.configs.settings import Settings, load_settings
from lifeline.flows.failback import fail_back
from lifeline.flows.failover import default_runbook, fail_over, normal_primary_site, other_site
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.measurements import recorded_incident_time
from lifeline.tasks.run.record import Journal, Trigger, utc_now
from lifeline.tasks.steps import drills
from lifeline.tasks.steps.recorded_run import exclusive_run, recorded_run
from lifeline.tasks.steps.restore import restore_dataset
from lifeline.tasks.steps.verification import verify_site
from prefect import flow
from prefect.logging import get_run_logger

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
    with exclusive_run("drill", loaded, settings, trigger=trigger, record_id=record_id, scenario=scenario) as journal:
        rehearse(loaded, settings, journal, scenario, chosen, keep=keep)
        return journal.record.id


def most_overdue_scenario(loaded: LoadedPlan, settings: Settings) -> str:
    """The scenario whose last drill is oldest relative to its cadence (never drilled comes first)."""
    runnable = {name: s for name, s in loaded.plan.scenarios.items() if not s.needs_netns and s.fault.command}
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
    home = normal_primary_site(plan)
    away = other_site(plan, home)
    with journal.step("check normal state") as entry:
        problems = drills.normal_state_problems(plan, home, away)
        entry.detail["problems"] = problems
        if problems:
            raise drills.NotNormal("not in the normal state, refusing to drill: " + "; ".join(problems))
    targets = scenario.targets or plan.targets  # known from the start: a drill that fails did not meet them
    record.rto_target_seconds, record.rpo_target_seconds = targets.rto_minutes * 60, targets.rpo_minutes * 60
    marker = drills.DrillMarker(record_id=record.id, plan=plan.name, plan_path=str(loaded.path), scenario=name)
    marker.save(settings.drills_dir)
    failure: BaseException | None = None
    try:
        sentinel = drills.write_sentinel(plan, scenario, drills.new_token(record.id), journal=journal, step_name="write sentinel")
        marker.sentinel_token, marker.sentinel_file = sentinel.token, sentinel.file
        marker.save(settings.drills_dir)
        inject_fault(plan, journal, scenario)
        detect(plan, journal, scenario, scenario.fault.probe_site or home, sentinel)
        recover(loaded, settings, journal, scenario, marker, home, away)
        check_sentinel(plan, journal, scenario, sentinel)
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
                                   "the next Lifeline run of this plan returns it to normal")
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
        if fault.command is None:
            raise DrillFailed(f"this scenario's fault needs a person: {fault.instructions or 'no instructions'}; "
                              "run it from a deployment, where the drill can wait for them")
        at = utc_now()
        entry.detail["result"] = drills.run_fault_command(fault.command, "inject fault")
    recorded = recorded_incident_time(plan.incident_record) if plan.incident_record else None
    if recorded is not None and recorded >= at:  # the fault's own clock, not the time we asked for it
        at = recorded
    journal.record.incident_at = journal.milestone("incident", at)


def detect(plan, journal: Journal, scenario: Scenario, site: str, sentinel: drills.Sentinel) -> None:
    """Probe until the scenario's data is gone or a critical service of `site` fails; how long that
    took is the time to detect. A fault with no `probe_site` that destroys no data the drill can look
    at (a compromised host) is detected when it is reported: at once."""
    with journal.step(f"detect at {site}") as entry:
        deadline = time.monotonic() + DETECTION_TIMEOUT_SECONDS
        while True:
            missing = drills.missing_data(plan, scenario, sentinel)
            if missing:
                journal.milestone("detected")
                entry.detail["missing"] = missing
                return
            if scenario.fault.probe_site is None:
                journal.milestone("detected")
                entry.detail["reported"] = "no probe sees this fault: detected when it was reported"
                return
            checked = verify_site(plan, site)
            if not checked.critical_healthy:
                journal.milestone("detected", checked.at)
                entry.detail["unhealthy"] = checked.detail["unhealthy"]
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
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
    elif recovery.restore is not None:
        dataset = plan.datasets[recovery.restore.dataset]
        target = recovery.restore.target or str(dataset.paths[0])
        restore_dataset(loaded, settings, journal, recovery.restore.dataset, target, replace=True,
                        incident_at=journal.record.incident_at)
    elif recovery.leak is not None:
        from lifeline.tasks.steps.leak_recovery import recover_from_leak

        recover_from_leak(loaded, settings, journal, recovery.leak)
    else:
        raise DrillFailed("the scenario names no recovery (failover, restore or leak)")


def check_sentinel(plan, journal: Journal, scenario: Scenario, sentinel: drills.Sentinel) -> None:
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
            if present != expected.file_survives:
                findings.append(f"sentinel file {'lost' if expected.file_survives else 'unexpectedly present'}")
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
        entry.detail.update(clean_up(loaded, settings, scenario, marker))
        problems = drills.wait_until_normal(plan, normal_primary_site(plan), other_site(plan, normal_primary_site(plan)))
        entry.detail["problems"] = problems
        if problems:
            raise DrillFailed("not back in the normal state: " + "; ".join(problems))


def clean_up(loaded: LoadedPlan, settings: Settings, scenario: Scenario, marker: drills.DrillMarker) -> dict:
    plan, done = loaded.plan, {}
    if scenario.fault.undo and not marker.fault_undone:
        done["undo"] = drills.run_fault_command(scenario.fault.undo, "undo fault")
        marker.fault_undone = True
        marker.save(settings.drills_dir)
    home = normal_primary_site(plan)
    if marker.failed_over and not drills.site_serves(plan, other_site(plan, home)):
        done["failback"] = "not needed: the failover stopped before anything at the other site took over"
    elif marker.failed_over:
        with recorded_run("failback", loaded, settings, trigger="cli", scenario=marker.scenario) as failback:
            fail_back(loaded, failback, reason=f"end of drill {marker.scenario}", approval="yes")
            done["failback_run"] = failback.record.id
        if scenario.fault.undo:
            drills.run_fault_command(scenario.fault.undo, "undo fault")  # faults the failback's restarts recorded
    if marker.sentinel_token:
        done["sentinels_removed"] = drills.remove_sentinels(plan, scenario, marker.sentinel_token, marker.sentinel_file)
    marker.remove(settings.drills_dir)
    return done


def sweep_dead_drills(loaded: LoadedPlan, settings: Settings) -> list[str]:
    """Clean up after drills of this plan whose process is gone (killed, machine restarted)."""
    swept = []
    for marker in drills.markers(settings.drills_dir, loaded.plan.name):
        if marker.process_alive or marker.scenario not in loaded.plan.scenarios:
            continue
        get_run_logger().warning("sweeping the leftovers of drill %s (%s), %s", marker.record_id, marker.scenario,
                                 "kept for inspection" if marker.kept else "whose process is gone")
        marker.pid, marker.kept = os.getpid(), False  # ours now: a nested run must not sweep it a second time
        marker.save(settings.drills_dir)
        clean_up(loaded, settings, loaded.plan.scenarios[marker.scenario], marker)
        ledger = Ledger(settings.ledger)
        killed = ledger.run(marker.record_id)
        if killed is not None and killed.status == "running":
            killed.status, killed.ended_at = "failed", utc_now()
            killed.error = "the drill's process was killed; a later run swept its leftovers"
            ledger.save_run(killed)
        swept.append(marker.record_id)
    return swept
