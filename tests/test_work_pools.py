"""The control plane away from the failure: a Prefect server on PostgreSQL, `lifeline deploy` to one process
pool per site, a worker per site, and a failover that runs on dr's worker while main is powered off, its
worker with it. A backup meant for main's pool waits for main and runs when it comes back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from lifeline.configs.loading import load_plan
from lifeline.infra.lab import control_plane as lab_control_plane
from lifeline.infra.lab import down, open_lab, postgres, power, up
from lifeline.infra.lab.processes import is_alive, processes_mentioning
from lifeline.tasks.run import topology
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.steps.host_slots import host_limit_name

from tests.helpers import ledger, step_named, wait_for
from tests.lab_fixtures import Lab, WriteMonitor, back_to_main_with_one_primary_at_a_time, new_lab_home
from tests.pg_fixtures import PostgresServer
from tests.serve_fixtures import Api
from tests.servers import free_port

pytestmark = pytest.mark.lab


def cli(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifeline.flows.cli", *arguments], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=300)


@dataclass
class ControlPlane:
    api: Api
    env: dict[str, str]  # what a worker or `lifeline deploy` runs with: PREFECT_API_URL names the server
    server_env: dict[str, str]  # what `lifeline server start|stop` runs with
    logs: Path

    def start_worker(self, site: str, plan: Path) -> subprocess.Popen:
        log = open(self.logs / f"worker-{site}.log", "ab")
        try:
            return subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", "worker", "--site", site, "--plan",
                                     str(plan)], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()

    def worker_online(self, site: str) -> bool:
        workers = self.api.post(f"/work_pools/lifeline-{site}/workers/filter", {})
        return any(worker["status"] == "ONLINE" for worker in workers)


def stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)  # a power cut: the worker and the runs it started
        worker.wait(10)


@pytest.fixture
def control_plane(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[ControlPlane]:
    """`lifeline server start` on a database of the session's PostgreSQL cluster, on a port of its own."""
    postgres_server.create_database("prefect_pools")
    port = free_port()
    base = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL", "PREFECT_UI_API_URL")}
    server_env = {**base, "LIFELINE_HOME": str(tmp_path / "server-home"), "LIFELINE_SERVER_PORT": str(port),
                  "PGPASSFILE": str(postgres_server.passfile),
                  "LIFELINE_SERVER_DATABASE_URL": f"postgresql+asyncpg://{postgres_server.user}@{postgres_server.host}:"
                                                  f"{postgres_server.port}/prefect_pools"}
    started = cli(server_env, "server", "start")
    assert started.returncode == 0, started.stderr
    try:
        worker_env = {**base, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_LOGGING_LEVEL": "INFO"}
        yield ControlPlane(Api(f"http://127.0.0.1:{port}/api"), worker_env, server_env, tmp_path)
    finally:
        cli(server_env, "server", "stop")


def test_failover_runs_on_drs_worker_with_main_powered_off_and_mains_backup_waits_for_it(
    normal_lab: Lab, monitor: WriteMonitor, control_plane: ControlPlane, postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    lab, plane = normal_lab, control_plane
    plan = load_plan(lab.plan).plan
    status = json.loads(cli(plane.server_env, "server", "status", "--json").stdout)
    assert status["database"] == "postgresql" and status["answering"]
    assert ("flow_run",) in postgres_server.query(
        "prefect_pools", "SELECT table_name FROM information_schema.tables WHERE table_name = 'flow_run'")

    deployed = cli(plane.env, "deploy", "--plan", str(lab.plan), "--json")
    assert deployed.returncode == 0, deployed.stderr
    pools = {entry["deployment"]: entry["work_pool"] for entry in json.loads(deployed.stdout)}
    assert pools[f"failover/{plan.name}-failover"] == pools[f"failback/{plan.name}-failback"] == "lifeline-dr"
    assert pools[f"backup/{plan.name}-backup-main"] == "lifeline-main"
    again = cli(plane.env, "deploy", "--plan", str(lab.plan), "--json")
    assert {entry["id"] for entry in json.loads(again.stdout)} == {entry["id"] for entry in json.loads(deployed.stdout)}
    # A second plan on the same server gets deployments of its own, on the same site pools.
    second_plan = tmp_path / "west.yaml"
    west_document = yaml.safe_load(lab.plan.read_text())
    limited_host = sorted(plan.hosts)[0]
    west_document["name"] = "callcenter-west"
    west_document["hosts"][limited_host]["concurrency"] = 3  # a host limit only where the plan sets one
    second_plan.write_text(yaml.safe_dump(west_document))
    west = cli(plane.env, "deploy", "--plan", str(second_plan), "--json")
    assert west.returncode == 0, west.stderr
    west_pools = {entry["deployment"]: entry["work_pool"] for entry in json.loads(west.stdout)}
    assert west_pools["failover/callcenter-west-failover"] == "lifeline-dr" and not set(west_pools) & set(pools)
    limits = {limit["name"]: limit["limit"] for limit in plane.api.post("/v2/concurrency_limits/filter", {"limit": 200})}
    targets = topology.ssh_targets(plan.hosts)
    assert {name: limits.get(host_limit_name(targets[name])) for name in plan.hosts} == \
        {name: 3 if name == limited_host else None for name in plan.hosts}
    assert plane.api.deployment("failover", f"{plan.name}-failover")["parameters"]["plan_path"] == str(lab.plan)

    workers = {site: plane.start_worker(site, lab.plan) for site in ("main", "dr")}
    try:
        wait_for(lambda: plane.worker_online("main") and plane.worker_online("dr"), 90, "both workers online")
        power("main", "off", lab.home)
        stop(workers["main"])  # main's worker goes down with its site

        failover = plane.api.deployment("failover", f"{plan.name}-failover")
        run = plane.api.create_run(failover["id"], {"reason": "main powered off"})
        plane.api.wait_for_state(run["id"], {"PAUSED"}, 120)
        plane.api.wait_for_input_form(run["id"], 30)
        # Zhou Lin is the approver's deputy, not asked yet: refused in the form, which is asked again.
        first_pause = plane.api.flow_run(run["id"])["state"]["id"]
        refused = plane.api.post(f"/flow_runs/{run['id']}/resume",
                                 {"run_input": {"operator": "Zhou Lin", "reason": "main is dark", "decision": "Approve"}})
        assert refused["status"] == "ACCEPT", refused
        wait_for(lambda: (lambda now: now["state_type"] == "PAUSED" and now["state"]["id"] != first_pause)(
            plane.api.flow_run(run["id"])), 60, "the form asked again")
        plane.api.wait_for_input_form(run["id"], 30)
        answer = plane.api.post(f"/flow_runs/{run['id']}/resume",
                                {"run_input": {"operator": "Wang Fang", "reason": "main is dark", "decision": "Approve"}})
        assert answer["status"] == "ACCEPT", answer
        done = plane.api.wait_for_state(run["id"], {"COMPLETED"}, 180)
        assert done["work_pool_name"] == "lifeline-dr"
        assert f"flow run '{run['id']}'" in (plane.logs / "worker-dr.log").read_text(errors="replace")  # dr's worker ran it
        record = ledger().run(plane.api.record_id(run["id"], "failover"))
        assert record.status == "completed" and record.trigger == "ui" and lab.status().dns.points_at == "dr"
        assert step_named(record, "approval").detail["operator"] == "Wang Fang"

        backup = plane.api.create_run(plane.api.deployment("backup", f"{plan.name}-backup-main")["id"])
        wait_for(lambda: plane.api.flow_run(backup["id"])["state_type"] == "SCHEDULED", 10, "main's backup queued")
        back_to_main_with_one_primary_at_a_time(lab, monitor)  # main comes back, Lifeline fails back
        workers["main"] = plane.start_worker("main", lab.plan)
        finished = plane.api.wait_for_state(backup["id"], {"COMPLETED"}, 240)
        assert finished["work_pool_name"] == "lifeline-main"
        assert f"flow run '{backup['id']}'" in (plane.logs / "worker-main.log").read_text(errors="replace")
    finally:
        for worker in workers.values():
            stop(worker)


def test_the_labs_control_plane_runs_on_ops_and_each_worker_goes_down_with_its_site() -> None:
    """`lab up --control-plane`: Prefect's server on the ops cluster's PostgreSQL, the plan deployed, a worker per
    site; main's backup runs on main's worker; powering main off takes its worker, powering it on brings it back."""
    home = new_lab_home("lifeline-lab-plane-")
    quiet = {"log": lambda message: None}
    server_before = None
    try:
        plan_path = up(home, free_ports=True, control_plane=True, **quiet)
        context = open_lab(home)
        plane = lab_control_plane.status(context)
        api = Api(plane.api_url)
        assert plane.server_pid and ("flow_run",) in postgres.query(
            context, "calllog", "SELECT table_name FROM information_schema.tables WHERE table_name = 'flow_run'",
            database=lab_control_plane.DATABASE)

        def online(site: str) -> bool:
            return any(worker["status"] == "ONLINE" for worker in api.post(f"/work_pools/lifeline-{site}/workers/filter"))

        wait_for(lambda: online("main") and online("dr"), 90, "both sites' workers online")
        plan = load_plan(plan_path).plan
        run = api.create_run(api.deployment("backup", f"{plan.name}-backup-main")["id"])
        done = api.wait_for_state(run["id"], {"COMPLETED"}, 300)
        assert done["work_pool_name"] == "lifeline-main"
        record = Ledger(f"sqlite:///{home / 'ledger.sqlite'}").run(api.record_id(run["id"], "backup"))
        assert record.status == "completed" and len(record.snapshots) == len(plan.datasets)

        server_before = plane.server_pid
        power("main", "off", home)
        after_power_cut = lab_control_plane.status(open_lab(home))
        assert after_power_cut.workers["main"] is None and after_power_cut.workers["dr"] is not None
        assert after_power_cut.server_pid == server_before  # the control plane is not at the site that failed
        power("main", "on", home)
        assert lab_control_plane.status(open_lab(home)).workers["main"] is not None
    finally:
        down(home, purge=True, **quiet)
        shutil.rmtree(home, ignore_errors=True)  # the runs' ledger, cache and locks: `lab down` keeps those
    assert not [pid for pid in processes_mentioning(str(home)) if is_alive(pid)]
    assert server_before is None or not is_alive(server_before)  # `lab down` stopped the server too
