"""Fan-out benchmark: Lifeline's checks and SSH pool next to a bare thread pool doing the same work.

    uv run python -m tests.benchmarks.fanout [--lab-home DIR] [--rounds N]

Against the lab (a running one with --lab-home, else one started and stopped here):
- 100 HTTP checks of main's /health via a new CheckRunner each round, and via ThreadPoolExecutor + one httpx.Client;
- one SSH command on 50 connections (50 plan hosts, alternating the two sites' sshd) via tasks/ssh,
  and via a thread pool of plain paramiko clients (as usually written, and with TCP_NODELAY).
Variants alternate within each round; the table shows medians. Goal: each Lifeline row <= 2x its baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import httpx
import paramiko
from lifeline.configs.checks import Check
from lifeline.configs.loading import load_plan
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.probes import MAX_WORKERS, CheckRunner
from lifeline.tasks.adapters.ssh import pool as ssh_pool
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import probes
from pydantic import TypeAdapter

from tests.benchmarks.common import bench_tmpdir, print_table, timed
from tests.benchmarks.lab import running_lab

HTTP_CHECKS = 100
SSH_CONNECTIONS = 50
WORKERS = MAX_WORKERS  # the plain variants get the same pool size as CheckRunner
COMMAND = ["uname", "-n"]
EXPECT_TEXT = '"healthy": true'


def health_url(home: Path) -> str:
    """main's /health: 200 after a heartbeat commit (dr's standby answers 503 only after a failed write and a
    new database connection each time, which would measure the lab's service, not the client)."""
    from lifeline.infra.lab import open_lab

    return f"http://127.0.0.1:{open_lab(home).state.ports.service_main}/health"


def ssh_targets(home: Path) -> list[ssh.SshTarget]:
    plan = load_plan(home / "lab" / "plan.yaml").plan
    sites = list(topology.ssh_targets(plan.hosts).values())
    return [dataclasses.replace(sites[index % len(sites)], name=f"host-{index:02d}") for index in range(SSH_CONNECTIONS)]


def bare_http(urls: list[str], client: httpx.Client | None = None) -> list[bool]:
    own = client or httpx.Client(limits=httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS))

    def check(url: str) -> bool:
        response = own.get(url, timeout=2)
        return response.status_code == 200 and EXPECT_TEXT in response.text

    try:
        with ThreadPoolExecutor(WORKERS) as executor:
            return list(executor.map(check, urls))
    finally:
        if client is None:
            own.close()


@cache
def opened_key(target: ssh.SshTarget) -> paramiko.PKey:
    """Opened once, as Lifeline does: an encrypted key's derivation (~0.3 s) would otherwise be the whole baseline."""
    passphrase = target.key_passphrase_file.read_text().strip().encode() if target.key_passphrase_file else None
    return paramiko.PKey.from_path(target.key_file, passphrase=passphrase)


