"""Report benchmark: an after-action report with 100 runs of history, and the trend report over 100 runs.

    uv run python -m tests.benchmarks.report [--rounds N] [--history N] [--keep FILE.html]

The ledger is a SQLite file in a temp dir holding 100 drills of five scenarios (each with a dozen steps,
milestones and evidence, like a real drill's record), plus the nightly backups and frequent verify runs
that share the ledger with them. Timed, loading from the ledger included: the after-action report of
the newest drill (its record and 100 earlier drills, then HTML and Markdown), and the trend report (the
recovery runs, then HTML and Markdown). Goal: each total <= 2 s. The table shows the median of N rounds
after a warm-up round, whose time is shown too ("first": it includes opening the database).
"""

from __future__ import annotations

import argparse
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

from lifeline.tasks.report.after_action import (
    load_history,
    load_trend_records,
    render_html,
    render_markdown,
    render_trend_html,
    render_trend_markdown,
)
from lifeline.tasks.report.metrics import collect_metrics, exposition
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import RunRecord, Step

from tests.benchmarks.common import bench_tmpdir, log, median, print_table, quiet_prefect_environment, spread, timed
from tests.report_records import PLAN, SHA, START, backup_record, fake_plan, site_loss_drill

GOAL_SECONDS = 2.0
SCENARIOS = ("site-loss", "network-outage", "system-crash", "data-corruption", "data-leak")
NOISE_VERIFY_RUNS = 300
NOISE_BACKUPS = 60


def fill_ledger(ledger: Ledger, history: int) -> str:
    """`history` + 1 drills, newest last; returns the newest drill's id."""
    jitter = random.Random(6)
    newest = ""
    for index in range(history + 1):
        start = START - timedelta(days=3 * (history - index))
        record = site_loss_drill(start, run_id=f"drill{index:07d}")
        record.scenario = SCENARIOS[index % len(SCENARIOS)]
        record.rto_seconds = round(600 + jitter.uniform(-200, 500), 1)
        record.rpo_seconds = round(jitter.uniform(0, 400), 1)
        record.met_targets = record.rto_seconds <= 900 and record.rpo_seconds <= 300
        record.status = "completed" if index % 7 else "failed"
        ledger.save_run(record)
        newest = record.id
    for index in range(NOISE_BACKUPS):
        ledger.save_run(backup_record(START - timedelta(days=index), run_id=f"backup{index:06d}"))
    for index in range(NOISE_VERIFY_RUNS):
        begin = START - timedelta(minutes=5 * index)
        ledger.save_run(RunRecord(
            id=f"verify{index:06d}", kind="verify", plan=PLAN, plan_sha256=SHA, trigger="schedule", status="completed",
            started_at=begin, ended_at=begin + timedelta(seconds=2),
            steps=[Step(name="verify main", started_at=begin, ended_at=begin + timedelta(seconds=2), status="completed",
                        detail={"site": "main", "rounds": 1, "healthy_in_a_row": 1})]))
    return newest


def after_action_report(ledger: Ledger, run_id: str, plan: object, history: int) -> tuple[str, str]:
    record = ledger.run(run_id)
    earlier = load_history(ledger, record, last=history)
    assert len(earlier) == history, len(earlier)
    return render_html(record, plan, earlier), render_markdown(record, plan, earlier)


def trend_report(ledger: Ledger, plan: object, now: datetime, history: int) -> tuple[str, str]:
    records = load_trend_records(ledger, PLAN, last=history)
    assert len(records) == history, len(records)
    return render_trend_html(records, plan, now), render_trend_markdown(records, plan, now)


def run(home: Path, rounds: int, history: int, keep: Path | None) -> list[list]:
    ledger = Ledger(f"sqlite:///{home}/ledger.db")
    newest = fill_ledger(ledger, history)
    log(f"ledger: {history + 1} drills, {NOISE_BACKUPS} backups, {NOISE_VERIFY_RUNS} verify runs")
    plan, now = fake_plan(), START + timedelta(days=1)
    variants = {
        "after-action (load + HTML + Markdown)": lambda: after_action_report(ledger, newest, plan, history),
        f"trend over {history} runs (load + HTML + Markdown)": lambda: trend_report(ledger, plan, now, history),
        "metrics (collect + exposition)": lambda: (exposition(collect_metrics(ledger, PLAN, now)), ""),
    }
    rows = []
    for name, function in variants.items():
        times = [timed(function) for _ in range(rounds + 1)]
        first, (html, markdown) = times[0]
        seconds = [elapsed for elapsed, _ in times[1:]]
        goal = GOAL_SECONDS if not name.startswith("metrics") else None
        verdict = "" if goal is None else "ok" if median(seconds) <= goal else "SLOW"
        rows.append([name, median(seconds), spread(seconds), first, len(html) // 1024, len(markdown) // 1024,
                     goal, verdict])
        if keep is not None and name.startswith("after-action"):
            keep.write_text(html)
            log(f"after-action report kept at {keep}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--history", type=int, default=100, help="earlier runs in the report (and runs in the trend)")
    parser.add_argument("--keep", type=Path, help="write the benchmarked after-action report's HTML here")
    arguments = parser.parse_args(argv)
    quiet_prefect_environment()
    with bench_tmpdir("lifeline-bench-report-") as home:
        rows = run(home, arguments.rounds, arguments.history, arguments.keep)
    print_table(
        ["report", "median s", "spread s", "first s", "HTML KiB", "MD KiB", "goal s", "verdict"], rows,
        title=f"Reports from a SQLite ledger, {arguments.history} runs of history, {arguments.rounds} rounds",
        notes=["Times include loading the records from the ledger. first: the warm-up round (opens the database)."],
        digits=3,
    )
    return 0 if all(row[-1] != "SLOW" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
