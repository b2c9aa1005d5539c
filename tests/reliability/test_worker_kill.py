"""A worker SIGKILLed with its flow run in the middle of a backup (`make soak`: Prefect needs three heartbeats' time,
90 s, to call the run Crashed). The server marks the run Crashed by the automation `lifeline deploy` made, so the
deployment runs again; the worker started again runs the next backup to the end, and that run closes the killed
run's record."""

from __future__ import annotations

import shutil

import pytest
from lifeline.configs.loading import load_plan
from lifeline.flows.crashed_runs import AUTOMATION_NAME, HEARTBEAT_SECONDS
from lifeline.infra.lab import control_plane as lab_control_plane
from lifeline.infra.lab import down, open_lab, up
from lifeline.infra.lab.processes import is_alive
from lifeline.tasks.run.ledger import Ledger

from tests.helpers import wait_for
from tests.lab_fixtures import new_lab_home
from tests.serve_fixtures import Api

pytestmark = [pytest.mark.lab, pytest.mark.soak]


def test_a_worker_killed_under_its_backup_has_the_run_crashed_and_the_next_backup_closes_its_record() -> None:
    home = new_lab_home("lifeline-lab-plane-")
    quiet = {"log": lambda message: None}
    try:
        plan_path = up(home, free_ports=True, control_plane=True, **quiet)
        context = open_lab(home)
        api = Api(lab_control_plane.status(context).api_url)
        assert [automation["name"] for automation in api.post("/automations/filter")] == [AUTOMATION_NAME]

        def online() -> bool:
            return any(worker["status"] == "ONLINE" for worker in api.post("/work_pools/lifeline-main/workers/filter"))

        wait_for(online, 90, "main's worker online")
        plan = load_plan(plan_path).plan
        deployment_id = api.deployment("backup", f"{plan.name}-backup-main")["id"]
        ledger = Ledger(f"sqlite:///{home / 'ledger.sqlite'}")
        first = api.create_run(deployment_id)
        [killed] = wait_for(lambda: [record for record in ledger.runs(kind="backup", status="running")
                                     if len(record.steps) >= 2], 240, "the backup two steps in")
        stopped = lab_control_plane.stop_worker(context, "main", crash=True)  # SIGKILL: the worker and its flow run
        assert killed.pid in stopped and not is_alive(killed.pid)
        crashed = api.wait_for_state(first["id"], {"CRASHED"}, 10 * HEARTBEAT_SECONDS)
        assert "heartbeats" in crashed["state"]["message"]
        lab_control_plane.start_worker(context, "main")
        second = api.create_run(deployment_id)
        api.wait_for_state(second["id"], {"COMPLETED"}, 300)
        closed = ledger.run(killed.id)
        assert closed is not None and closed.status == "failed" and closed.error.startswith("interrupted"), closed
        [completed] = [record for record in ledger.runs(kind="backup") if record.status == "completed"]
        assert len(completed.snapshots) == len(plan.datasets)
    finally:
        down(home, purge=True, **quiet)
        shutil.rmtree(home, ignore_errors=True)  # the runs' ledger, cache and locks: `lab down` keeps those
