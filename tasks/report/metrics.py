"""Monitoring: Lifeline's state as Prometheus metrics (gauges), built from the ledger.

prometheus_client writes them in the text format to a file for node_exporter's textfile collector
(atomically: a temp file in the same folder, then a rename, so a scrape never sees half a file) and,
when a Pushgateway URL is configured, pushes them to the group `job=lifeline, plan=<plan>`.
Every sample carries the `plan` label. A metric with nothing to report yet (no drill of any scenario,
no failover) is left out rather than reported as zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import RunRecord, utc_now
from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway, write_to_textfile

JOB = "lifeline"
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


# --- the text format, the textfile and the Pushgateway: prometheus_client's own ------------------


def registry_of(metrics: list[Metric]) -> CollectorRegistry:
    """A registry of its own (never the process-wide one): each export holds exactly what the ledger says now."""
    registry = CollectorRegistry()
    for metric in metrics:
        labelnames = tuple(metric.samples[0].labels) if metric.samples else ()
        gauge = Gauge(metric.name, metric.help, labelnames=labelnames, registry=registry)
        for sample in metric.samples:
            (gauge.labels(**sample.labels) if labelnames else gauge).set(sample.value)
    return registry


def exposition(metrics: list[Metric]) -> str:
    return generate_latest(registry_of(metrics)).decode("utf-8")


def write_textfile(path: Path, registry: CollectorRegistry) -> None:
    """Atomically (a temp file beside it, then a rename): node_exporter reads only `*.prom`, so the temp file
    is never collected. The rename keeps the temp file's mode, which the umask decides: made readable after."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    os.chmod(path, 0o644)


def push(url: str, plan: str, registry: CollectorRegistry, timeout: float = 10.0) -> None:
    """PUT replaces the group's metrics at the Pushgateway: a metric gone from the ledger goes from there too."""
    push_to_gateway(url, job=JOB, registry=registry, grouping_key={"plan": plan}, timeout=timeout)


def export(ledger: Ledger, plan_name: str, *, textfile: Path | None = None, pushgateway_url: str | None = None,
           now: datetime | None = None, datasets: list[str] | None = None) -> str:
    """Collect, then write and push wherever configured; returns the text."""
    registry = registry_of(collect_metrics(ledger, plan_name, now, datasets))
    if textfile is not None:
        write_textfile(textfile, registry)
    if pushgateway_url:
        push(pushgateway_url, plan_name, registry)
    return generate_latest(registry).decode("utf-8")
