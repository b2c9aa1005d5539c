"""Faults in the middle of a run end in a successful retry or in one clear line, never in silent loss nor in a retry
storm (issue 16): dr's sshd going away during a step, dr's replay lagging beyond its RPO target, the Prefect server
restarted under a run, and a chat provider answering HTTP 500.

The lab's tests leave the lab normal (a failover fails back); the Prefect test starts a server of its own, so the
session's server, shared by every test of the worker, is never restarted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from lifeline.configs.loading import load_plan
from lifeline.flows.failover import default_runbook, failover_flow
from lifeline.infra.lab import components
from lifeline.infra.lab.aws import sent_sms
from lifeline.tasks.run.ledger import Deliveries

from tests.channel_fixtures import Webhook
from tests.helpers import (
    files_plan,
    ledger,
    make_recordings,
    one_line_error,
    run_cli,
    step_named,
    wait_for,
    write_password,
    write_plan,
)
from tests.lab_fixtures import Lab, WriteMonitor, back_to_main_with_one_primary_at_a_time, in_recovery
from tests.servers import free_port, wait_until_healthy

pytestmark = pytest.mark.usefixtures("prefect_server")

CHAT_ATTEMPTS = 2  # the lab plan's chat channel: attempts 2, backoff 0.2 s


def plan_copy(lab: Lab, directory: Path, change: Callable[[dict], None]) -> Path:
    document = yaml.safe_load(lab.plan.read_text())
    change(document)
    return write_plan(directory, document)


def cli(*arguments: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


@pytest.fixture
def marker() -> Iterator[Path]:
    """A folder the lab's login user (not root) can write markers into."""
    folder = Path(tempfile.mkdtemp(prefix="lifeline-lab-faults-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def failing_provider() -> Iterator[Webhook]:
    provider = Webhook(answer_status=500)
    yield provider
    provider.server.shutdown()


# --- 1. dr's sshd stopped in the middle of a step ----------------------------------------------------

def runbook_with_a_step_at_dr(lab: Lab, marker: Path, retries: int) -> Callable[[dict], None]:
    """The default runbook, after a first group whose step works at dr over SSH for 3 s (it leaves a marker as
    it starts, so the test knows when to stop dr's sshd under it)."""
    default = [group.model_dump(mode="json", by_alias=True, exclude_none=True)
               for group in default_runbook(load_plan(lab.plan).plan, "dr")]

    def change(document: dict) -> None:
        document.setdefault("recovery", {})["failover"] = [
            {"name": "prepare", "steps": [{"type": "ssh", "name": "prepare dr", "host": "dr",
                                           "command": ["sh", "-c", f"touch {marker}/$$ && sleep 3"],
                                           "retries": retries, "retry_delay_seconds": 1, "timeout_seconds": 30}]},
            *default]
    return change


def stop_sshd_when_the_step_starts(lab: Lab, marker: Path, down_for: float | None) -> threading.Thread:
    def act() -> None:
        wait_for(lambda: any(marker.iterdir()), 120, "the step at dr to start", poll=0.02)
        components.stop(lab.context, "sshd-dr")
        if down_for is not None:
            time.sleep(down_for)
            components.start(lab.context, "sshd-dr")

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


@pytest.mark.lab
def test_sshd_at_dr_stopped_during_a_step_is_retried_and_the_failover_completes_once_it_is_back(
    normal_lab: Lab, monitor: WriteMonitor, failing_provider: Webhook, marker: Path, tmp_path: Path
) -> None:
    lab = normal_lab
    with_step_at_dr = runbook_with_a_step_at_dr(lab, marker, retries=8)

    def and_a_chat_provider_answering_500(document: dict) -> None:  # the on-call engineer's first channel
        with_step_at_dr(document)
        document["channels"]["chat"]["url"] = failing_provider.apprise_url

    plan = str(plan_copy(lab, tmp_path, and_a_chat_provider_answering_500))
    bounce = stop_sshd_when_the_step_starts(lab, marker, down_for=2.5)
    try:
        record = ledger().run(failover_flow(plan_path=plan, approval="yes", reason="sshd bounce"))
    finally:
        bounce.join(30)
        components.start(lab.context, "sshd-dr")
    assert record.status == "completed", record.error
    step = step_named(record, "prepare dr")
    # the session was cut (attempt 1), then refused while sshd was down, then it ran whole once sshd was back
    assert step.status == "completed" and 3 <= step.attempts <= 9, step
    assert len(list(marker.iterdir())) >= 2  # the command began again on the retry that succeeded
    assert lab.status().dns.points_at == "dr" and in_recovery(lab, "dr") is False
    # Telling people failed on chat (HTTP 500, twice per message), not the failover: each message that chat could
    # not deliver went out once on the audience's next channel.
    told = Deliveries(ledger()).of_run(record.id)
    on_chat = {d.message_id for d in told if d.channel == "chat"}
    assert on_chat and all(d.status == "failed" and "HTTP 500" in d.answer for d in told if d.channel == "chat")
    for message_id in on_chat:
        chain = [d for d in told if d.message_id == message_id]
        assert [d.attempt for d in chain if d.channel == "chat"] == list(range(1, CHAT_ATTEMPTS + 1))
        assert [d.status for d in chain].count("delivered") == 1 and chain[-1].fallback, chain
    assert len(failing_provider.received) == CHAT_ATTEMPTS * len(on_chat)
    back_to_main_with_one_primary_at_a_time(lab, monitor)


@pytest.mark.lab
def test_sshd_at_dr_that_stays_down_ends_the_failover_in_one_line_naming_the_host(
    normal_lab: Lab, marker: Path, tmp_path: Path
) -> None:
    lab = normal_lab
    plan = str(plan_copy(lab, tmp_path, runbook_with_a_step_at_dr(lab, marker, retries=2)))
    dr = load_plan(lab.plan).plan.hosts["dr"]
    down = stop_sshd_when_the_step_starts(lab, marker, down_for=None)
    started = time.monotonic()
    try:
        failover = cli("failover", "--yes", "--plan", plan, "--json")
        out, err = failover.communicate(timeout=180)
    finally:
        down.join(30)
        components.start(lab.context, "sshd-dr")
    assert failover.returncode == 1, err
    message = one_line_error(err)
    assert "'prepare dr' failed" in message and f"host dr {dr.address}:{dr.port}" in message, message
    assert "main is fenced" in message and "run the failover again" in message
    record = ledger().run(json.loads(out)["id"])
    assert (record.status, record.ended_at is not None) == ("failed", True)
    assert f"host dr {dr.address}:{dr.port}" in record.error
    step = step_named(record, "prepare dr")
    assert (step.status, step.attempts) == ("failed", 3)  # retries: 2, no more
    assert not any(s.name.startswith(("promote", "switch")) for s in record.steps)
    assert time.monotonic() - started < 120
    assert in_recovery(lab, "dr") is True and lab.status().dns.points_at == "main"
    lab.restore_normal()


# --- 2. dr replaying beyond its RPO target -----------------------------------------------------------

@pytest.mark.lab
@pytest.mark.soak  # 50 s on the lab worker, the suite's critical path: `make soak` runs it
def test_a_standby_replaying_beyond_its_rpo_target_is_not_ready_refused_and_a_forced_failover_records_it(
    normal_lab: Lab, monitor: WriteMonitor, tmp_path: Path
) -> None:
    lab = normal_lab

    def three_second_rpo(document: dict) -> None:
        document["databases"]["crm"]["rpo_minutes"] = 0.05

    plan = str(plan_copy(lab, tmp_path, three_second_rpo))
    lab.query("dr", "SELECT pg_wal_replay_pause()")
    try:
        time.sleep(4.5)  # main takes the monitor's writes every 50 ms; dr receives them and replays none
        preflight = run_cli("preflight", "--plan", plan)
        assert preflight.returncode == 1 and "NOT READY" in preflight.stdout, preflight.stdout + preflight.stderr
        [reason] = [line for line in preflight.stdout.splitlines() if line.strip().startswith("- database crm")]
        assert "standby at dr" in reason and "streaming from main" in reason, reason
        assert "(RPO target 3 s): beyond its RPO target" in reason, reason
        lag = float(reason.split(" s (RPO target")[0].rsplit(" ", 1)[1])
        assert lag > 3, reason

        refused = run_cli("failover", "--yes", "--plan", plan, "--json")
        assert refused.returncode == 1, refused.stderr
        message = one_line_error(refused.stderr)
        assert "NOT READY" in message and "database crm: standby at dr" in message and "--force" in message
        assert "beyond its RPO target" in message
        record = ledger().run(json.loads(refused.stdout)["id"])
        assert (record.status, [step.name for step in record.steps]) == ("failed", ["probe main", "preflight"])
        assert in_recovery(lab, "dr") is True and lab.status().dns.points_at == "main"

        forced = ledger().run(failover_flow(plan_path=plan, approval="yes", force=True, reason="lagging standby"))
    finally:
        if in_recovery(lab, "dr"):
            lab.query("dr", "SELECT pg_wal_replay_resume()")
    assert forced.status == "completed", forced.error
    checked = step_named(forced, "preflight")
    assert checked.detail["ready"] is False
    [past] = checked.detail["forced_past"]
    assert past.startswith("database crm: standby at dr") and "beyond its RPO target" in past
    assert forced.milestones["forced"] <= forced.milestones["approved"] <= forced.milestones["fenced"]
    # dr had received what it had not replayed: the promotion replays it, and nothing main acknowledged is lost
    assert forced.rpo_seconds is not None and forced.met_targets is not None
    assert monitor.lost_rows(lab, "dr") == set()
    assert forced.rpo_seconds == 0
    back_to_main_with_one_primary_at_a_time(lab, monitor)


# --- 3. a chat provider answering HTTP 500 -----------------------------------------------------------

@pytest.mark.lab
def test_a_chat_provider_answering_500_is_retried_twice_then_sms_tells_the_engineer_once(
    lab: Lab, failing_provider: Webhook, tmp_path: Path
) -> None:
    def chat_answers_500(document: dict) -> None:
        document["channels"]["chat"]["url"] = failing_provider.apprise_url

    plan = plan_copy(lab, tmp_path, chat_answers_500)
    roster = load_plan(plan).plan
    sent = run_cli("notify", "--plan", str(plan), "--audience", "oncall", "--template", "incident_declared", "--json")
    assert sent.returncode == 0, sent.stderr  # telling people failed on one channel only: the person was reached
    result = json.loads(sent.stdout)
    assert result["messages"] == result["reached"] == 1
    [engineer] = {delivery["contact"] for delivery in result["deliveries"]}
    attempts = [(d["channel"], d["attempt"], d["status"], d["fallback"]) for d in result["deliveries"]]
    assert attempts == [("chat", 1, "failed", False), ("chat", 2, "failed", False), ("sms", 1, "delivered", True)]
    assert all(d["answer"] == "chat chat: HTTP 500 (Apprise could not deliver)"
               for d in result["deliveries"] if d["channel"] == "chat")
    assert len(failing_provider.received) == CHAT_ATTEMPTS  # bounded: the channel's attempts, no more
    phone = roster.contacts[engineer].phones[0]
    texts = [sms for sms in sent_sms(lab.context.paths) if result["run_id"] in sms["message"]]
    assert [sms["phone_number"] for sms in texts] == [phone]  # once, on the next channel
    recorded = Deliveries(ledger()).of_run(result["run_id"])
    assert sorted((d.channel, d.attempt, d.status) for d in recorded) == sorted(attempt[:3] for attempt in attempts)
    assert phone not in json.dumps([d.model_dump(mode="json") for d in recorded])  # masked in the ledger


# --- 4. the Prefect server restarted under a run -----------------------------------------------------

class PrivateServer:
    """A Prefect server of this test's own (its SQLite under `home`): stopping it touches no other test."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.home / "server.log"
        environment = {**os.environ, "PREFECT_HOME": str(self.home / "prefect"), "PREFECT_API_URL": self.url,
                       "PREFECT_UI_ENABLED": "false"}
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment,
                start_new_session=True)
        wait_until_healthy(self.url, self.process, log, timeout=180)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def private_prefect(tmp_path: Path) -> Iterator[PrivateServer]:
    server = PrivateServer(tmp_path / "private-prefect")
    server.home.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_backup_whose_prefect_server_restarts_mid_run_completes_and_its_record_is_whole(
    private_prefect: PrivateServer, lifeline_home: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "slow-started"
    write_password(tmp_path / "restic.pw")
    document = files_plan(tmp_path, make_recordings(tmp_path / "recordings"))
    document["datasets"]["slow"] = {"repository": "local", "command": ["sh", "-c", f"touch {marker}; sleep 6; "
                                                                                   "echo call-log export"],
                                    "stdin_filename": "export.txt", "rpo_minutes": 1500}
    plan = write_plan(tmp_path, document)
    backup = cli("backup", "--plan", str(plan), "--json", env={"PREFECT_API_URL": private_prefect.url})
    try:
        wait_for(marker.exists, 120, "the slow dataset's backup to start", poll=0.05)
        assert backup.poll() is None
        private_prefect.stop()
        stopped_at = time.monotonic()
        private_prefect.start()  # the outage: as long as a restart takes (5-20 s here)
        outage = time.monotonic() - stopped_at
        out, err = backup.communicate(timeout=150)
    finally:
        if backup.poll() is None:
            os.killpg(backup.pid, signal.SIGKILL)
            backup.communicate(timeout=10)
    assert backup.returncode == 0, err[-3000:]
    assert "Traceback" not in err and outage > 3
    printed = json.loads(out)
    record = ledger().run(printed["id"])
    assert (record.status, record.error) == ("completed", None)
    assert record.ended_at is not None and all(step.ended_at is not None for step in record.steps)
    assert [step.name for step in record.steps if step.status != "completed"] == []
    assert {"backup recordings", "backup slow"} <= {step.name for step in record.steps}
    assert len(record.snapshots) == 2
    # the restarted server knows the run, and knows it ended
    runs = httpx.post(f"{private_prefect.url}/flow_runs/filter", json={"flows": {"name": {"any_": ["backup"]}}},
                      timeout=10).json()
    assert [run["state_type"] for run in runs] == ["COMPLETED"]
    # and the repository's slots held across the restart were given back: the next prune or check is not held up
    limits = httpx.post(f"{private_prefect.url}/v2/concurrency_limits/filter", json={}, timeout=10).json()
    held = {limit["name"]: limit["active_slots"] for limit in limits if limit["name"].startswith("lifeline-repository-")}
    assert held and set(held.values()) == {0}, held
