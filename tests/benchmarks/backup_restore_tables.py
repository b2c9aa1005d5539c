"""Backup and restore benchmark, its tables: bare restic next to Lifeline's steps, the overhead and fixed
costs, and CPU use. Used by backup_restore.py (a helper module, not a benchmark).
"""

from __future__ import annotations

import argparse
import os
import sys

from tests.benchmarks.backup_restore_flows import CHECK_SUBSET, EPHEMERAL_STARTUP_TIMEOUT, REPOSITORY, Samples
from tests.benchmarks.common import print_table, ratio

GOAL = 1.05


def size_label(size_mib: int) -> str:
    return f"{size_mib // 1024} GiB" if size_mib % 1024 == 0 else f"{size_mib} MiB"


def report(samples: Samples, arguments: argparse.Namespace, load: tuple[float, float]) -> None:
    s = samples
    label = size_label(arguments.size_mib)

    def row(name: str, bare: str, ours: str) -> list:
        return [name, s.median(bare), s.median(ours), ratio(s.median(ours), s.median(bare)),
                s.spread(bare), s.spread(ours)]

    print_table(
        ["", "bare restic s", "lifeline step s", "ratio", "bare min-max", "lifeline min-max"],
        [
            row(f"backup {label} (cold)", "bare backup", "backup step"),
            row("  restic backup process alone", "bare backup", "backup restic"),
            row("  its user CPU s (less load-bound)", "user restic bare backup", "backup restic cpu"),
            row(f"restore {label} + verify", "bare restore", "restore step"),
            row("  restic restore process alone", "bare restore", "restore restic"),
            row("  its user CPU s (less load-bound)", "user restic bare restore", "restore restic cpu"),
            row("whole backup flow, in-process", "bare backup", "backup flow"),
            row("whole restore flow, in-process", "bare restore", "restore flow"),
        ],
        title=f"Backup and restore of {label}: medians of {arguments.rounds} alternating rounds "
              f"(goal: step <= {GOAL:.2f}x bare restic)",
    )
    print()

    def step(name: str, sample: str, total: str, what: str) -> list:
        return [name, s.median(sample), s.spread(sample), s.median(total), what]

    def fixed(name: str, sample: str, what: str) -> list:
        return [name, s.median(f"{sample} fixed"), s.spread(f"{sample} fixed"), s.median(f"{sample} total"), what]

    print_table(
        ["overhead", "s", "min-max", "of total s", "what"],
        [
            step("backup flow: prepare step", f"prepare {REPOSITORY}", "backup flow", "restic cat config"),
            step("backup step beyond restic backup", "backup step beyond restic backup", "backup flow",
                 "restic snapshots (new snapshot's time, previous one) + lock"),
            step("backup flow: prune step", f"prune {REPOSITORY}", "backup flow",
                 "restic prune (no retention: nothing to remove)"),
            step("backup flow: check step", f"check {REPOSITORY}", "backup flow",
                 f"restic check --read-data-subset {CHECK_SUBSET}"),
            step("backup flow outside steps", "backup flow outside steps", "backup flow",
                 "Prefect flow/task runs, ledger, artifacts, heartbeat"),
            step("restore flow: choose snapshot", "choose snapshot", "restore flow", "restic snapshots"),
            step("restore step beyond restic restore", "restore step beyond restic restore", "restore flow",
                 "restic ls + size of every file"),
            step("restore flow: check target, put in place", "check target + put in place", "restore flow",
                 "rename"),
            step("restore flow outside steps", "restore flow outside steps", "restore flow",
                 "Prefect flow/task runs, ledger, artifacts, heartbeat"),
            fixed("in-process backup_flow, one-file plan", "tiny flow", "warm process, Prefect server"),
            fixed("  first flow run of the process", "first tiny flow", "clients, flow registration"),
            fixed("CLI process, Prefect server", "cli server", "`lifeline backup --plan P --json`"),
            fixed("  same, flow heartbeat off", "cli server heartbeat off", "main() under cli.prefect_for_cli()"),
            fixed("CLI process, ephemeral Prefect", "cli ephemeral",
                  f"no PREFECT_API_URL; 1 run; startup timeout {EPHEMERAL_STARTUP_TIMEOUT} s"),
            fixed("  first ephemeral run", "cli ephemeral first", "creates the Prefect database"),
            fixed("python -c 'import lifeline.flows.backup'", "import", "interpreter + imports; 1 run"),
        ],
        title=f"Overhead: the flows' other steps ({label}, {arguments.rounds} rounds), and fixed costs "
              f"(one-file plan, {arguments.cli_rounds} rounds; s = wall time minus the run's steps)",
    )
    print()
    runs = ("bare backup", "backup flow", "bare restore", "restore flow")
    print_table(
        ["CPU seconds meanwhile", *runs],
        [
            ["restic processes", *(s.median(f"cpu restic {run}") for run in runs)],
            ["this Python process (flow, output drains)", *(s.median(f"cpu own {run}") for run in runs)],
            ["Prefect server", *(s.median(f"cpu server {run}") for run in runs)],
        ],
        title=f"CPU used while each ran ({label}, medians; user + system, on {os.cpu_count()} cores)",
    )
    print()
    for kind in ("backup", "restore"):
        listed = ", ".join(f"{name} {seconds:.2f} ({cpu:.2f})" for name, seconds, cpu in s.restic_calls.get(kind, []))
        print(f"restic processes of the last {kind} flow, wall s (user CPU s): {listed}")
    print("bare restic: one process each (backup; restore --verify)")
    print(f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores")
    for failure in s.failures:
        print(f"FAILED {failure}")
    sys.stdout.flush()
