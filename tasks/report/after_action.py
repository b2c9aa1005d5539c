"""After-action reports of one run, and the trend of RTO and RPO across runs, as HTML and Markdown.

Each report is built once as a `Document` (tasks/report/document.py) and written out twice:
`render_html` gives one self-contained page (inline CSS, charts as inline SVG), `render_markdown`
the same content for a Prefect artifact. The plan is optional; when given, `plan.scenarios`
describes scenarios and their drill cadence and `plan.timezone` is the zone times are shown in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from lifeline.tasks.report.charts import Bar, Marker, Measure, against_targets, calls_per_second, waterfall
from lifeline.tasks.report.document import (
    Bullets,
    Chart,
    Document,
    Facts,
    Paragraph,
    Section,
    Table,
    to_html,
    to_markdown,
)
from lifeline.tasks.report.findings import (
    RECOVERY_KINDS,
    evidence,
    findings,
    plan_zone,
    scenario_of,
    scenario_target_seconds,
    seconds_text,
    step_kind,
    value_text,
    when,
)
from lifeline.tasks.report.trend import load_trend_records, render_trend_html, render_trend_markdown, trend
from lifeline.tasks.run.deliveries import Acknowledgement, Delivery
from lifeline.tasks.run.ledger import Deliveries, Ledger
from lifeline.tasks.run.record import RunRecord

__all__ = ["after_action", "load_history", "load_trend_records", "render_html", "render_markdown", "render_trend_html",
           "render_trend_markdown", "trend"]

KIND_PURPOSE = {
    "backup": "Keep a recent, verified copy of every dataset, so that an incident loses no more data than the RPO "
              "allows.",
    "restore": "Put verified data back in place from the last good snapshot, within the RTO and losing no more than "
               "the RPO.",
    "failover": "Move the call centre's service to the standby site within the RTO, losing no more data than the RPO.",
    "failback": "Bring service home to the main site after a failover, keeping every call taken meanwhile.",
    "verify": "Prove that the call centre's critical services answer at a site.",
    "drill": "Rehearse a scenario of the emergency plan and time the recovery against the targets.",
    "alert": "Prepare for a warning before the damage, as the plan's preparedness says for its kind; tell the liaison "
             "and leadership; tell the public once a person approved the text.",
}
TRIGGERS = {"schedule": "the plan's schedule", "ui": "a person, from the Prefect UI",
            "cli": "a person, from the command line", "intake": "a warning posted to `lifeline intake`"}
IMPACT_SOURCES = {"call_log": "counted in the call log", "model": "modelled: customers per hour × outage hours"}
SCENARIO_FIELDS = ("description", "fault", "recovery", "checks", "targets", "cadence_days")
HISTORY_ROWS = 10


def load_history(ledger: Ledger, record: RunRecord, last: int = 100) -> list[RunRecord]:
    """The plan's earlier runs of the same kind: what the report compares this run with."""
    return [r for r in ledger.runs(kind=record.kind, plan=record.plan, last=last + 1) if r.id != record.id][:last]


def run_targets(record: RunRecord, plan: Any) -> dict[str, float | None]:
    """What the run was judged against; for a recovery that never got that far, what it would have been."""
    recovery = record.kind in RECOVERY_KINDS
    return {
        measure: recorded if recorded is not None else scenario_target_seconds(plan, record.scenario, measure) if recovery
        else None
        for measure, recorded in (("rto", record.rto_target_seconds), ("rpo", record.rpo_target_seconds))
    }


def _describe(value: Any) -> str:
    if hasattr(value, "rto_minutes") or hasattr(value, "rpo_minutes"):
        minutes = {label: getattr(value, f"{label.lower()}_minutes", None) for label in ("RTO", "RPO")}
        return ", ".join(f"{label} {seconds_text(m * 60)}" for label, m in minutes.items() if m is not None)
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_describe(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_describe(item) for item in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return _describe(dict(vars(value)))
    return str(value)


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count:.1f} TiB"


