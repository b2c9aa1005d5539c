"""Failover benchmark: Lifeline's failover flow on the lab next to a plain shell script doing the same steps.

    uv run python -m tests.benchmarks.run failover [--runs 5] [--warmup 1] [--cli-rounds 3] [--shell-dns curl|python]

One lab (free ports, its own LIFELINE_HOME under $TMPDIR), one Prefect server started here, and
one untimed backup so that preflight finds fresh snapshots (datasets whose RPO target is short are
backed up again between runs, untimed). Then, alternating (Lifeline, shell, Lifeline, shell...):

- the same fault, `main-db-down` (main's PostgreSQL stopped with `pg_ctl stop -m immediate`); its
  time in lab/faults.json is the incident time for both;
- Lifeline: `failover_flow(plan, approval="yes")` IN this process, against the server. RTO is the
  run record's: first of N consecutive healthy rounds of dr's critical services minus the fault time;
- shell: infra/bench/failover.sh (ssh + `pg_ctl promote -w`, Route 53 UPSERT until INSYNC with
  `curl --aws-sigv4` -- or, with --shell-dns python, a `python -c` boto3 snippet -- then curl on dr's
  /health every interval until N 200s in a row), with the plan's interval and N. RTO = the first of
  the N 200s minus the fault time;
- after each, back to the normal state: `heal` (clears the fault; never starts the replaced primary),
  `failback_flow(plan, approval="yes")` (timed, and its own planned-outage RTO recorded), `heal`, and
  wait until `lab status` says normal. If failback fails, the lab is rebuilt (`down(purge)` + `up`)
  and that is reported as a finding.

Then the CLI's fixed cost (lab normal): `lifeline failover --yes --dry-run` as a process next to the
same description in-process, and `lifeline verify --site main --json` as a process next to
`verify_flow` in-process; each also with Python's bytecode cache in a folder of ours
(PYTHONPYCACHEPREFIX; where PYTHONDONTWRITEBYTECODE is set and the venv has no .pyc, every process
compiles Prefect from source), and verify with the flow heartbeat off. Last, probes of where the flow's own costs go (an empty flow run, plan
loading, preflight with and without its restic listing, a Route 53 read with a new and a kept boto3
client).

Tables: RTO medians (goal: <= 5 s and <= 1.3x the shell script), fixed costs, failback, and the
step-by-step timeline of the median Lifeline run from its record (steps' started_at/ended_at),
next to the shell script's phases.

Modules: failover_runs.py (the failovers, failbacks and samples), failover_costs.py (fixed costs and
probes), failover_tables.py (the tables); the lab and its first backup: lab.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.benchmarks.common import bench_tmpdir, log, quiet_prefect_environment
from tests.benchmarks.failover_costs import fixed_costs, probes
from tests.benchmarks.failover_runs import SCRIPT, Outcome, Samples, back_to_normal, lifeline_failover, shell_failover
from tests.benchmarks.failover_tables import report
from tests.benchmarks.lab import LabRun, backed_up_lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="failover", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed failovers of each kind (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed pairs first (default 1)")
    parser.add_argument("--cli-rounds", type=int, default=3, help="rounds of the fixed-cost measurements (default 3)")
    parser.add_argument("--shell-dns", choices=("curl", "python"), default="curl",
                        help="how the shell script calls Route 53: curl --aws-sigv4 (default) or python -c boto3")
    arguments = parser.parse_args(argv)
    if arguments.runs < 1 or arguments.warmup < 0 or arguments.cli_rounds < 1:
        parser.error("--runs and --cli-rounds must be at least 1, --warmup at least 0")
    if not SCRIPT.is_file():
        print(f"failover: {SCRIPT} is missing", file=sys.stderr)
        return 2
    quiet_prefect_environment()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with bench_tmpdir("lifeline-bench-failover-") as root:
        samples = run_benchmark(root, arguments)
    report(samples, arguments, (load_before, os.getloadavg()[0]))
    log(f"failover: {time.perf_counter() - started:.0f} s in all")
    return 0


def run_benchmark(root: Path, arguments: argparse.Namespace) -> Samples:
    samples = Samples(shell_dns=arguments.shell_dns)
    with backed_up_lab(root) as lab:
        kinds: list[tuple[str, Callable[[LabRun], Outcome]]] = [("lifeline", lifeline_failover),
                                                                 ("shell", lambda lab: shell_failover(
                                                                     lab, arguments.shell_dns))]
        for number in range(-arguments.warmup + 1, arguments.runs + 1):
            # alternate which goes first, so a drift in the machine's load hits both alike
            for kind, function in kinds if number % 2 else kinds[::-1]:
                lab.refresh_backups()
                outcome = function(lab)
                failback = back_to_normal(lab)
                label = f"warm-up {number + arguments.warmup}" if number < 1 else f"run {number}/{arguments.runs}"
                log(f"{label} {kind}: RTO {outcome.rto:.2f} s (returned after {outcome.wall:.2f} s); "
                    f"failback {failback.seconds:.2f} s" + (f" FAILED: {failback.failed}" if failback.failed else ""))
                if number < 1:
                    samples.warmup[kind].append(outcome.rto)
                    continue
                getattr(samples, kind).append(outcome)
                samples.failbacks.append(failback)
        samples.rebuilds = lab.rebuilds
        fixed_costs(lab, arguments.cli_rounds, samples, root / "pycache")
        probes(lab, arguments.cli_rounds, samples)
    return samples


if __name__ == "__main__":
    sys.exit(main())
