"""Failover benchmark, its tables: RTO medians, CLI fixed costs, failback, the median run's timeline, and
the probes. Used by failover.py (a helper module, not a benchmark).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from collections.abc import Callable

from tests.benchmarks.common import median, print_table, ratio, spread
from tests.benchmarks.failover_runs import DECLARED, FAULT, INJECTED, TARGET, Outcome, Samples

RTO_GOAL_SECONDS = 5.0
RATIO_GOAL = 1.3


def median_run(outcomes: list[Outcome]) -> Outcome:
    """The run whose RTO is the median (the lower middle one for an even count)."""
    ordered = sorted(outcomes, key=lambda outcome: outcome.rto)
    return ordered[(len(ordered) - 1) // 2]


def phase_medians(outcomes: list[Outcome]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for outcome in outcomes:
        for name, seconds in outcome.phases:
            values[name].append(seconds)
    return {name: median(found) for name, found in values.items()}


def report(samples: Samples, arguments: argparse.Namespace, load: tuple[float, float]) -> None:
    ours, theirs = samples.lifeline, samples.shell

    def row(name: str, pick: Callable[[Outcome], float | None]) -> list:
        mine = [v for v in map(pick, ours) if v is not None]
        script = [v for v in map(pick, theirs) if v is not None]
        return [name, median(mine), median(script), ratio(median(mine), median(script)), spread(mine), spread(script)]

    rto_ours, rto_theirs = median([o.rto for o in ours]), median([o.rto for o in theirs])
    verdict = (f"median lab RTO {rto_ours:.2f} s: {'meets' if rto_ours <= RTO_GOAL_SECONDS else 'MISSES'} "
               f"<= {RTO_GOAL_SECONDS:g} s; {rto_ours / rto_theirs:.2f}x the shell script: "
               f"{'meets' if rto_ours <= RATIO_GOAL * rto_theirs else 'MISSES'} <= {RATIO_GOAL:g}x")
    print_table(
        ["", "lifeline median s", "shell median s", "ratio", "lifeline min-max", "shell min-max"],
        [
            row("failover RTO (fault -> recovered)", lambda o: o.rto),
            row("  fault -> promoted", lambda o: o.milestones.get("promoted")),
            row("  fault -> dns switched", lambda o: o.milestones.get("dns_switched")),
            row("fault -> failover returned", lambda o: o.wall),
        ],
        title=f"Lab failover, fault {FAULT} -> recovered: medians of {len(ours)} alternating runs each "
              f"(after {arguments.warmup} warm-up pair(s)); Lifeline in-process against a Prefect server",
        notes=[verdict,
               "recovered = the first of N consecutive healthy probes of dr (both: N and interval from the plan); "
               "the run returns N-1 intervals later",
               f"warm-up RTOs (not counted): lifeline {', '.join(f'{v:.2f}' for v in samples.warmup['lifeline']) or '-'}, "
               f"shell {', '.join(f'{v:.2f}' for v in samples.warmup['shell']) or '-'}"],
    )
    print()

    s = samples

    def fixed(name: str, process: str, inside: str, what: str) -> list:
        return [name, s.median(process), s.median(inside), _difference(s.median(process), s.median(inside)),
                s.spread(process), s.median(f"{process} cpu"), s.median(f"{inside} cpu"), what]

    print_table(
        ["fixed cost", "process s", "in-process s", "fixed s", "process min-max", "process cpu s",
         "in-process cpu s", "what"],
        [
            fixed("`lifeline failover --yes --dry-run`", "dry-run process", "dry-run in-process",
                  "CLI process vs load_plan + describe_failover"),
            fixed("  same, bytecode cached", "dry-run process cached", "dry-run in-process",
                  "PYTHONPYCACHEPREFIX, warmed"),
            fixed("`lifeline verify --site main --json`", "verify process", "verify in-process",
                  "CLI process (Prefect server) vs verify_flow in-process"),
            fixed("  same, bytecode cached", "verify process cached", "verify in-process", "PYTHONPYCACHEPREFIX, warmed"),
            fixed("  same, bytecode cached, flow heartbeat off", "verify process cached heartbeat off",
                  "verify in-process", "main() under cli.prefect_for_cli()"),
        ],
        notes=[samples.bytecode_note],
        title=f"CLI fixed cost ({arguments.cli_rounds} rounds; fixed = process minus in-process; "
              "cpu = user + system seconds, less sensitive than wall time to a loaded machine)",
    )
    print()

    good = [f for f in samples.failbacks if not f.failed]
    failed = [f for f in samples.failbacks if f.failed]
    step_names = list(dict.fromkeys(name for f in good for name in f.steps))
    print_table(
        ["failback (failback_flow in-process)", "median s", "min-max"],
        [["whole failback (call -> return)", median([f.seconds for f in good]), spread([f.seconds for f in good])],
         ["  planned outage (its record's RTO)", median([f.planned_outage for f in good if f.planned_outage is not None]),
          spread([f.planned_outage for f in good if f.planned_outage is not None])]]
        + [[f"  step: {name}", median([f.steps[name] for f in good if name in f.steps]),
            spread([f.steps[name] for f in good if name in f.steps])] for name in step_names],
        title=f"Failback after every failover: {len(good)} of {len(samples.failbacks)} succeeded"
              + (f"; {len(failed)} FAILED and the lab was rebuilt with down(purge)+up" if failed else ""),
        notes=[f"failed: {f.failed}" for f in failed],
    )
    print()

    mid, mid_shell = median_run(ours), median_run(theirs)
    all_ours, all_theirs = phase_medians(ours), phase_medians(theirs)
    shell_for = {
        INJECTED: INJECTED, DECLARED: DECLARED,
        f"promote crm at {TARGET}": "promote",
        f"switch dns to {TARGET}": "dns switch",
        f"verify {TARGET} (until recovered)": "verify",
    }
    shell_phases = dict(mid_shell.phases)
    rows = []
    for name, seconds in mid.phases:
        counterpart = shell_for.get(name)
        rows.append([name, seconds, all_ours.get(name),
                     shell_phases.get(counterpart) if counterpart else None,
                     all_theirs.get(counterpart) if counterpart else None])
    rows.append(["= RTO", mid.rto, None, mid_shell.rto, None])
    print_table(
        ["timeline from the fault", "lifeline s", "lifeline all-runs median s", "shell s", "shell all-runs median s"],
        rows,
        title=f"Where the time goes: the median Lifeline run (RTO {mid.rto:.2f} s) from its record's step times, "
              f"next to the median shell run (RTO {mid_shell.rto:.2f} s)",
        digits=3,
        notes=["'->' rows: time between two steps, outside any step (what the flow does there)",
               f"shell: '{DECLARED}' = bash start; promote = ssh + pg_ctl promote -w; dns switch = "
               f"{'python -c boto3' if samples.shell_dns == 'python' else 'curl --aws-sigv4'} UPSERT until INSYNC; "
               "verify = curl until the first 200 of the streak"],
    )
    print()

    def probe(name: str, sample: str) -> list:
        return [name, s.median(f"probe {sample}"), s.spread(f"probe {sample}")]

    print_table(
        ["probe (lab normal)", "median s", "min-max"],
        [
            probe("an empty @flow, called in-process (Prefect's per-run cost)", "noop flow"),
            probe("  same, flow heartbeat off", "noop flow heartbeat off"),
            probe("load_plan (the lab's plan)", "load plan"),
            probe("preflight, as in the flow", "preflight"),
            probe("preflight without the backup-freshness probe", "preflight without backups"),
            probe("preflight without backups and AWS (SSH + SQL probes only)", "preflight ssh and sql only"),
            probe("restic snapshots (what the freshness probe runs)", "restic snapshots"),
            probe("  same with --no-lock", "restic snapshots no-lock"),
            probe("  instead: newest backup run from the ledger", "ledger newest backup"),
            probe("Route 53 read, new AwsSession (boto3 client built)", "aws cold"),
            probe("Route 53 read, same session again", "aws warm"),
        ],
        title=f"Probes: where the flow's own time goes ({arguments.cli_rounds} rounds)",
        digits=3,
    )
    print()
    print(f"lab rebuilds (failback failed): {samples.rebuilds}")
    print(f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores")
    sys.stdout.flush()


def _difference(process: float | None, in_process: float | None) -> float | None:
    return None if process is None or in_process is None else process - in_process
