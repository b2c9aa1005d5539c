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
