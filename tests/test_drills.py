"""Recovery drills on the lab (issue 6), checked the way an operator would check them.

Each built-in scenario (but data-leak, tested in test_leak.py) runs end to end and leaves the lab
normal; a drill whose recovery is broken fails naming its step and still cleans up; a drill killed
mid-way is left alone by a verify run (which warns) and swept by the next failback; a drill refuses
while another run holds the plan, and a verify beside a failover awaiting its approval changes
nothing; `--keep` leaves the recovered state, through verify runs, until the operator fails back.

The lab is the session's (other modules share it): every test starts from the normal state and
leaves it normal, repaired by `normal_lab` when a test breaks midway.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from lifeline.configs.loading import load_plan
from lifeline.configs.settings import load_settings
from lifeline.flows.drill import drill_flow
from lifeline.flows.failback import failback_flow
from lifeline.infra.lab import heal, load_faults
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.locks import plan_lock
from lifeline.tasks.run.record import RunRecord
from lifeline.tasks.steps import drills

from tests.helpers import ledger, run_cli, step_named, tree
from tests.lab_fixtures import FreshBackups, Lab, call_log, in_recovery

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]

FAILOVER_SCENARIOS = ["system-crash", "site-loss", "network-outage"]


def plan_name(lab: Lab) -> str:
    return load_plan(lab.plan).plan.name


def markers(lab: Lab) -> list[drills.DrillMarker]:
    return drills.markers(load_settings().drills_dir, plan_name(lab))


def sentinel_rows(lab: Lab, site: str = "main") -> int:
    return lab.query(site, "SELECT count(*) FROM drill_sentinels")[0][0]


def assert_back_to_normal(lab: Lab) -> None:
    """What the drill promised: the lab's normal state, no sentinel row, no marker, no fault."""
    status = lab.wait_normal(20)
    assert status.drill_leftovers == [] and status.faults == {}
    assert sentinel_rows(lab) == 0
    assert markers(lab) == []


# --- the lab, kept normal and backed up ------------------------------------------------------------

def repair(lab: Lab, backups: FreshBackups) -> None:
    """After a test that broke midway: let Lifeline sweep what its drills left (the product's own
    clean-up, done by a failback), then the failover tests' way (heal, fail back), then start the lab over."""
    ssh.close_all()
    for marker in markers(lab):  # ours, or a killed process's: hand them to the sweep
        marker.kept = True
        marker.save(load_settings().drills_dir)
    try:
        failback_flow(str(lab.plan), approval="yes")
    except Exception as error:  # noqa: BLE001 - the sweep ran before the failback judged anything
        print(f"repair: failback after the sweep: {error}", file=sys.stderr)
    if lab.status().normal:
        return
    try:
        heal(lab.home, log=lambda message: None)
        if in_recovery(lab, "main") is not False or in_recovery(lab, "dr") is not True:
            failback_flow(str(lab.plan), approval="yes")
        heal(lab.home, log=lambda message: None)
        lab.query("main", "DELETE FROM drill_sentinels")
        lab.wait_normal(30)
    except Exception:  # noqa: BLE001 - beyond a failback: start over
        lab.rebuild()
        backups.forget()


@pytest.fixture
def normal_lab(lab: Lab, fresh_backups: FreshBackups) -> Iterator[Lab]:
    """This module's own `normal_lab` (in place of tests/lab_fixtures.py's): a drill may also leave
    markers and sentinel rows, so the lab is checked for them before and repaired by `repair` after."""
    fresh_backups.ensure()
    lab.wait_normal(30)
    assert markers(lab) == [], "a drill of this plan left a marker before the test began"
    try:
        yield lab
    finally:
        ssh.close_all()
        if not lab.status().normal or markers(lab):
            print(f"TEARDOWN not normal: {lab.status().not_normal_because}, markers {markers(lab)}", file=sys.stderr)
            repair(lab, fresh_backups)


# --- every built-in scenario -----------------------------------------------------------------------

