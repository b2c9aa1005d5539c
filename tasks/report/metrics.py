"""Monitoring: Lifeline's state as Prometheus metrics, built from the ledger.

The text exposition format (version 0.0.4) is written to a file for node_exporter's textfile
collector (atomically: a temp file in the same folder, then a rename, so a scrape never sees half
a file) and, when a Pushgateway URL is configured, pushed to `<url>/metrics/job/lifeline/plan/<plan>`.
Every sample carries the `plan` label. A metric with nothing to report yet (no drill of any scenario,
no failover) is left out rather than reported as zero.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import httpx
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import RunRecord, utc_now

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HISTORY = 400  # runs of each kind looked at: a year of nightly backups
BACKUP_STEP_PREFIX = "backup "


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass
class Metric:
    name: str
    help: str
    samples: list[Sample] = field(default_factory=list)
    type: str = "gauge"


def _timestamp(moment: datetime) -> float:
    return round(moment.timestamp(), 3)


def _backup_metrics(backups: list[RunRecord], plan: str) -> tuple[Metric, Metric, set[str]]:
    """Each dataset's newest completed `backup <dataset>` step, from records newest first."""
    last_success = Metric("lifeline_backup_last_success_timestamp_seconds",
                          "When the last successful backup of the dataset ended, as a Unix time.")
    last_duration = Metric("lifeline_backup_last_duration_seconds", "How long the last successful backup of the dataset took.")
    datasets: set[str] = set()
    for record in backups:
        for step in record.steps:
            if not step.name.startswith(BACKUP_STEP_PREFIX):
                continue
            dataset = step.name.removeprefix(BACKUP_STEP_PREFIX)
            if dataset in datasets or step.status != "completed" or step.ended_at is None:
                continue
            datasets.add(dataset)
            labels = {"plan": plan, "dataset": dataset}
            seconds = step.detail.get("seconds")
            last_success.samples.append(Sample(labels, _timestamp(step.ended_at)))
            last_duration.samples.append(Sample(labels, float(seconds) if seconds is not None else step.seconds or 0.0))
    datasets |= {s.name.removeprefix(BACKUP_STEP_PREFIX) for r in backups for s in r.steps
                 if s.name.startswith(BACKUP_STEP_PREFIX)}
    return last_success, last_duration, datasets


def _snapshot_age(ledger: Ledger, plan: str, datasets: set[str], now: datetime) -> Metric:
    metric = Metric("lifeline_snapshot_newest_age_seconds", "Age of the newest snapshot of the dataset the ledger recorded.")
    for dataset in sorted(datasets):
        recorded = ledger.snapshots_recorded(plan, dataset)
        if recorded:
            newest = max(fact.recorded_at for fact in recorded)
            metric.samples.append(Sample({"plan": plan, "dataset": dataset}, round((now - newest).total_seconds(), 3)))
    return metric


def _drill_metrics(drills: list[RunRecord], plan: str) -> list[Metric]:
    """Per scenario: the newest drill's time and verdict, and the newest measured RTO and RPO."""
    rto = Metric("lifeline_drill_last_rto_seconds", "RTO measured by the last drill of the scenario that measured it.")
    rpo = Metric("lifeline_drill_last_rpo_seconds", "RPO measured by the last drill of the scenario that measured it.")
    when = Metric("lifeline_drill_last_timestamp_seconds", "When the last drill of the scenario started, as a Unix time.")
    met = Metric("lifeline_drill_last_met_targets", "1 when the last drill of the scenario met its targets, else 0.")
    newest: dict[str, RunRecord] = {}
    measured: dict[str, dict[str, float]] = {rto.name: {}, rpo.name: {}}  # metric → scenario → seconds
    for record in drills:  # newest first
        if not record.scenario or record.status == "running":
            continue
        newest.setdefault(record.scenario, record)
        for metric, seconds in ((rto, record.rto_seconds), (rpo, record.rpo_seconds)):
            if seconds is not None:
                measured[metric.name].setdefault(record.scenario, seconds)
    for metric in (rto, rpo):
        metric.samples += [Sample({"plan": plan, "scenario": scenario}, float(seconds))
                           for scenario, seconds in measured[metric.name].items()]
    for scenario, record in newest.items():
        labels = {"plan": plan, "scenario": scenario}
        when.samples.append(Sample(labels, _timestamp(record.started_at)))
        if record.met_targets is not None:
            met.samples.append(Sample(labels, 1.0 if record.met_targets else 0.0))
    return [rto, rpo, when, met]


def _failover_metrics(failovers: list[RunRecord], plan: str) -> list[Metric]:
    status = Metric("lifeline_failover_last_status", "1 when the last failover completed, else 0; its status as a label.")
    when = Metric("lifeline_failover_last_timestamp_seconds", "When the last failover ended (or started), as a Unix time.")
    finished = next((record for record in failovers if record.status != "running"), None)
    if finished is not None:
        status.samples.append(Sample({"plan": plan, "status": finished.status},
                                     1.0 if finished.status == "completed" else 0.0))
        when.samples.append(Sample({"plan": plan}, _timestamp(finished.ended_at or finished.started_at)))
    return [status, when]


def collect_metrics(ledger: Ledger, plan_name: str, now: datetime | None = None,
                    datasets: list[str] | None = None) -> list[Metric]:
    """`datasets` adds the plan's datasets that no backup record names yet (for their snapshot age)."""
    now = now or utc_now()
    last_success, last_duration, seen = _backup_metrics(ledger.runs(kind="backup", plan=plan_name, last=HISTORY), plan_name)
    metrics = [last_success, last_duration, _snapshot_age(ledger, plan_name, seen | set(datasets or ()), now)]
    metrics += _drill_metrics(ledger.runs(kind="drill", plan=plan_name, last=HISTORY), plan_name)
    metrics += _failover_metrics(ledger.runs(kind="failover", plan=plan_name, last=5), plan_name)
    return [metric for metric in metrics if metric.samples]


# --- the text format ----------------------------------------------------------------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def exposition(metrics: list[Metric]) -> str:
    lines: list[str] = []
    for metric in metrics:
        lines += [f"# HELP {metric.name} {_escape_help(metric.help)}", f"# TYPE {metric.name} {metric.type}"]
        for sample in metric.samples:
            labels = ",".join(f'{name}="{_escape_label(value)}"' for name, value in sample.labels.items())
            lines.append(f"{metric.name}{{{labels}}} {_number(sample.value)}" if labels else
                         f"{metric.name} {_number(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""


def write_textfile(path: Path, text: str) -> None:
    """Atomically: node_exporter reads only `*.prom`, so the temp file beside it is never collected."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def push(url: str, plan: str, text: str, timeout: float = 10.0) -> None:
    """PUT replaces the group's metrics at the Pushgateway: a metric gone from the ledger goes from there too."""
    target = f"{url.rstrip('/')}/metrics/job/lifeline/plan/{quote(plan, safe='')}"
    response = httpx.put(target, content=text.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE}, timeout=timeout)
    response.raise_for_status()


def export(ledger: Ledger, plan_name: str, *, textfile: Path | None = None, pushgateway_url: str | None = None,
           now: datetime | None = None, datasets: list[str] | None = None) -> str:
    """Collect, then write and push wherever configured; returns the text."""
    text = exposition(collect_metrics(ledger, plan_name, now, datasets))
    if textfile is not None:
        write_textfile(textfile, text)
    if pushgateway_url:
        push(pushgateway_url, plan_name, text)
    return text
