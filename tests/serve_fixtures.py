"""Fixtures for the deployment and browser tests: `lifeline serve` against the session's Prefect server.

`served_lab` runs `lifeline serve --plan <the lab's plan>` as a subprocess for one test module, the way
an operator runs it, and stops it at the end. The deployments' schedules are registered as the plan
says and then switched off for the module's length (what `lifeline serve` registered is kept in
`ServedPlan.registered`), so no nightly backup or verification fires into a failover under test.

Everything the tests assert goes through the Prefect REST API (`api`), as an operator's tooling would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.lab_fixtures import FreshBackups, Lab

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


class Api:
    """A small Prefect REST client. A SQLite-backed server answers 503 when writes contend: retry."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(20):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == 19:
                    raise
                time.sleep(0.25)
                continue
            if response.status_code == 503 and attempt < 19:
                time.sleep(0.25)
                continue
            response.raise_for_status()
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.request("POST", path, json=body or {})

    def deployment(self, flow: str, name: str) -> dict:
        return self.get(f"/deployments/name/{flow}/{name}")

    def flow_run(self, run_id: str) -> dict:
        return self.get(f"/flow_runs/{run_id}")

    def states(self, run_id: str) -> list[dict]:
        return sorted(self.get(f"/flow_run_states/?flow_run_id={run_id}"), key=lambda state: state["timestamp"])

    def create_run(self, deployment_id: str, parameters: dict | None = None) -> dict:
        return self.post(f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters or {}})

    def artifacts(self, run_id: str) -> list[dict]:
        return self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})

    def logs(self, run_id: str) -> list[str]:
        """The run's log messages, oldest first."""
        found = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC"})
        return [log["message"] for log in found]

    def wait_for_state(self, run_id: str, wanted: set[str], timeout: float) -> dict:
        """Until the run is in one of `wanted` (state types); fails at once on an unexpected end."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run["state_type"] in wanted:
                return run
            if run["state_type"] in TERMINAL or time.monotonic() > deadline:
                raise AssertionError(
                    f"flow run {run['name']} is {run['state_type']} ({(run.get('state') or {}).get('message')}), "
                    f"not {'/'.join(sorted(wanted))}, after {timeout:g} s")
            time.sleep(0.1)

    def wait_for_input_form(self, run_id: str, timeout: float) -> tuple[dict, str]:
        """A paused run's form: its schema and its description, once both can be shown. Prefect saves
        them just after the run enters PAUSED; a Resume dialog opened in between shows no fields."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.flow_run(run_id).get("state") or {}
            keyset = (state.get("state_details") or {}).get("run_input_keyset") or {}
            if {"schema", "description"} <= set(keyset):
                schema, description = (self.http.get(f"/flow_runs/{run_id}/input/{keyset[key]}")
                                       for key in ("schema", "description"))
                if schema.status_code == description.status_code == 200:
                    return schema.json(), description.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run_id} has no input form after {timeout:g} s (state {state.get('type')})")
            time.sleep(0.1)

    def first_state_at(self, run_id: str, state_type: str) -> float:
        """When the run first entered a state type (server time, epoch seconds)."""
        for state in self.states(run_id):
            if state["type"] == state_type:
                return parse_time(state["timestamp"])
        raise AssertionError(f"flow run {run_id} never was {state_type}")

    def start_breakdown(self, run_id: str, since: float) -> str:
        """Seconds from `since` (a click) to each state the run went through until RUNNING."""
        steps = []
        for state in self.states(run_id):
            steps.append(f"{state['name']} +{parse_time(state['timestamp']) - since:.2f}")
            if state["type"] == "RUNNING":
                break
        return ", ".join(steps)

    def record_id(self, run_id: str, kind: str) -> str:
        """The Lifeline run record a flow run published (its table artifact names it)."""
        for artifact in self.artifacts(run_id):
            if artifact["type"] == "table" and artifact["key"].endswith(f"-{kind}-record"):
                return artifact["description"].split(" run ", 1)[1].split(":", 1)[0]
        raise AssertionError(f"flow run {run_id} published no {kind} record")


def parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class ServedPlan:
    """A running `lifeline serve` (or any serving process) and what it registered."""

    process: subprocess.Popen
    log: Path
    registered: dict[str, dict] = field(default_factory=dict)  # deployment name -> as registered

    def named(self, kind: str) -> dict:
        """The deployment registered as `kind` or as `<plan>-<kind>`."""
        [found] = [deployment for name, deployment in self.registered.items()
                   if name == kind or name.endswith(f"-{kind}")]
        return found

    def deployment_id(self, kind: str) -> str:
        return self.named(kind)["id"]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the runner and its flow runs
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def start_serving(api: Api, argv: list[str], log: Path, deployments: dict[str, str], timeout: float = 90,
                  env: dict[str, str] | None = None) -> ServedPlan:
    """Start a serving process and wait until each deployment (name -> flow) is registered anew and its
    runner is polling (status READY)."""
    started = time.time()
    out = open(log, "wb")
    process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, **(env or {})}, start_new_session=True)
    out.close()
    served = ServedPlan(process, log)
    deadline = time.monotonic() + timeout
    while len(served.registered) < len(deployments):
        if process.poll() is not None or time.monotonic() > deadline:
            served.stop()
            raise AssertionError(f"{' '.join(argv[-3:])} did not serve {sorted(deployments)}:\n{served.log_tail()}")
        for name, flow in deployments.items():
            try:
                deployment = api.deployment(flow, name)
            except httpx.HTTPStatusError:
                continue
            if parse_time(deployment["updated"]) >= started - 1 and deployment["status"] == "READY":
                served.registered[name] = deployment
        time.sleep(0.2)
    return served


def stop_serving(api: Api, served: ServedPlan) -> None:
    """Stop the process and delete its deployments (with any runs still scheduled), so no later
    `serve` of the same names picks up a stale scheduled run."""
    served.stop()
    for deployment in served.registered.values():
        try:
            api.request("DELETE", f"/deployments/{deployment['id']}")
        except httpx.HTTPStatusError:
            pass


def switch_schedules_off(api: Api, deployment: dict) -> None:
    for schedule in deployment["schedules"]:
        api.request("PATCH", f"/deployments/{deployment['id']}/schedules/{schedule['id']}", json={"active": False})
    stale = api.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]},
                                                         "state": {"type": {"any_": ["SCHEDULED"]}}}})
    for run in stale:
        api.request("DELETE", f"/flow_runs/{run['id']}")


@pytest.fixture(scope="session")
def api(prefect_server: str) -> Api:
    return Api(prefect_server)


@pytest.fixture(scope="module")
def served_lab(lab: Lab, api: Api, fresh_backups: FreshBackups, tmp_path_factory) -> Iterator[ServedPlan]:
    """`lifeline serve --plan <lab plan>` (default query interval) for this module, schedules off; the lab
    backed up (`fresh_backups`) and normal before it starts."""
    lab.wait_normal(30)
    from lifeline.configs.loading import load_plan
    from lifeline.flows.serve import deployments

    expected = {deployment.name: deployment.flow_name for deployment in deployments(load_plan(lab.plan))}
    log = tmp_path_factory.mktemp("serve") / "lifeline-serve.log"
    served = start_serving(api, [sys.executable, "-m", "lifeline.flows.cli", "serve", "--plan", str(lab.plan)],
                           log, expected)
    try:
        for deployment in served.registered.values():
            switch_schedules_off(api, deployment)
        yield served
    finally:
        stop_serving(api, served)


@pytest.fixture
def no_run_left_behind(api: Api, served_lab: ServedPlan) -> Iterator[None]:
    """A test that fails while a failover waits in its form would leave it holding the plan's lock:
    cancel whatever the test left unfinished, as an operator would from the run's menu."""
    yield
    ids = [deployment["id"] for deployment in served_lab.registered.values()]
    unfinished = api.post("/flow_runs/filter", {"flow_runs": {
        "deployment_id": {"any_": ids}, "state": {"type": {"any_": ["PENDING", "RUNNING", "PAUSED"]}}}})
    for run in unfinished:
        api.post(f"/flow_runs/{run['id']}/set_state", {"state": {"type": "CANCELLING"}, "force": True})
    for run in unfinished:
        try:
            api.wait_for_state(run["id"], TERMINAL, 30)
        except AssertionError:
            pass
