"""Start latency of served deployments: a run created (a Quick run click, a POST) -> RUNNING.

    uv run python -m tests.benchmarks.run start [--runs 7] [--query-seconds S]

One lab and one Prefect server, started here, and two serving processes against that server with
the same query interval:

- `lifeline serve --plan <the lab's plan>`: Lifeline's deployments, as an operator serves them;
- an empty flow served by `prefect.serve`: Prefect's own floor for a served run (the runner's poll,
  a spawned `multiprocessing` child, `import prefect`, the engine's API calls).

Alternating (empty, failover, failover, empty, ...), runs are created through the REST API, as the
UI's Quick run does. Times are the server's own: the run's creation -> PENDING (the runner saw it
and claimed it) -> RUNNING (the child imported the flow's module and the engine started it). A
failover run then runs its preflight and pauses for approval; it is declined in its form (it ends
Cancelled, nothing changed) before the next round. Goal (issue 5): failover median <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from tests.benchmarks.common import bench_tmpdir, log, median, print_table, ratio, spread
from tests.benchmarks.lab import backed_up_lab

GOAL_SECONDS = 2.0
EMPTY_FLOW_SERVER = "import sys; from tests.benchmarks.empty_flow import serve_empty; serve_empty(float(sys.argv[1]))"


class Timing:
    def __init__(self) -> None:
        self.pending: list[float] = []
        self.running: list[float] = []

    def add(self, created: float, states: dict[str, float]) -> tuple[float, float]:
        self.pending.append(states["PENDING"] - created)
        self.running.append(states["RUNNING"] - created)
        return self.pending[-1], self.running[-1]

    @property
    def pending_to_running(self) -> list[float]:
        return [running - pending for running, pending in zip(self.running, self.pending, strict=True)]


def start_times(api, run: dict, timeout: float = 60) -> tuple[float, dict[str, float]]:
    from tests.serve_fixtures import parse_time

    api.wait_for_state(run["id"], {"RUNNING", "PAUSED", "COMPLETED"}, timeout)
    states: dict[str, float] = {}
    for state in api.states(run["id"]):
        states.setdefault(state["type"], parse_time(state["timestamp"]))
    return parse_time(run["created"]), states


def decline(api, run_id: str) -> str:
    """A failover pauses for approval once preflight ran: say no in its form (nothing changes)."""
    run = api.wait_for_state(run_id, {"PAUSED", "FAILED", "CANCELLED", "COMPLETED"}, 120)
    for _ in range(50):  # the form may not be registered the moment the run pauses: the server then says so
        if run["state_type"] != "PAUSED":
            break
        answer = api.post(f"/flow_runs/{run_id}/resume",
                          {"run_input": {"operator": "bench", "reason": "start latency benchmark", "decision": "Reject"}})
        if answer["status"] == "ACCEPT":
            run = api.wait_for_state(run_id, {"CANCELLED"}, 60)
        else:
            time.sleep(0.2)
            run = api.flow_run(run_id)
    return run["state_type"]


def measure(root: Path, runs: int, query_seconds: float) -> tuple[Timing, Timing, list[str]]:
    from lifeline.configs.loading import load_plan

    from tests.serve_fixtures import Api, start_serving, stop_serving

    empty, failover, endings = Timing(), Timing(), []
    with backed_up_lab(root) as lab:  # backed up: preflight is READY and the failover pauses for its form
        api = Api(os.environ["PREFECT_API_URL"])
        lifeline = shutil.which("lifeline") or "lifeline"
        served = start_serving(api, [lifeline, "serve", "--plan", str(lab.plan), "--query-seconds", str(query_seconds)],
                               root / "serve.log", {f"{load_plan(lab.plan).plan.name}-failover": "failover"})
        served_empty = start_serving(api, [sys.executable, "-c", EMPTY_FLOW_SERVER, str(query_seconds)],
                                     root / "empty.log", {"empty": "empty"})
        try:
            for number in range(1, runs + 1):
                for variant in ["empty", "failover"] if number % 2 else ["failover", "empty"]:
                    deployment = (served_empty if variant == "empty" else served).deployment_id(variant)
                    run = api.create_run(deployment, {"reason": "bench"} if variant == "failover" else {})
                    created, states = start_times(api, run)
                    pending, running = (empty if variant == "empty" else failover).add(created, states)
                    if variant == "failover":
                        endings.append(ending := decline(api, run["id"]))
                    else:
                        ending = api.wait_for_state(run["id"], {"COMPLETED"}, 60)["state_type"]
                    log(f"run {number}/{runs} {variant}: PENDING +{pending:.2f} s, RUNNING +{running:.2f} s, then {ending}")
        finally:
            stop_serving(api, served)
            stop_serving(api, served_empty)
    return empty, failover, endings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="start", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--query-seconds", type=float, default=None, help="the runners' poll interval (default: lifeline serve's)")
    options = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    if options.query_seconds is None:
        from lifeline.configs.settings import load_settings

        options.query_seconds = load_settings().serve_query_seconds
    with bench_tmpdir("lifeline-bench-start-") as root:
        empty, failover, endings = measure(root, options.runs, options.query_seconds)
    rows = []
    for label, lifeline_values, empty_values in [
        ("created -> RUNNING", failover.running, empty.running),
        ("  created -> PENDING (runner poll, claim)", failover.pending, empty.pending),
        ("  PENDING -> RUNNING (child process, imports, engine)", failover.pending_to_running, empty.pending_to_running),
    ]:
        rows.append([label, median(lifeline_values), median(empty_values),
                     ratio(median(lifeline_values), median(empty_values)), spread(lifeline_values), spread(empty_values)])
    print_table(["", "failover deployment s", "empty flow s", "ratio", "failover min-max", "empty min-max"], rows,
                title=f"Served run start: medians of {options.runs} alternating runs each; query interval "
                      f"{options.query_seconds:g} s; times stamped by the Prefect server")
    verdict = "meets" if median(failover.running) <= GOAL_SECONDS else "misses"
    print(f"failover created -> RUNNING median {median(failover.running):.2f} s: {verdict} <= {GOAL_SECONDS:g} s")
    print(f"failover runs then: {', '.join(sorted(set(endings)))} (declined in the approval form)")
    print(f"load average (1 min) at start / end: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0 if verdict == "meets" else 1


if __name__ == "__main__":
    raise SystemExit(main())