@pytest.mark.parametrize("scenario", FAILOVER_SCENARIOS)
def test_failover_scenario_runs_end_to_end_and_the_lab_is_normal_afterwards(normal_lab: Lab, scenario: str) -> None:
    lab = normal_lab
    plan = load_plan(lab.plan).plan
    if scenario == "network-outage" and not lab.context.netns:
        assert plan.scenarios[scenario].fault.command[-1] == "main-unreachable"

    record = ledger().run(drill_flow(str(lab.plan), scenario))

    assert (record.kind, record.scenario, record.status, record.error) == ("drill", scenario, "completed", None)
    milestones = record.milestones
    assert {"incident", "detected", "recovered"} <= set(milestones)
    assert milestones["incident"] <= milestones["detected"] <= milestones["recovered"]
    assert record.rto_seconds > 0
    assert record.rto_seconds == pytest.approx((record.recovered_at - record.incident_at).total_seconds(), abs=0.001)
    assert record.rpo_seconds is not None and record.rpo_seconds <= record.rpo_target_seconds
    assert record.met_targets is True
    # The row written just before the fault was at dr when dr served: replication kept it (the RPO).
    sentinel = step_named(record, "verify sentinel")
    assert (sentinel.status, sentinel.detail["row_survived"]) == ("completed", True)
    assert step_named(record, "promote crm at dr").status == "completed"
    # The carrier's calls went to dr, and the affected customers are the callers whose SIP calls were lost.
    assert step_named(record, "route calls to dr").status == "completed"
    [(callers,)] = call_log(lab, "SELECT count(DISTINCT caller_id) FROM calls_log WHERE outcome IN "
                                 "('failed', 'abandoned') AND placed_at BETWEEN %s AND %s",
                            record.incident_at, record.recovered_at)
    assert record.impact_source == "call_log" and record.affected_customers == callers > 0
    # Back to normal by Lifeline's own failback, recorded as a run of its own.
    back = step_named(record, "return to normal")
    assert back.status == "completed" and back.detail["problems"] == []
    failback = ledger().run(back.detail["failback_run"])
    assert (failback.kind, failback.status, failback.scenario) == ("failback", "completed", scenario)
    assert failback.parent_id == record.id  # the drill's own run: `lifeline report` reports the drill, not it
    assert back.detail["sentinels_removed"] == {"rows": 1}
    assert_back_to_normal(lab)
    assert in_recovery(lab, "main") is False and in_recovery(lab, "dr") is True


def test_data_corruption_restores_the_last_good_snapshot_and_the_lab_is_normal_afterwards(normal_lab: Lab) -> None:
    lab = normal_lab
    recordings = Path(load_plan(lab.plan).plan.datasets["recordings"].paths[0])
    kept = {name: content for name, content in tree(recordings).items() if not name.endswith(".tmp")}  # excluded

    record = ledger().run(drill_flow(str(lab.plan), "data-corruption"))

    assert (record.status, record.error) == ("completed", None)
    assert {"incident", "detected", "recovered"} <= set(record.milestones)
    assert record.milestones["incident"] <= record.milestones["detected"] <= record.milestones["recovered"]
    assert "recordings" in " ".join(step_named(record, "detect at main").detail["missing"])
    assert record.rto_seconds > 0 and record.met_targets is True
    # RPO: from the restored snapshot (the newest) to the incident.
    snapshot_time = datetime.fromisoformat(step_named(record, "choose snapshot").detail["snapshot_time"])
    assert record.rpo_seconds == pytest.approx((record.incident_at - snapshot_time).total_seconds(), abs=0.01)
    assert 0 < record.rpo_seconds <= record.rpo_target_seconds
    # The sentinel file was written after the snapshot: a restore cannot bring it back.
    sentinel = step_named(record, "verify sentinel").detail
    assert sentinel["file_survived"] is False and not Path(sentinel["file"]).exists()
    # The recordings are back, every file with its content.
    assert tree(recordings) == kept
    assert_back_to_normal(lab)


# --- a broken recovery -----------------------------------------------------------------------------