def _since(moment: datetime, origin: datetime) -> str:
    seconds = (moment - origin).total_seconds()
    return ("+" if seconds >= 0 else "") + seconds_text(seconds)


# --- the after-action report --------------------------------------------------------------------


def _header(record: RunRecord, zone: tzinfo) -> tuple[str, str, str, str]:
    what = f"{record.kind} `{record.scenario}`" if record.scenario else f"{record.kind} of plan `{record.plan}`"
    subtitle = (f"Plan `{record.plan}` · run `{record.id}` · {record.status} · started {when(record.started_at, zone)} "
                f"({zone})")
    if record.status in ("failed", "cancelled"):
        verdict = ("failed", f"Run {record.status}")
    else:
        verdict = {True: ("met", "Targets met"), False: ("missed", "Targets missed")}.get(
            record.met_targets, ("unmeasured", "Targets not measured"))
    return f"After-action report: {what}", subtitle, *verdict


def _introduction(record: RunRecord, plan: Any, targets: dict[str, float | None]) -> list[Section]:
    scenario = scenario_of(plan, record.scenario)
    purpose = getattr(scenario, "objective", None) or getattr(scenario, "description", None) or KIND_PURPOSE.get(
        record.kind, f"A {record.kind} run.")
    objective = Section("objective", "Objective", [Paragraph(purpose), Facts([
        ("RTO target", seconds_text(targets["rto"])), ("RPO target", seconds_text(targets["rpo"]))])])
    if record.kind == "alert":
        about: list = [Paragraph(f"The warning: `{record.scenario}` (kind, message type; the `match sites` step "
                                 "holds its key, severity and the sites it concerns).")]
    elif record.scenario is None:
        about = [Paragraph(f"No scenario: a {record.kind} run, not a drill.")]
    elif scenario is None:
        about = [Facts([("name", f"`{record.scenario}`"), ("in the plan", "no: the plan does not define it (now)")])]
    else:
        pairs = [("name", f"`{record.scenario}`")]
        pairs += [(name.replace("_", " "), _describe(getattr(scenario, name))) for name in SCENARIO_FIELDS
                  if getattr(scenario, name, None) not in (None, [], {}, "")]
        about = [Facts(pairs)]
    return [objective, Section("scenario", "Scenario", about)]


def _plan_version(record: RunRecord, history: Sequence[RunRecord], zone: tzinfo) -> Section:
    same = [r for r in history if r.plan_sha256 == record.plan_sha256] + [record]
    pairs = [("plan", f"`{record.plan}`"), ("sha256", f"`{record.plan_sha256}`"),
             ("in use since", f"{when(min(r.started_at for r in same), zone)} ({len(same)} {record.kind} run(s) "
                              "in the history)")]
    previous = max((r for r in history if r.started_at < record.started_at), key=lambda r: r.started_at, default=None)
    if previous is not None:
        changed = previous.plan_sha256 != record.plan_sha256
        pairs.append(("since the previous run", f"changed: run `{previous.id}` used `{previous.plan_sha256[:12]}`"
                      if changed else "unchanged"))
    return Section("plan-version", "Plan version", [Facts(pairs)])


def _trigger(record: RunRecord, plan: Any, zone: tzinfo) -> Section:
    who = TRIGGERS.get(record.trigger, record.trigger)
    cron = getattr(getattr(plan, "schedules", None), record.kind, None)
    if record.trigger == "schedule" and isinstance(cron, str):
        who += f" (`schedules.{record.kind}`: `{cron}`)"
    pairs = [("triggered by", who)]
    approval = next((s for s in record.steps if s.name == "approval" and "operator" in s.detail), None)
    if approval is not None:
        detail = approval.detail
        verdict = "approved" if detail.get("approved") else "rejected"
        pairs.append(("approval", f"{verdict} by {detail['operator']} after {seconds_text(detail.get('waited_seconds'))}"
                      + (f": {detail['reason']}" if detail.get("reason") else "")))
    took = (record.ended_at - record.started_at).total_seconds() if record.ended_at else None
    pairs += [("started", when(record.started_at, zone)), ("ended", when(record.ended_at, zone)),
              ("duration", seconds_text(took))]
    if record.error:
        pairs.append(("error", record.error))
    return Section("trigger", "Trigger", [Facts(pairs)])


