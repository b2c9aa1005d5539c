"""Two failovers at once, one from the Prefect UI (its deployment, as Quick run starts it) and one from the CLI:
whichever holds the plan first runs, the other refuses at once naming it, and nothing changes twice.
(Two from the CLI: tests/test_failover.py. Twenty intake posts of one alert, one run: tests/test_intake.py.)"""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import ledger, one_line_error, run_cli, wait_for
from tests.lab_fixtures import Lab, WriteMonitor, back_to_main_with_one_primary_at_a_time
from tests.reliability.kill_points import cli_command
from tests.serve_fixtures import TERMINAL, Api, ServedPlan

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]


def test_a_ui_failover_awaiting_approval_refuses_the_cli_one_and_a_running_cli_one_refuses_the_ui_one(
    served_lab: ServedPlan, api: Api, normal_lab: Lab, monitor: WriteMonitor, no_run_left_behind
) -> None:
    lab, plan = normal_lab, str(normal_lab.plan)
    before = {record.id for record in ledger().runs(kind="failover")}

    # The UI's run holds the plan while it waits for a person: the CLI's is refused, naming it.
    ui_run = api.create_run(served_lab.deployment_id("failover"), {"reason": "two at once"})
    api.wait_for_state(ui_run["id"], {"PAUSED"}, 60)
    [waiting] = [record for record in ledger().runs(kind="failover") if record.id not in before]
    refused = run_cli("failover", "--yes", "--plan", plan, "--reason", "from the CLI")
    assert refused.returncode == 2, refused.stderr[-2000:]
    message = one_line_error(refused.stderr)
    assert f"failover run {waiting.id} " in message and "refusing to start a failover" in message
    # ... by its Prefect run's name, which carries the record's id, and its link.
    assert api.flow_run(ui_run["id"])["name"] == f"failover-{waiting.id}"
    assert f"Prefect run 'failover-{waiting.id}' " in message and f"/runs/flow-run/{ui_run['id']}" in message
    assert lab.status().normal  # neither changed anything
    api.post(f"/flow_runs/{ui_run['id']}/resume",
             {"run_input": {"operator": "Zhou Lin", "reason": "the CLI one goes", "decision": "Reject"}})
    api.wait_for_state(ui_run["id"], {"CANCELLED"}, 60)

    # The CLI's run holds the plan while it runs: the UI's is refused, naming it, and the CLI's completes.
    cli = subprocess.Popen(cli_command("failover", "--yes", "--plan", plan, "--reason", "from the CLI"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    running = wait_for(lambda: [r for r in ledger().runs(kind="failover") if r.id not in before | {waiting.id}], 60,
                       "the CLI's failover record", poll=0.05)[0]
    second = api.create_run(served_lab.deployment_id("failover"), {"reason": "two at once"})
    ended = wait_for_end(api, second["id"])
    assert ended["state_type"] == "CANCELLED", ended["state"]  # refused, not failed
    refusal = ended["state"]["message"] or ""
    assert f"failover run {running.id} " in refusal and f"Prefect run 'failover-{running.id}'" in refusal, refusal
    assert "\n" not in refusal
    assert not [line for line in api.logs(second["id"]) if "Traceback" in line], api.logs(second["id"])
    _, stderr = cli.communicate(timeout=300)
    assert cli.returncode == 0, stderr[-3000:]
    assert ledger().run(running.id).status == "completed"
    assert lab.status().dns.points_at == "dr"
    back_to_main_with_one_primary_at_a_time(lab, monitor)


def wait_for_end(api: Api, run_id: str) -> dict:
    def ended() -> dict | None:
        run = api.flow_run(run_id)
        return run if run["state_type"] in TERMINAL else None

    return wait_for(ended, 90, "the UI's run to end")