def test_a_drill_whose_standby_is_missing_fails_names_the_step_and_still_cleans_up(
    normal_lab: Lab, tmp_path: Path
) -> None:
    lab = normal_lab
    document = yaml.safe_load(lab.plan.read_text())
    missing = lab.lab_dir / "dr" / "no-standby-here"
    document["databases"]["crm"]["instances"]["dr"]["data_dir"] = str(missing)
    # One attempt: a missing data directory does not come back on a retry (each waits 15 s for promotion).
    document["recovery"] = {**(document.get("recovery") or {}),
                            "defaults": {"retries": 0, "retry_delay_seconds": 0, "timeout_seconds": 60}}
    broken = tmp_path / "plan-standby-missing.yaml"
    broken.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))  # paths are absolute
    drills_before = len(ledger().runs(kind="drill", plan=plan_name(lab), last=1000))

    with pytest.raises(Exception, match="promote crm at dr"):
        drill_flow(str(broken), "system-crash")

    [record] = ledger().runs(kind="drill", plan=plan_name(lab), last=1)
    assert len(ledger().runs(kind="drill", plan=plan_name(lab), last=1000)) == drills_before + 1
    assert record.status == "failed" and record.met_targets is False
    assert record.error.startswith("step 'promote crm at dr' failed:") and str(missing) in record.error
    assert step_named(record, "promote crm at dr").status == "failed"
    assert "recovered" not in record.milestones
    # ...and it still cleaned up: the fault undone, nothing to fail back (dr never took over), the row gone.
    back = step_named(record, "return to normal")
    assert back.status == "completed" and back.detail["problems"] == []
    assert "failback_run" not in back.detail and back.detail["sentinels_removed"] == {"rows": 1}
    assert_back_to_normal(lab)
    assert load_faults(lab.context.paths) == {}


# --- a drill killed mid-way ------------------------------------------------------------------------

