"""What an outage cost the business: affected customers, lost calls, money.

From the call log when there is one (every call placed, its outcome and the id the site
acknowledged); otherwise from the plan's impact model.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from lifeline.configs.plan import Impact
from lifeline.tasks.adapters.postgres.connection import connection_info, database_session
from psycopg import sql
from pydantic import BaseModel


class ImpactFigures(BaseModel):
    affected_customers: int
    source: str  # "call_log" or "model"
    failed_calls: int = 0
    cost: float
    currency: str


class LostCalls(BaseModel):
    """Calls the old primary acknowledged that the new primary does not have."""

    count: int
    oldest_at: datetime | None
    call_ids: list[int]

    def rpo_seconds(self, incident_at: datetime) -> float:
        return 0.0 if self.oldest_at is None else max(0.0, (incident_at - self.oldest_at).total_seconds())


def outage_cost(impact: Impact, outage: timedelta) -> float:
    return round(impact.cost_per_minute * outage.total_seconds() / 60 + sum(impact.fixed_costs.values()), 2)


def modelled_impact(impact: Impact, outage: timedelta) -> ImpactFigures:
    return ImpactFigures(
        affected_customers=round(impact.customers_per_hour * outage.total_seconds() / 3600),
        source="model",
        cost=outage_cost(impact, outage),
        currency=impact.currency,
    )


def call_log_impact(
    dsn: str, passfile: Path | None, impact: Impact, incident_at: datetime, recovered_at: datetime
) -> ImpactFigures:
    """Distinct callers whose calls failed or were abandoned between the incident and recovery."""
    query = """
        SELECT count(DISTINCT caller_id), count(*) FROM calls_log
        WHERE outcome IN ('failed', 'abandoned') AND placed_at >= %s AND placed_at <= %s
    """
    with database_session(connection_info(dsn, passfile), "count affected customers in") as session:
        customers, calls = session.execute(query, (incident_at, recovered_at)).fetchone()
    return ImpactFigures(
        affected_customers=int(customers),
        source="call_log",
        failed_calls=int(calls),
        cost=outage_cost(impact, recovered_at - incident_at),
        currency=impact.currency,
    )


def acknowledged_calls(
    dsn: str, passfile: Path | None, site: str, since: datetime, until: datetime
) -> dict[int, datetime]:
    """call_id → time, for calls `site` answered in the window, per the call log."""
    query = """
        SELECT call_id, placed_at FROM calls_log
        WHERE outcome = 'answered' AND site = %s AND call_id IS NOT NULL AND placed_at >= %s AND placed_at <= %s
    """
    with database_session(connection_info(dsn, passfile), "read acknowledged calls from") as session:
        return {int(call_id): placed_at for call_id, placed_at in session.execute(query, (site, since, until))}


def lost_calls(
    call_log_dsn: str,
    call_log_passfile: Path | None,
    old_site: str,
    new_primary_dsn: str,
    new_primary_passfile: Path | None,
    since: datetime,
    until: datetime,
    calls_table: str = "calls",
) -> LostCalls:
    """Calls `old_site` acknowledged in [since, until] whose rows are missing at the new primary."""
    acknowledged = acknowledged_calls(call_log_dsn, call_log_passfile, old_site, since, until)
    if not acknowledged:
        return LostCalls(count=0, oldest_at=None, call_ids=[])
    with database_session(connection_info(new_primary_dsn, new_primary_passfile), "look for lost calls at") as session:
        present = {
            row[0]
            for row in session.execute(
                sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(sql.Identifier(calls_table)), (list(acknowledged),)
            )
        }
    missing = sorted(set(acknowledged) - present)
    return LostCalls(
        count=len(missing),
        oldest_at=min((acknowledged[call_id] for call_id in missing), default=None),
        call_ids=missing[:100],
    )


class CallSeries(BaseModel):
    """Calls placed per second, by what became of them: `answered at <site>`, `failed`, `abandoned`."""

    start: datetime
    counts: dict[str, list[int]]


class PhoneOutage(BaseModel):
    first_unanswered_at: datetime | None
    first_answered_at_target: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.first_unanswered_at is None or self.first_answered_at_target is None:
            return None
        return round(max(0.0, (self.first_answered_at_target - self.first_unanswered_at).total_seconds()), 3)


def calls_per_second(dsn: str, passfile: Path | None, since: datetime, until: datetime) -> CallSeries:
    query = """
        SELECT floor(extract(epoch FROM placed_at - %(since)s))::int AS second,
               CASE WHEN outcome = 'answered' THEN 'answered at ' || coalesce(site, '?') ELSE outcome END, count(*)
        FROM calls_log WHERE placed_at >= %(since)s AND placed_at < %(until)s GROUP BY 1, 2 ORDER BY 1
    """
    length = max(1, int((until - since).total_seconds()) + 1)
    counts: dict[str, list[int]] = {}
    with database_session(connection_info(dsn, passfile), "count calls per second in") as session:
        for second, kind, count in session.execute(query, {"since": since, "until": until}):
            if 0 <= second < length:
                counts.setdefault(kind, [0] * length)[second] = int(count)
    return CallSeries(start=since, counts=dict(sorted(counts.items())))


def phone_outage(dsn: str, passfile: Path | None, target: str, incident_at: datetime, until: datetime) -> PhoneOutage:
    """From the first call not answered after the incident to the first call answered at `target` after that."""
    query = """
        WITH first_lost AS (SELECT min(placed_at) AS at FROM calls_log
                            WHERE outcome <> 'answered' AND placed_at >= %(incident)s AND placed_at <= %(until)s)
        SELECT first_lost.at, (SELECT min(placed_at) FROM calls_log WHERE outcome = 'answered' AND site = %(target)s
                               AND placed_at >= coalesce(first_lost.at, %(incident)s) AND placed_at <= %(until)s)
        FROM first_lost
    """
    with database_session(connection_info(dsn, passfile), "measure the phone outage in") as session:
        first_unanswered, first_answered = session.execute(
            query, {"incident": incident_at, "until": until, "target": target}).fetchone()
    return PhoneOutage(first_unanswered_at=first_unanswered, first_answered_at_target=first_answered)
