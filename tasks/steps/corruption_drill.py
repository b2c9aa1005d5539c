"""The logical-corruption drill's own steps: the bad write is seen by the scenario's check query, at the primary
and (carried by replication) at the standby; after the repair the check must find nothing."""

from __future__ import annotations

from lifeline.configs.drills import PointInTimeRecovery
from lifeline.configs.plan import Plan
from lifeline.tasks.adapters import replication
from lifeline.tasks.adapters.postgres.connection import database_session
from lifeline.tasks.run.adapter_inputs import replicated_database
from lifeline.tasks.run.pitr_inputs import instance_connection, pitr_of
from lifeline.tasks.steps.step import LifelineError, step
from psycopg import sql
from pydantic import BaseModel


class CorruptionRemains(LifelineError):
    pass


class CorruptionSeen(BaseModel):
    detail: dict


def corrupted_rows(plan: Plan, recovery: PointInTimeRecovery, site: str) -> int:
    database, _ = pitr_of(plan, recovery.database)
    with database_session(instance_connection(database, site), "run the corruption check at") as session:
        row = session.execute(recovery.check).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


@step(retries=1, retry_delay_seconds=1, timeout_seconds=120)
def show_corruption_at_standbys(plan: Plan, recovery: PointInTimeRecovery, primary: str) -> CorruptionSeen:
    """Replication is no defence against a bad write: once each standby has replayed the primary's WAL, the
    check finds the same rows there."""
    database = plan.databases[recovery.database]
    seen = {primary: corrupted_rows(plan, recovery, primary)}
    for site in database.instances:
        if site != primary:
            replication.wait_caught_up(replicated_database(database), primary, site, 60)
            seen[site] = corrupted_rows(plan, recovery, site)
    return CorruptionSeen(detail={"corrupted_rows": seen, "reached_standbys": all(seen.values())})


def drop_repair_schema(plan: Plan, recovery: PointInTimeRecovery, schema: str) -> str:
    """The drill's own corrupted rows, kept aside by its repair: a drill leaves nothing behind."""
    database, _ = pitr_of(plan, recovery.database)
    with database_session(instance_connection(database, database.primary), "drop the drill's repair schema at") \
            as session:
        session.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return schema


@step(retries=2, retry_delay_seconds=1, timeout_seconds=120)
def check_corruption_gone(plan: Plan, recovery: PointInTimeRecovery, primary: str) -> CorruptionSeen:
    remaining = corrupted_rows(plan, recovery, primary)
    if remaining:
        raise CorruptionRemains(f"the check still finds {remaining} corrupted row(s) at {primary} after the repair")
    return CorruptionSeen(detail={"corrupted_rows": 0})