def test_a_drill_killed_mid_way_leaves_nothing_behind_after_the_next_run(normal_lab: Lab) -> None:
    lab = normal_lab
    plan = str(lab.plan)
    drill = subprocess.Popen(
        [sys.executable, "-m", "lifeline.flows.cli", "drill", "--scenario", "system-crash", "--plan", plan, "--json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 120
        while in_recovery(lab, "dr") is not False:  # killed right after dr's promotion: the worst moment
            assert drill.poll() is None, f"the drill ended before dr was promoted: {drill.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "dr was not promoted within 120 s"
            time.sleep(0.05)
    finally:
        drill.send_signal(signal.SIGKILL)
        drill.wait()
        drill.stderr.close()
    [marker] = markers(lab)
    assert marker.failed_over and not marker.process_alive
    killed = ledger().run(marker.record_id)
    assert killed.status == "running"  # what the killed process left
    assert "main-db-down" in load_faults(lab.context.paths)

    # A verify run (the deployment's, every 5 minutes) holds no lock: it only says a sweep is due.
    verify = run_cli("verify", "--plan", plan, "--site", "main", "--json")

    assert f"drill {marker.record_id} (system-crash) was killed" in verify.stderr
    assert "the next failover, failback or drill of this plan sweeps it" in verify.stderr
    assert "sweeping" not in verify.stderr
    assert markers(lab) == [marker]  # the sweep is still due; the record says the process is gone
    closed = ledger().run(marker.record_id)
    assert closed.status == "failed" and closed.error.startswith("interrupted: its process ended before the run did")
    assert in_recovery(lab, "dr") is False and "main-db-down" in load_faults(lab.context.paths)

    swept = run_cli("failback", "--plan", plan, "--yes", "--json")  # the next exclusive run of the plan

    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout)["status"] == "completed"
    assert "sweeping the leftovers of drill " + marker.record_id in swept.stderr
    killed = ledger().run(marker.record_id)
    assert killed.status == "failed" and "interrupted" in killed.error and killed.ended_at is not None
    [failback] = [r for r in ledger().runs(kind="failback", plan=plan_name(lab), last=3)
                  if r.started_at > killed.started_at and r.scenario is not None]
    assert (failback.status, failback.scenario) == ("completed", "system-crash")
    assert_back_to_normal(lab)


# --- one run at a time -----------------------------------------------------------------------------

def test_a_drill_refuses_while_another_run_holds_the_plan_and_changes_nothing(normal_lab: Lab) -> None:
    lab = normal_lab
    settings = load_settings()
    before = len(ledger().runs(plan=plan_name(lab), last=1000))

    with plan_lock(settings.locks_dir, plan_name(lab), "failover", "0123456789ab"):
        refused = run_cli("drill", "--scenario", "system-crash", "--plan", str(lab.plan), "--json")

    assert refused.returncode == 2, refused.stderr
    assert refused.stdout == ""
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith("lifeline: ") and f"failover run 0123456789ab (pid {os.getpid()}," in message
    assert "refusing to start a drill" in message and "Traceback" not in refused.stderr
    assert len(ledger().runs(plan=plan_name(lab), last=1000)) == before
    assert_back_to_normal(lab)
    assert lab.status().databases == {"main": "primary", "dr": "standby", "calllog": "primary"}


def wait_for_text(log: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"the process ended before writing {text!r}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s: {log.read_text()[-3000:]}"
        time.sleep(0.2)


def read_to_end(terminal: int, process: subprocess.Popen, timeout: float) -> None:
    """Read what the process writes on its terminal (so that it never blocks writing) until it ends."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        assert time.monotonic() < deadline, f"the process did not end within {timeout} s"
        if select.select([terminal], [], [], 0.2)[0]:
            try:
                os.read(terminal, 4096)
            except OSError:  # it closed its end of the terminal
                process.wait(timeout=max(deadline - time.monotonic(), 1))


def plant_killed_drill(lab: Lab, **state: bool) -> drills.DrillMarker:
    """What a drill killed before it failed over leaves (or, with `state`, later): its marker (naming a dead
    process) and its record."""
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    record = RunRecord(kind="drill", plan=plan_name(lab), plan_sha256=load_plan(lab.plan).sha256, scenario="system-crash")
    ledger().save_run(record)
    marker = drills.DrillMarker(record_id=record.id, plan=plan_name(lab), plan_path=str(lab.plan),
                                scenario="system-crash", pid=gone.pid, fault_undone=True, **state)
    marker.save(load_settings().drills_dir)
    return marker


def test_a_drill_killed_after_its_failback_switched_back_is_finished_by_the_next_run(normal_lab: Lab) -> None:
    """Killed while its failback verified main: dr no longer serves, but main was not yet archiving its timeline.
    The kill matrix found the next drill NOT READY ("archiving is not configured at main"): the sweep must
    finish that failback, not call it "not needed"."""
    lab = normal_lab
    marker = plant_killed_drill(lab, failed_over=True, failing_back=True)

    swept = run_cli("failback", "--plan", str(lab.plan), "--yes", "--json")

    assert swept.returncode == 0, swept.stderr
    assert "sweeping the leftovers of drill " + marker.record_id in swept.stderr
    [finished] = [r for r in ledger().runs(kind="failback", plan=plan_name(lab), last=3)
                  if r.parent_id == marker.record_id]
    assert finished.status == "completed", finished.error
    assert step_named(finished, "fail back").status == "skipped"  # main already serves: nothing to switch
    assert step_named(finished, "archive crm at main").status == "completed"
    assert markers(lab) == []
    assert_back_to_normal(lab)


def test_a_verify_beside_a_failover_awaiting_approval_changes_nothing(normal_lab: Lab, tmp_path: Path) -> None:
    lab, plan = normal_lab, str(normal_lab.plan)
    terminal, operator_side = pty.openpty()  # the failover asks on a terminal, as for a person
    log = tmp_path / "failover.log"  # its logs and its question
    with log.open("wb") as stderr:
        failover = subprocess.Popen(
            [sys.executable, "-m", "lifeline.flows.cli", "failover", "--plan", plan, "--json"],
            stdin=operator_side, stdout=operator_side, stderr=stderr, env=os.environ.copy(),
        )
    os.close(operator_side)
    try:
        wait_for_text(log, "[y/N]", failover, 120)  # holding the plan lock, it awaits its approval
        killed = plant_killed_drill(lab)  # left after the failover began: the failover did not sweep it
        status = lab.status()
        before = (markers(lab), status.dns.points_at, status.databases,
                  [r.model_dump() for r in ledger().runs(plan=plan_name(lab), last=1000)])

        verify = run_cli("verify", "--plan", plan, "--json")

        assert verify.returncode == 0, verify.stderr
        checked = json.loads(verify.stdout)
        assert checked["status"] == "completed"
        assert f"drill {killed.record_id} (system-crash) was killed" in verify.stderr
        assert "the next failover, failback or drill of this plan sweeps it" in verify.stderr
        status = lab.status()
        after = (markers(lab), status.dns.points_at, status.databases,
                 [r.model_dump() for r in ledger().runs(plan=plan_name(lab), last=1000) if r.id != checked["id"]])
        assert after == before

        os.write(terminal, b"n\n")  # the person declines
        read_to_end(terminal, failover, 60)
        assert failover.returncode != 0
    finally:
        if failover.poll() is None:
            failover.kill()
            failover.wait()
        os.close(terminal)
    [declined] = ledger().runs(kind="failover", plan=plan_name(lab), last=1)
    assert declined.status == "cancelled" and "nothing was changed" in declined.error
    assert lab.status().databases == {"main": "primary", "dr": "standby", "calllog": "primary"}

    # The next exclusive run sweeps what the killed drill left, under the plan lock.
    swept = run_cli("failback", "--plan", plan, "--yes", "--json")

    assert swept.returncode == 0, swept.stderr
    assert "sweeping the leftovers of drill " + killed.record_id in swept.stderr
    assert ledger().run(killed.record_id).status == "failed"
    assert_back_to_normal(lab)


# --- --keep ----------------------------------------------------------------------------------------

def test_keep_leaves_dr_serving_until_the_operator_fails_back(normal_lab: Lab) -> None:
    lab = normal_lab
    record = ledger().run(drill_flow(str(lab.plan), "system-crash", keep=True))

    assert (record.status, record.met_targets) == ("completed", True)
    assert step_named(record, "return to normal").status == "skipped"
    # The recovered state, for inspection: dr serves, with the sentinel row; main stays down.
    status = lab.status()
    assert not status.normal
    assert status.databases["dr"] == "primary" and status.databases["main"] == "down"
    assert status.dns.points_at == "dr" and status.services["dr"].healthy
    assert sentinel_rows(lab, "dr") == 1
    [marker] = markers(lab)
    assert marker.kept and marker.record_id == record.id
    kept = (status.databases, status.dns.points_at, sentinel_rows(lab, "dr"), markers(lab))

    # Scheduled verify runs look at dr (DNS names it) and leave the kept state alone, saying how to end it.
    for _ in range(2):
        verify = run_cli("verify", "--plan", str(lab.plan), "--json")

        assert verify.returncode == 0, verify.stderr
        assert json.loads(verify.stdout)["status"] == "completed"
        assert f"drill {record.id} (system-crash) was kept for inspection" in verify.stderr
        assert "lifeline failback --yes" in verify.stderr and "sweeping" not in verify.stderr
        status = lab.status()
        assert (status.databases, status.dns.points_at, sentinel_rows(lab, "dr"), markers(lab)) == kept

    # The operator is done looking: `lifeline failback` returns everything to normal, fault and sentinel included.
    failback = run_cli("failback", "--plan", str(lab.plan), "--yes", "--json")

    assert failback.returncode == 0, failback.stderr
    assert json.loads(failback.stdout)["status"] == "completed"
    assert_back_to_normal(lab)
    assert ledger().run(record.id).status == "completed"  # a kept drill is not a killed one