def _origin(record: RunRecord) -> datetime:
    return min([record.started_at, *(s.started_at for s in record.steps), *record.milestones.values()]
               + ([record.incident_at] if record.incident_at else []))


def _step_log(record: RunRecord, zone: tzinfo, origin: datetime) -> Section:
    rows, classes = [], []
    for step in record.steps:
        result = step.status + (f": {step.detail['error']}" if step.status == "failed" and step.detail.get("error") else "")
        detail = "; ".join(f"{key}={value_text(value, 60)}" for key, value in step.detail.items() if key != "error")
        rows.append((f"`{step.name}`", step.started_at.astimezone(zone).strftime("%H:%M:%S"),
                     _since(step.started_at, origin), seconds_text(step.seconds), str(step.attempts), result,
                     value_text(detail, 240) if detail else ""))
        kind = "warning" if step_kind(step) == "completed" and (step.detail.get("warning") or step.detail.get("warnings")) \
            else step_kind(step)
        classes.append(kind if kind in ("failed", "retried", "warning", "skipped") else "")
    milestones = sorted(record.milestones.items(), key=lambda item: item[1])
    since_incident = record.incident_at or record.started_at
    return Section("step-log", "Step log", [
        Table(("step", "started", "at", "took", "attempts", "result", "detail"), rows, classes),
        Table(("milestone", "time", "at", "since incident"),
              [(name, when(at, zone), _since(at, origin), _since(at, since_incident)) for name, at in milestones]),
    ])


def _waterfall(record: RunRecord, origin: datetime) -> Section:
    last_known = max([record.ended_at or record.started_at, *record.milestones.values(),
                      *(s.ended_at or s.started_at for s in record.steps)])
    bars = [Bar(s.name, (s.started_at - origin).total_seconds(), ((s.ended_at or last_known) - origin).total_seconds(),
                step_kind(s), f"{s.attempts} attempt(s), {s.status}") for s in record.steps]
    moments = dict(record.milestones)
    if record.incident_at is not None:
        moments.setdefault("incident", record.incident_at)
    markers = [Marker(name, (at - origin).total_seconds()) for name, at in moments.items()]
    text = Table(("step", "from", "to", "status"),
                 [(b.label, f"+{seconds_text(b.start_seconds)}", f"+{seconds_text(b.end_seconds)}", b.status) for b in bars])
    svg = waterfall(bars, markers, (last_known - origin).total_seconds())
    return Section("waterfall", "Waterfall", [Chart(svg, "Each bar runs from a step's start to its end; failed steps "
                                                    "red, retried amber; dashed lines are milestones.", text)])


def _verdict(measured: float | None, target: float | None) -> str:
    if measured is None:
        return "not measured"
    if target is None:
        return "no target"
    return f"met ({seconds_text(target - measured)} to spare)" if measured <= target else \
        f"missed by {seconds_text(measured - target)}"


def _targets(record: RunRecord, targets: dict[str, float | None], zone: tzinfo) -> Section:
    rows = [(label, seconds_text(measured), seconds_text(target), _verdict(measured, target))
            for label, measured, target in (("RTO", record.rto_seconds, targets["rto"]),
                                            ("RPO", record.rpo_seconds, targets["rpo"]))]
    chart = against_targets([Measure("RTO", record.rto_seconds, targets["rto"]),
                             Measure("RPO", record.rpo_seconds, targets["rpo"])])
    return Section("targets", "RTO and RPO against targets", [
        Table(("measure", "measured", "target", "verdict"), rows), Chart(chart),
        Facts([("incident at", when(record.incident_at, zone)), ("recovered at", when(record.recovered_at, zone))]),
    ])


