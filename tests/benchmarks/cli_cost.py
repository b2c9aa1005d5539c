"""The fixed cost of a CLI run: `lifeline backup` of a tiny dataset, as a whole process, minus `restic backup`
of the same data: Prefect's temporary server per command with prune and check in every run (before), and
Lifeline's background server with prune and check only when due (after), measured side by side in one run.

    uv run python -m tests.benchmarks.run cli_cost [--rounds 3] [--kib 100]

Where the time goes is read from each run's record: the run's steps (prepare, backup, prune, check) against
the rest (the interpreter, imports, Prefect's flow and task runs, the ledger), next to the bare interpreter
and a bare `import prefect`, the floor of any process that runs a Prefect flow. Goal (issue 12): <= 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from tests.benchmarks.common import bench_tmpdir, cli_argv, log, median, print_table, run_timed, spread
from tests.servers import free_port

GOAL_SECONDS = 1.5


def prepare(folder: Path, kib: int) -> tuple[Path, Path, Path]:
    data = folder / "data"
    data.mkdir()
    (data / "calls.csv").write_bytes(os.urandom(kib * 1024))
    password = folder / "restic.pw"
    password.write_text("bench-password-0123456789\n")
    password.chmod(0o600)
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "cli-cost", "timezone": "UTC",
        "repositories": {"local": {"url": str(folder / "repo"), "password_file": str(password), "init": True}},
        "datasets": {"files": {"repository": "local", "paths": [str(data)]}},
    }))
    return data, password, plan


def environment(folder: Path, port: int, prefect: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_HOME")}
    env.update({"LIFELINE_HOME": str(folder / "home"), "LIFELINE_SERVER_PORT": str(port), "LIFELINE_PREFECT": prefect,
                "PREFECT_HOME": str(folder / "prefect-temporary")})
    return env


MODES: dict[str, tuple[str, str, tuple[str, ...]]] = {  # label, LIFELINE_PREFECT, extra arguments
    "before": ("lifeline backup, temporary server per command, prune+check every run (before)", "ephemeral",
               ("--maintain",)),
    "background-maintain": ("lifeline backup, background server, prune+check every run", "background",
                            ("--maintain",)),
    "after": ("lifeline backup, background server, prune+check when due (after)", "background", ()),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cli_cost")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kib", type=int, default=100)
    options = parser.parse_args(argv)
    samples: dict[str, list[float]] = {name: [] for name in ("restic", "python", "import prefect", *MODES)}
    inside: dict[str, list[float]] = {name: [] for name in MODES}
    with bench_tmpdir("cli-cost") as folder:
        data, password, plan = prepare(folder, options.kib)
        port = free_port()
        lifeline = [*cli_argv(), "backup", "--plan", str(plan), "--json"]
        background = environment(folder, port, "background")
        started = run_timed([*cli_argv(), "server", "start"], background).check("lifeline server start")
        log(f"background server started in {started.seconds:.1f} s (once; not in the figures)")
        run_timed(lifeline, background).check("warm-up backup")  # creates the repository, warms the caches
        try:
            for round_number in range(options.rounds):
                log(f"round {round_number + 1}/{options.rounds}")
                restic = run_timed(["restic", "-r", str(folder / "repo"), "--password-file", str(password), "backup",
                                    "-q", str(data)], {**os.environ, "RESTIC_CACHE_DIR": str(folder / "cache")})
                samples["restic"].append(restic.check("restic backup").seconds)
                samples["python"].append(run_timed([sys.executable, "-c", "pass"]).check("python").seconds)
                samples["import prefect"].append(
                    run_timed([sys.executable, "-c", "import prefect"]).check("import prefect").seconds)
                for name, (_, prefect, extra) in MODES.items():
                    run = run_timed([*lifeline, *extra], environment(folder, port, prefect)).check(name)
                    samples[name].append(run.seconds)
                    inside[name].append(step_seconds(json.loads(run.stdout)))
        finally:
            run_timed([*cli_argv(), "server", "stop"], background)
    restic_median = median(samples["restic"])
    rows = [["restic backup alone", restic_median, spread(samples["restic"]), "", "", ""],
            ["python -c pass (the interpreter)", median(samples["python"]), spread(samples["python"]), "", "", ""],
            ["python -c 'import prefect'", median(samples["import prefect"]), spread(samples["import prefect"]),
             "", "", ""]]
    for name, (label, _, _) in MODES.items():
        wall, steps = median(samples[name]), median(inside[name])
        rows.append([label, wall, spread(samples[name]), f"+{wall - restic_median:.2f}", steps, wall - steps])
    fixed = median(samples["after"]) - restic_median
    print_table(["command (whole process)", "seconds", "spread", "fixed cost", "in steps", "the rest"], rows,
                title=f"CLI fixed cost, {options.kib} KiB dataset (median of {options.rounds}; goal: fixed cost "
                      f"<= {GOAL_SECONDS} s)",
                notes=[f"fixed cost after: {fixed:.2f} s ({'met' if fixed <= GOAL_SECONDS else 'NOT met'}); "
                       "'in steps': the run's own steps, end to end (prepare, backup with its snapshot listing, "
                       "prune, check); 'the rest': the interpreter, imports, Prefect's flow run, the ledger"])
    return 0 if fixed <= GOAL_SECONDS else 1


def step_seconds(record: dict) -> float:
    """The time the run's steps took, end to end (they run one after another for one dataset)."""
    from datetime import datetime

    spans = [(datetime.fromisoformat(step["started_at"]), datetime.fromisoformat(step["ended_at"]))
             for step in record["steps"] if step.get("ended_at")]
    return sum((ended - started).total_seconds() for started, ended in spans)
