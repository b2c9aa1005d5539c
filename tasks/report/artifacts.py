"""Run records as tables and Markdown, for artifacts and the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from lifeline.tasks.report.document import markdown_text
from lifeline.tasks.report.findings import when
from lifeline.tasks.run.deliveries import Delivery
from lifeline.tasks.run.record import RunRecord


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


UTC = ZoneInfo("UTC")


def _at(moment: datetime | None, zone: ZoneInfo) -> str:
    return "" if moment is None else when(moment, zone)


def record_table(record: RunRecord, zone: ZoneInfo = UTC) -> list[dict[str, object]]:
    """The steps, one row each, with the run's figures in a first row; times in `zone` (the plan's), labelled."""
    started, ended = f"started ({zone.key})", f"ended ({zone.key})"
    rows: list[dict[str, object]] = [
        {
            "step": f"{record.kind} run {record.id}",
            "status": record.status,
            started: _at(record.started_at, zone),
            ended: _at(record.ended_at, zone),
            "seconds": round((record.ended_at - record.started_at).total_seconds(), 3) if record.ended_at else None,
            "attempts": "",
            "detail": (
                f"RTO {_seconds(record.rto_seconds)} / target {_seconds(record.rto_target_seconds)}; "
                f"RPO {_seconds(record.rpo_seconds)} / target {_seconds(record.rpo_target_seconds)}; "
                f"bytes {record.bytes}; snapshots {', '.join(s[:8] for s in record.snapshots) or '—'}"
            ),
        }
    ]
    for step in record.steps:
        rows.append(
            {
                "step": step.name,
                "status": step.status,
                started: _at(step.started_at, zone),
                ended: _at(step.ended_at, zone),
                "seconds": round(step.seconds, 3) if step.seconds is not None else None,
                "attempts": step.attempts,
                "detail": ", ".join(f"{key}={value}" for key, value in step.detail.items() if key != "row_counts"),
            }
        )
    return rows


def record_markdown(record: RunRecord, zone: ZoneInfo = UTC) -> str:
    verdict = {True: "met", False: "**missed**", None: "not measured"}[record.met_targets]
    lines = [
        f"# {record.kind.capitalize()} of plan `{record.plan}`: {record.status}",
        "",
        f"- Run `{record.id}`, triggered by {record.trigger}, plan sha256 `{record.plan_sha256[:12]}`",
        f"- Started {_at(record.started_at, zone)}, ended {_at(record.ended_at, zone) or '—'} ({zone.key})",
        f"- RTO {_seconds(record.rto_seconds)} (target {_seconds(record.rto_target_seconds)}), "
        f"RPO {_seconds(record.rpo_seconds)} (target {_seconds(record.rpo_target_seconds)}): targets {verdict}",
    ]
    if record.affected_customers is not None:
        lines.append(f"- Affected customers: {record.affected_customers} ({record.impact_source})")
    if record.cost is not None:
        lines.append(f"- Cost: {record.cost:,.2f} {record.currency or ''}")
    if record.error:
        lines.append(f"- Error: {markdown_text(record.error)}")
    lines += ["", "| step | status | seconds | attempts |", "|---|---|---|---|"]
    for step in record.steps:
        lines.append(f"| {step.name} | {step.status} | {_seconds(step.seconds)} | {step.attempts} |")
    return "\n".join(lines)


def deliveries_table(deliveries: Sequence[Delivery], zone: ZoneInfo = UTC) -> list[dict[str, object]]:
    """Every delivery attempt, one row each; recipients are masked already; times in `zone`, labelled."""
    return [
        {f"at ({zone.key})": _at(delivery.at, zone), "message": delivery.message_id, "event": delivery.event,
         "level": delivery.level or "", "audience": delivery.audience, "contact": delivery.contact,
         "channel": delivery.channel, "recipient": delivery.recipient, "status": delivery.status,
         "attempt": delivery.attempt, "fallback": delivery.fallback, "seconds": delivery.latency_seconds,
         "answer": delivery.answer}
        for delivery in deliveries
    ]