def _evidence(record: RunRecord) -> Section:
    found = evidence(record)
    if not found:
        return Section("evidence", "Data-integrity evidence", [Paragraph("No step recorded data-integrity evidence.")])
    return Section("evidence", "Data-integrity evidence", [
        Table(("step", "evidence", "value"),
              [(f"`{s.name}`", f"`{key}`", value_text(value, 400)) for s, key, value in found])])


def _impact(record: RunRecord, zone: tzinfo) -> Section:
    outage = (record.recovered_at - record.incident_at).total_seconds() if record.recovered_at and record.incident_at \
        else None
    customers = "—" if record.affected_customers is None else f"{record.affected_customers:,}" + (
        f" ({IMPACT_SOURCES.get(record.impact_source, record.impact_source)})" if record.impact_source else "")
    cost = "—" if record.cost is None else f"{record.cost:,.2f} {record.currency or ''}".strip()
    return Section("impact", "Affected customers and cost", [Facts([
        ("outage", f"{seconds_text(outage)} ({when(record.incident_at, zone)} → {when(record.recovered_at, zone)})"
         if outage is not None else "—"),
        ("affected customers", customers), ("cost", cost), ("data written", _size(record.bytes) if record.bytes else "—"),
        ("snapshots", ", ".join(f"`{s[:12]}`" for s in record.snapshots) or "—"),
    ])])


def _calls(record: RunRecord) -> list[Section]:
    """Calls per second by outcome and site across the incident, from the call log (the measure step keeps them)."""
    series = next((s.detail["calls_per_second"] for s in record.steps if s.detail.get("calls_per_second")), None)
    if not series or not series.get("counts"):
        return []
    start = datetime.fromisoformat(series["start"])
    moments = {**record.milestones, **({"incident": record.incident_at} if record.incident_at else {})}
    markers = [Marker(name, (at - start).total_seconds()) for name, at in moments.items()
               if name in ("incident", "fenced", "promoted", "dns_switched", "calls_routed", "agents_ready", "recovered")]
    counts: dict[str, list[int]] = series["counts"]
    text = Table(("calls", "count"), [(kind, str(sum(values))) for kind, values in counts.items()])
    return [Section("calls", "Calls per second", [Chart(
        calls_per_second(counts, markers), "Every call customers placed, each second from 20 s before the incident: "
        "answered (by site), abandoned and failed; dashed lines are milestones.", text)])]


def _history(record: RunRecord, history: Sequence[RunRecord], zone: tzinfo) -> Section:
    earlier = sorted((r for r in history if r.id != record.id and r.scenario == record.scenario
                      and r.started_at < record.started_at), key=lambda r: r.started_at, reverse=True)[:HISTORY_ROWS]
    verdicts = {True: "met", False: "missed", None: "—"}
    rows = [(when(r.started_at, zone), f"`{r.id}`", r.status, seconds_text(r.rto_seconds), seconds_text(r.rpo_seconds),
             verdicts[r.met_targets]) for r in earlier]
    if not rows:
        return Section("history", "Earlier runs", [Paragraph("No earlier run of this kind and scenario in the ledger.")])
    return Section("history", "Earlier runs", [Table(("started", "run", "status", "RTO", "RPO", "targets"), rows)])


def _child_runs(children: Sequence[RunRecord], zone: tzinfo) -> Section:
    rows = [(r.kind, f"`{r.id}`", r.status, when(r.started_at, zone), seconds_text(r.rto_seconds)) for r in children]
    return Section("child-runs", "Runs this run started", [
        Paragraph("Each has its own record and after-action report (`lifeline report --run <id>`)."),
        Table(("kind", "run", "status", "started", "RTO"), rows,
              ["failed" if r.status in ("failed", "cancelled") else "" for r in children])])


