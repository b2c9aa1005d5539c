"""The trend report: RTO and RPO per scenario over time against the targets, and drills overdue.

A series is a scenario (runs without one are grouped by kind, e.g. "failover (no scenario)"). A
scenario is overdue when its last drill (completed or failed) is older than its `cadence_days`,
or when it has a cadence and was never drilled.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lifeline.tasks.report.charts import Point, trend_panel
from lifeline.tasks.report.document import (
    Chart,
    Document,
    Paragraph,
    Section,
    Table,
    render_template,
    to_html,
    to_markdown,
)
from lifeline.tasks.report.findings import RECOVERY_KINDS, plan_zone, scenario_of, seconds_text, when
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import RunRecord

FINISHED_DRILL = ("completed", "failed")
TREND_TABLE_ROWS = 12
VERDICTS = {True: "met", False: "missed", None: "—"}


@dataclass(frozen=True)
class DrillDue:
    scenario: str
    cadence_days: int | None
    last_drill: RunRecord | None
    due_at: datetime | None
    overdue: bool


def load_trend_records(ledger: Ledger, plan_name: str, last: int = 500) -> list[RunRecord]:
    """The plan's recent recovery runs, `last` of each kind (frequent verify runs would crowd them out otherwise);
    not the runs another run started (a drill's failback): the drill stands for them."""
    return [run for kind in RECOVERY_KINDS for run in ledger.runs(kind=kind, plan=plan_name, last=last, own_only=True)]


def series_name(record: RunRecord) -> str:
    return record.scenario or f"{record.kind} (no scenario)"


def trend_target(plan: Any, name: str, runs: Sequence[RunRecord], measure: str) -> float | None:
    """The scenario's target in the plan, else what its latest run was judged against, else the plan's."""
    minutes = getattr(getattr(scenario_of(plan, name), "targets", None), f"{measure}_minutes", None)
    if minutes is not None:
        return float(minutes) * 60
    recorded = [getattr(r, f"{measure}_target_seconds") for r in runs if getattr(r, f"{measure}_target_seconds")]
    if recorded:
        return recorded[-1]
    minutes = getattr(getattr(plan, "targets", None), f"{measure}_minutes", None)
    return None if minutes is None else float(minutes) * 60


def drills_due(records: Sequence[RunRecord], plan: Any, now: datetime) -> list[DrillDue]:
    scenarios = dict(getattr(plan, "scenarios", None) or {})
    drills = sorted((r for r in records if r.kind == "drill" and r.scenario and r.status in FINISHED_DRILL),
                    key=lambda r: r.started_at)
    names = list(scenarios) + sorted({r.scenario for r in drills if r.scenario not in scenarios})  # type: ignore[misc]
    due: list[DrillDue] = []
    for name in names:
        last = next((r for r in reversed(drills) if r.scenario == name), None)
        cadence = getattr(scenarios.get(name), "cadence_days", None)
        due_at = None if cadence is None else (last.started_at + timedelta(days=cadence) if last else now)
        due.append(DrillDue(name, cadence, last, due_at, due_at is not None and (last is None or now > due_at)))
    return due


def _points(runs: Sequence[RunRecord], measure: str, target: float | None, zone: Any) -> list[Point]:
    points = []
    for run in runs:
        seconds = getattr(run, f"{measure}_seconds")
        if seconds is None and run.status != "failed":
            continue
        missed = run.status == "failed" or (seconds is not None and target is not None and seconds > target)
        note = (f"{when(run.started_at, zone)} run {run.id}: {run.status}, {measure.upper()} {seconds_text(seconds)} "
                f"(target {seconds_text(target)})")
        points.append(Point(run.started_at, seconds, missed, note))
    return points


def _figures(groups: dict[str, list[RunRecord]], plan: Any, zone: Any) -> Section:
    every = [run for runs in groups.values() for run in runs]
    start, end = min(r.started_at for r in every), max(r.started_at for r in every)
    if end - start < timedelta(hours=1):
        start, end = start - timedelta(hours=12), end + timedelta(hours=12)
    blocks: list = []
    for name, runs in groups.items():
        panels = []
        for measure in ("rto", "rpo"):
            target = trend_target(plan, name, runs, measure)
            panels.append(trend_panel(f"{name}: {measure.upper()}", f"{name} {measure}",
                                      _points(runs, measure, target, zone), target, start, end))
        recent = runs[-TREND_TABLE_ROWS:][::-1]
        text = Table(("started", "run", "status", "RTO", "RPO", "targets"),
                     [(when(r.started_at, zone), f"`{r.id}`", r.status, seconds_text(r.rto_seconds),
                       seconds_text(r.rpo_seconds), VERDICTS[r.met_targets]) for r in recent])
        svg = render_template("figures.html", name=name, panels=panels)
        blocks.append(Chart(svg, f"`{name}`: {len(runs)} run(s); dashed line: target; red: missed or failed "
                                 f"(× when nothing was measured).", text))
    return Section("trend", "RTO and RPO per scenario", blocks)


def _summary(groups: dict[str, list[RunRecord]], plan: Any, zone: Any) -> Section:
    rows = []
    for name, runs in groups.items():
        rto = [r.rto_seconds for r in runs if r.rto_seconds is not None]
        judged = [r for r in runs if r.met_targets is not None]
        rows.append((f"`{name}`", str(len(runs)), when(runs[-1].started_at, zone), seconds_text(runs[-1].rto_seconds),
                     seconds_text(statistics.median(rto) if rto else None), seconds_text(max(rto, default=None)),
                     seconds_text(trend_target(plan, name, runs, "rto")), seconds_text(runs[-1].rpo_seconds),
                     seconds_text(trend_target(plan, name, runs, "rpo")),
                     f"{sum(1 for r in judged if r.met_targets)} of {len(judged)}"))
    header = ("scenario", "runs", "last run", "last RTO", "median RTO", "worst RTO", "RTO target", "last RPO",
              "RPO target", "targets met")
    return Section("summary", "Summary per scenario", [Table(header, rows)])


def _overdue(due: Sequence[DrillDue], plan: Any, now: datetime, zone: Any) -> Section:
    rows, classes = [], []
    for item in due:
        if item.cadence_days is None:
            state = "no cadence set"
        elif item.last_drill is None:
            state = "yes: never drilled"
        elif item.overdue:
            state = f"yes, by {seconds_text((now - item.due_at).total_seconds())}"  # type: ignore[operator]
        else:
            state = f"no: due in {seconds_text((item.due_at - now).total_seconds())}"  # type: ignore[operator]
        last = item.last_drill
        rows.append((f"`{item.scenario}`", "—" if item.cadence_days is None else f"{item.cadence_days} d",
                     when(last.started_at, zone) if last else "never", last.status if last else "—",
                     when(item.due_at, zone), state))
        classes.append("overdue" if item.overdue else "")
    blocks: list = [Table(("scenario", "cadence", "last drill", "last result", "due", "overdue"), rows, classes)]
    cron = getattr(getattr(plan, "schedules", None), "drill", None)
    blocks.insert(0, Paragraph(f"As of {when(now, zone)}. " + (
        f"Drills run on the plan's schedule `schedules.drill`: `{cron}`." if cron else
        "The plan schedules no drills (`schedules.drill`).")))
    return Section("overdue", "Drills overdue", blocks)


def trend(records: Sequence[RunRecord], plan: Any = None, now: datetime | None = None) -> Document:
    zone = plan_zone(plan)
    now = datetime.now(zone) if now is None else now if now.tzinfo else now.replace(tzinfo=UTC)
    runs = sorted((r for r in records if r.kind in RECOVERY_KINDS and r.status != "running"), key=lambda r: r.started_at)
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(series_name(run), []).append(run)
    due = drills_due(records, plan, now)
    plan_name = getattr(plan, "name", None) or (records[0].plan if records else "?")
    sections = [_figures(groups, plan, zone), _summary(groups, plan, zone)] if groups else [
        Section("trend", "RTO and RPO per scenario", [Paragraph("No recovery run in the ledger yet.")])]
    sections.append(_overdue(due, plan, now, zone))
    overdue = [item.scenario for item in due if item.overdue]
    if overdue:
        verdict = ("missed", f"{len(overdue)} drill(s) overdue")
    elif any(item.cadence_days is not None for item in due):
        verdict = ("met", "No drill overdue")
    else:
        verdict = ("unmeasured", "No drill cadence set")
    span = f"{len(runs)} run(s) from {when(runs[0].started_at, zone)} to {when(runs[-1].started_at, zone)}" if runs \
        else "no runs"
    return Document(f"Recovery trend: plan `{plan_name}`", f"{span} · as of {when(now, zone)} ({zone})", *verdict,
                    sections, f"Lifeline trend report from the ledger. Times in {zone}.")


def render_trend_html(records: Sequence[RunRecord], plan: Any = None, now: datetime | None = None) -> str:
    return to_html(trend(records, plan, now))


def render_trend_markdown(records: Sequence[RunRecord], plan: Any = None, now: datetime | None = None) -> str:
    return to_markdown(trend(records, plan, now))