def bare_ssh_command(target: ssh.SshTarget, nodelay: bool) -> int:
    client = paramiko.SSHClient()
    client.load_host_keys(str(target.known_hosts_file))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = None
    if nodelay:
        sock = socket.create_connection((target.address, target.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        client.connect(target.address, port=target.port, username=target.user, pkey=opened_key(target),
                       sock=sock, timeout=5, look_for_keys=False, allow_agent=False)
        _, stdout, _ = client.exec_command(ssh.command_line(COMMAND), timeout=5)
        stdout.read()
        return stdout.channel.recv_exit_status()
    finally:
        client.close()


def bare_ssh(targets: list[ssh.SshTarget], nodelay: bool) -> list[int]:
    with ThreadPoolExecutor(len(targets)) as executor:
        return list(executor.map(lambda target: bare_ssh_command(target, nodelay), targets))


def lifeline_ssh(targets: list[ssh.SshTarget], pool: ssh_pool.SshPool | None = None) -> list[int]:
    own = pool or ssh_pool.SshPool()
    try:
        with ThreadPoolExecutor(len(targets)) as executor:
            return list(executor.map(lambda target: own.run(target, COMMAND, timeout=10).exit_status, targets))
    finally:
        if pool is None:
            own.close_all()


def measure(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Every variant once per round, alternating; one warm-up round not counted. Outcomes must agree."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(rounds + 1):
        outcomes = {}
        for name, function in variants.items():
            seconds, outcomes[name] = timed(function)
            if round_number:
                times[name].append(seconds)
        first = next(iter(outcomes.values()))
        if any(_summary(outcome) != _summary(first) for outcome in outcomes.values()):
            raise SystemExit(f"variants disagree: { {name: _summary(o) for name, o in outcomes.items()} }")
    return times


def _summary(outcome: object) -> object:
    if isinstance(outcome, list) and outcome and hasattr(outcome[0], "healthy"):
        return sorted(result.healthy for result in outcome)
    if isinstance(outcome, list):
        return sorted(outcome)
    return outcome


def run(home: Path, rounds: int) -> list[tuple[str, str, float, str, float]]:
    urls = [health_url(home)] * HTTP_CHECKS
    checks = probes(TypeAdapter(list[Check]).validate_python(
        [{"type": "http", "url": url, "expect_text": EXPECT_TEXT} for url in urls]))

    def bare_statuses(client: httpx.Client | None = None) -> list[bool]:
        return bare_http(urls, client)

    rows = []
    def one_round() -> list[bool]:
        with CheckRunner() as runner:
            return [r.healthy for r in runner.run(checks)]

    one_shot = measure({"lifeline": one_round,
                        "bare": bare_statuses}, rounds)
    rows.append(("100 HTTP checks, one round (new pool + client)", "CheckRunner", statistics.median(one_shot["lifeline"]),
                 "ThreadPoolExecutor + httpx.Client", statistics.median(one_shot["bare"])))
    with CheckRunner() as runner, \
            httpx.Client(limits=httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)) as client:
        warm = measure({"lifeline": lambda: [r.healthy for r in runner.run(checks)],
                        "bare": lambda: bare_statuses(client)}, rounds)
    rows.append(("100 HTTP checks, repeated rounds (kept-alive)", "CheckRunner.run", statistics.median(warm["lifeline"]),
                 "same, client kept", statistics.median(warm["bare"])))

    targets = ssh_targets(home)
    cold = measure({"lifeline": lambda: lifeline_ssh(targets), "bare": lambda: bare_ssh(targets, nodelay=False),
                    "bare_nodelay": lambda: bare_ssh(targets, nodelay=True)}, rounds)
    rows.append((f"1 SSH command on {SSH_CONNECTIONS} new connections", "tasks.ssh (new pool)",
                 statistics.median(cold["lifeline"]), "paramiko clients", statistics.median(cold["bare"])))
    rows.append((f"1 SSH command on {SSH_CONNECTIONS} new connections", "tasks.ssh (new pool)",
                 statistics.median(cold["lifeline"]), "paramiko + TCP_NODELAY", statistics.median(cold["bare_nodelay"])))
    pool = ssh_pool.SshPool()
    try:
        warm_ssh = measure({"lifeline": lambda: lifeline_ssh(targets, pool),
                            "bare_nodelay": lambda: bare_ssh(targets, nodelay=True)}, rounds)
    finally:
        pool.close_all()
    rows.append((f"1 SSH command on {SSH_CONNECTIONS} hosts, again", "tasks.ssh (pooled)",
                 statistics.median(warm_ssh["lifeline"]), "paramiko + TCP_NODELAY", statistics.median(warm_ssh["bare_nodelay"])))
    return rows


def print_results(rows: list[tuple[str, str, float, str, float]], rounds: int) -> None:
    print_table(("scenario", "Lifeline", "ms", "baseline", "ms", "ratio"),
                [(scenario, ours, f"{ours_s * 1000:.1f}", theirs, f"{theirs_s * 1000:.1f}", f"{ours_s / theirs_s:.2f}x")
                 for scenario, ours, ours_s, theirs, theirs_s in rows],
                title=f"medians of {rounds} rounds (after one warm-up); goal: ratio <= 2x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-home", type=Path, help="LIFELINE_HOME of a running lab (default: start one)")
    parser.add_argument("--rounds", type=int, default=15)
    arguments = parser.parse_args(argv)
    if arguments.lab_home:
        print_results(run(arguments.lab_home, arguments.rounds), arguments.rounds)
        return 0
    with bench_tmpdir("lifeline-bench-fanout-") as root, \
            running_lab(root, log_to=lambda message: print(message, file=sys.stderr), timeout=30) as lab:
        print_results(run(lab.home, arguments.rounds), arguments.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
