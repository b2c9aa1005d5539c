"""The figures of a recovery run: RTO, RPO from data, affected customers and cost (README.md, "The run record")."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from lifeline.configs.plan import Plan
from lifeline.tasks.adapters import replication
from lifeline.tasks.run import impact
from lifeline.tasks.run.adapter_inputs import replicated_database
from lifeline.tasks.run.record import RunRecord, Step, utc_now

LOST_CALL_LOOKBACK = timedelta(hours=1)
CALL_CHART_MARGIN = timedelta(seconds=20)  # calls before the incident the chart shows


def recorded_incident_time(path: Path) -> datetime | None:
    """Earliest time in a {fault: ISO time} file; None when the file is absent or empty."""
    try:
        faults = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return None
    times = [datetime.fromisoformat(value) for value in faults.values() if isinstance(value, str)]
    return min(times, default=None)


def write_positions(plan: Plan, site: str) -> dict[str, int | None]:
    """Each database's WAL position at `site` just before fencing; None where it does not answer."""
    positions: dict[str, int | None] = {}
    for name, database in plan.databases.items():
        if site in database.instances:
            state = replication.instance_state(replicated_database(database), site)
            positions[name] = int(state.current_lsn) if state.reachable and state.current_lsn is not None else None
    return positions


def lsn_gaps(record: RunRecord, positions_before: dict[str, int | None]) -> dict[str, int]:
    """WAL the old primary had written past the promoted standby's fork point, in bytes.

    The fork point is where the new timeline began, as the promote step recorded it.
    """
    forks = {
        step.detail["database"]: replication.Lsn.parse(step.detail["fork_lsn"])
        for step in record.steps
        if step.detail.get("fork_lsn") and step.detail.get("database")
    }
    return {
        name: max(0, before - int(forks[name]))
        for name, before in positions_before.items()
        if before is not None and name in forks
    }


def measure_outage(
    plan: Plan, record: RunRecord, source: str, target: str, positions_before: dict[str, int | None] | None = None
) -> None:
    """Fill RTO, RPO, affected customers and cost into a failover or failback record."""
    incident_at, recovered_at = record.incident_at, record.recovered_at or record.milestones.get("recovered")
    if incident_at is None or recovered_at is None:
        return
    record.recovered_at = recovered_at
    record.rto_seconds = round((recovered_at - incident_at).total_seconds(), 3)
    record.rto_target_seconds = plan.targets.rto_minutes * 60
    record.rpo_target_seconds = min(
        [plan.targets.rpo_minutes * 60]
        + [database.rpo_minutes * 60 for database in plan.databases.values() if database.rpo_minutes is not None]
    )
    outage = recovered_at - incident_at
    figures = impact.modelled_impact(plan.impact, outage)
    evidence: dict = {}
    gaps = lsn_gaps(record, positions_before or {})
    if gaps:
        evidence["lsn_gap_bytes"] = gaps
    rpo_seconds = 0.0 if gaps and not any(gaps.values()) else None
    detail: dict = {}
    if plan.call_log is not None:
        log = plan.call_log
        figures = impact.call_log_impact(log.dsn, log.passfile, plan.impact, incident_at, recovered_at)
        phones = impact.phone_outage(log.dsn, log.passfile, target, incident_at, recovered_at)
        evidence["phone_outage_seconds"] = phones.seconds
        if phones.first_answered_at_target is not None:
            evidence[f"first_call_answered_at_{target}"] = phones.first_answered_at_target.isoformat()
        series = impact.calls_per_second(log.dsn, log.passfile, incident_at - CALL_CHART_MARGIN, utc_now())
        detail["calls_per_second"] = series.model_dump(mode="json")
        for name, database in plan.databases.items():
            instance = database.instances.get(target)
            if instance is None:
                continue
            lost = impact.lost_calls(
                log.dsn, log.passfile, source, instance.dsn, instance.passfile,
                since=incident_at - LOST_CALL_LOOKBACK, until=recovered_at, calls_table=log.calls_table,
            )
            evidence[f"lost_calls_{name}"] = lost.count
            if lost.call_ids:
                evidence[f"lost_call_ids_{name}"] = lost.call_ids[:20]
            rpo_seconds = max(rpo_seconds or 0.0, lost.rpo_seconds(incident_at))
    record.rpo_seconds = rpo_seconds
    record.affected_customers = figures.affected_customers
    record.impact_source = figures.source  # type: ignore[assignment]
    record.cost, record.currency = figures.cost, figures.currency
    now = utc_now()
    record.steps.append(Step(name="measure", started_at=now, ended_at=now, status="completed",
                             detail={**evidence, "failed_calls": figures.failed_calls, "impact_source": figures.source,
                                     **detail}))