def _communications(record: RunRecord, plan: Any, told: Sequence[Delivery], acknowledged: Acknowledgement | None,
                    zone: tzinfo) -> Section:
    target = getattr(getattr(plan, "targets", None), "notify_minutes", None)
    lines = []
    if "notified" in record.milestones and "declared" in record.milestones:
        took = (record.milestones["notified"] - record.milestones["declared"]).total_seconds()
        verdict = "" if target is None else (" (target met)" if took <= target * 60 else " (target MISSED)")
        lines.append(f"Time to notify the liaison: {seconds_text(took)} against a target of "
                     f"{'—' if target is None else f'{target:g} min'}{verdict}.")
    else:
        lines.append("The liaison was not notified of an incident by this run.")
    fallbacks = sorted({d.contact for d in told if d.fallback and d.status in ("delivered", "confirmed")})
    lines.append(f"Fallback channel needed for: {', '.join(fallbacks)}." if fallbacks else "No fallback was needed.")
    lines.append(f"Acknowledged by {acknowledged.contact} ({acknowledged.via}) at {when(acknowledged.at, zone)}."
                 if acknowledged else "Nobody acknowledged this run.")
    cut_off = [d for d in told if d.status == "sending"]
    if cut_off:
        lines.append(f"Cut off while sending (the process died; counted as told, not sent again): "
                     f"{', '.join(sorted({d.contact for d in cut_off}))}.")
    rows = [(when(d.at, zone), d.event, d.audience, d.contact, d.channel, d.recipient,
             "cut off" if d.status == "sending" else d.status, str(d.attempt),
             "" if d.level is None else str(d.level)) for d in told]
    return Section("communications", "Communications", [
        Bullets(lines, "communications"),
        Table(("at", "event", "audience", "contact", "channel", "recipient", "status", "attempt", "level"), rows,
              ["failed" if d.status == "failed" else "" for d in told])])


def after_action(record: RunRecord, plan: Any = None, history: Sequence[RunRecord] = (),
                 children: Sequence[RunRecord] = (), told: Sequence[Delivery] = (),
                 acknowledged: Acknowledgement | None = None) -> Document:
    """`children`: the runs this one started (a drill's failback), listed in a section of their own;
    `told`: every delivery attempt of the run's messages."""
    zone, origin, targets = plan_zone(plan), _origin(record), run_targets(record, plan)
    found = findings(record, targets, history)
    actions = list(dict.fromkeys(f.action for f in found if f.action))
    title, subtitle, verdict, verdict_text = _header(record, zone)
    sections = [
        *_introduction(record, plan, targets), _plan_version(record, history, zone), _trigger(record, plan, zone),
        _step_log(record, zone, origin), *([_child_runs(children, zone)] if children else []),
        _waterfall(record, origin), _targets(record, targets, zone),
        _evidence(record), _impact(record, zone), *_calls(record),
        *([_communications(record, plan, told, acknowledged, zone)] if told else []),
        Section("deviations", "Deviations", [Bullets([f.deviation for f in found] or ["None recorded."], "deviations")]),
        Section("corrective-actions", "Corrective actions", [Bullets(actions or ["None needed."], "actions")]),
        _history(record, history, zone),
    ]
    return Document(title, subtitle, verdict, verdict_text, sections,
                    f"Lifeline after-action report of run {record.id}, from its ledger record. Times in {zone}.")


def communications_of(ledger: Ledger, record: RunRecord) -> tuple[list[Delivery], Acknowledgement | None]:
    """The run's delivery attempts and its acknowledgement, as the report's last two arguments take them."""
    deliveries = Deliveries(ledger)
    told = sorted(deliveries.of_run(record.id, with_cut_off=True), key=lambda delivery: delivery.at)
    return told, deliveries.acknowledgement(record.id)


def render_html(record: RunRecord, plan: Any = None, history: Sequence[RunRecord] = (),
                children: Sequence[RunRecord] = (), told: Sequence[Delivery] = (),
                acknowledged: Acknowledgement | None = None) -> str:
    return to_html(after_action(record, plan, history, children, told, acknowledged))


def render_markdown(record: RunRecord, plan: Any = None, history: Sequence[RunRecord] = (),
                    children: Sequence[RunRecord] = (), told: Sequence[Delivery] = (),
                    acknowledged: Acknowledgement | None = None) -> str:
    return to_markdown(after_action(record, plan, history, children, told, acknowledged))
