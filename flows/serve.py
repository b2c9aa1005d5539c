"""`lifeline serve`: Lifeline's flows as Prefect deployments, served from this process.

An operator works from the Prefect UI: nightly backups and service verification run on the
plan's schedules, and failover, failback and restore are one click (Run → Quick run) away;
a failover pauses for a person's approval in a form before it touches anything.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from lifeline.configs.loading import LoadedPlan
from lifeline.configs.settings import load_settings
from lifeline.flows.alert import alert_flow
from lifeline.flows.backup import backup_flow
from lifeline.flows.crashed_runs import ensure_crash_detection, send_heartbeats_often
from lifeline.flows.drill import drill_flow
from lifeline.flows.escalation import escalation_flow
from lifeline.flows.failback import failback_flow
from lifeline.flows.failover import failover_flow
from lifeline.flows.pitr import pitr_backup_flow, pitr_restore_flow
from lifeline.flows.restore import restore_flow
from lifeline.flows.verify import verify_flow
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.steps.escalation_runs import ESCALATION_DEPLOYMENT, carry_on_escalations
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType
from prefect.utilities.annotations import freeze

BY_MODULE = EntrypointType.MODULE_PATH  # `lifeline.flows.failover.failover_flow`: a worker on another machine
# imports it from its own installation, and a served run from this one, whatever the working directory


def deployment_name(plan_name: str, kind: str) -> str:
    """`<plan>-<kind>`: two plans served to one server keep their own deployments."""
    return f"{plan_name}-{kind}"


# A scheduled backup or verification still running when the next is due: the next is cancelled, not queued.
# Each flow run is a process of its own (5-10 s of CPU to start); queued behind a slow one they pile up
# (`make soak` saw 35 verification processes waiting on a loaded 2-core machine).
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def deployments(loaded: LoadedPlan) -> list[RunnerDeployment]:
    plan, path = loaded.plan, str(loaded.path)
    timezone = plan.timezone
    tags = ["lifeline", f"plan:{plan.name}"]

    def cron(expression: str | None) -> list[CronSchedule] | None:
        return [CronSchedule(cron=expression, timezone=timezone)] if expression else None

    return [operator_form(deployment, loaded) for deployment in [
        backup_flow.to_deployment(
            entrypoint_type=BY_MODULE,
            name=deployment_name(plan.name, "backup"), tags=tags, schedules=cron(plan.schedules.backup),
            concurrency_limit=ONE_AT_A_TIME,
            parameters={"plan_path": path, "trigger": "schedule"},
            description=f"Back up every dataset of {plan.name}, keep what retention says, check, copy off-site.",
        ),
        failover_flow.to_deployment(
            entrypoint_type=BY_MODULE,
            name=deployment_name(plan.name, "failover"), tags=tags,
            # frozen: a custom run cannot skip the form (the safety catch) with approval=yes
            parameters={"plan_path": path, "approval": freeze("ui"), "trigger": "ui"},
            description=f"Fail {plan.name} over to its DR site. Runs preflight, then waits for approval in a form.",
        ),
        failback_flow.to_deployment(
            entrypoint_type=BY_MODULE,
            name=deployment_name(plan.name, "failback"), tags=tags,
            parameters={"plan_path": path, "approval": freeze("ui"), "trigger": "ui"},
            description=f"Fail {plan.name} back to its primary site, keeping the old primary's data aside.",
        ),
        restore_flow.to_deployment(
            entrypoint_type=BY_MODULE,
            name=deployment_name(plan.name, "restore"), tags=tags, parameters={"plan_path": path, "trigger": "ui"},
            description="Restore a dataset (latest, a snapshot id, or as of a time) to a folder or database, verified.",
        ),
        drill_flow.to_deployment(
            entrypoint_type=BY_MODULE,
            name=deployment_name(plan.name, "drill"), tags=[*tags, "drill"], schedules=cron(plan.schedules.drill),
            parameters={"plan_path": path, "scenario": "", "trigger": "schedule"},
            description="Rehearse a scenario (empty: the most overdue one), score it, return to the normal state.",
        ),
        verify_flow.to_deployment(
            entrypoint_type=BY_MODULE,
            name=deployment_name(plan.name, "verify"), tags=tags, schedules=cron(plan.schedules.verify),
            concurrency_limit=ONE_AT_A_TIME,
            parameters={"plan_path": path, "trigger": "schedule"},
            description="Run every service check of the plan once.",
        ),
        alert_flow.to_deployment(
            entrypoint_type=BY_MODULE,
            name=deployment_name(plan.name, "alert"), tags=tags,
            parameters={"plan_path": path, "approval": freeze("ui"), "trigger": "intake"},
            description="Started by `lifeline intake` for every new warning: prepares as the plan's `preparedness` "
                        "says, then asks a person to approve the public status page's text.",
        ),
        escalation_flow.to_deployment(
            entrypoint_type=BY_MODULE,
            name=deployment_name(plan.name, ESCALATION_DEPLOYMENT), tags=tags, parameters={"plan_path": path},
            description="Started by a run whose incident needs a person: tells the plan's escalation levels until "
                        "somebody acknowledges in the run's form or with `lifeline ack`.",
        ),
        *pitr_deployments(loaded, cron, tags),
    ]]


def pitr_deployments(loaded: LoadedPlan, cron, tags: list[str]) -> list[RunnerDeployment]:  # noqa: ANN001
    """Per database with `pitr`: its full, diff and incr backups on their schedules; and, when any database has
    it, a point-in-time restore one click away (side mode by default; replace asks in a form)."""
    plan, path = loaded.plan, str(loaded.path)
    found: list[RunnerDeployment] = []
    for database, entry in plan.databases.items():
        if entry.pitr is None:
            continue
        for kind in ("full", "diff", "incr"):
            schedule = getattr(entry.pitr.schedules, kind)
            if schedule is None:
                continue
            found.append(pitr_backup_flow.to_deployment(
                entrypoint_type=BY_MODULE, name=deployment_name(plan.name, f"pitr-{database}-{kind}"), tags=tags,
                schedules=cron(schedule),
                parameters={"plan_path": path, "database": database, "kind": kind, "trigger": "schedule"},
                description=f"pgBackRest {kind} backup of {database} into every repository; archiving checked first.",
            ))
    if found:
        found.append(pitr_restore_flow.to_deployment(
            entrypoint_type=BY_MODULE, name=deployment_name(plan.name, "pitr-restore"), tags=tags,
            parameters={"plan_path": path, "approval": freeze("ui"), "trigger": "ui"},
            description="Restore a database with `pitr` to a moment: side (a staging cluster to inspect), repair "
                        "(chosen tables) or replace (the whole primary, after approval in a form).",
        ))
    return found


# Filled in by the deployment or by Lifeline itself: never a choice for the operator, so not in the form.
NOT_CHOSEN = ("plan_path", "trigger", "record_id", "parent_id")


def operator_form(deployment: RunnerDeployment, loaded: LoadedPlan) -> RunnerDeployment:
    """The run form shows only what an operator chooses, and the plan's names as choices.

    Parameters the deployment supplies become defaults, no longer required: the UI's Quick run starts a run at
    once only when the schema requires nothing (otherwise it opens the custom-run form, and the one-click failover
    would be two clicks and a form). Parameters nobody chooses (NOT_CHOSEN) leave the form; the server fills them
    from the deployment. A frozen one (a failover's approval: ui) stays, read-only with its one value, because the
    server refuses any other value only for a parameter in the schema. A restore's dataset or database and a
    drill's scenario are a choice among the plan's.
    """
    schema = deployment._parameter_openapi_schema  # no public way to adjust it before registration
    supplied = deployment.parameters or {}
    hidden = [name for name in schema.properties if name in NOT_CHOSEN]
    for name in hidden:
        del schema.properties[name]
    for name, value in supplied.items():
        if name in schema.properties:
            schema.properties[name]["default"] = value
    schema.required = [name for name in schema.required if name not in supplied and name not in hidden]
    plan = loaded.plan
    choices = {"dataset": sorted(plan.datasets), "scenario": ["", *sorted(plan.scenarios)],
               "database": sorted(name for name, entry in plan.databases.items() if entry.pitr is not None)}
    for name, allowed in choices.items():  # not where empty means "all" (a backup's dataset): that stays free
        if name in schema.properties and allowed and schema.properties[name].get("default", "") is not None:
            schema.properties[name].pop("anyOf", None)
            schema.properties[name].update(type="string", enum=allowed)
    return deployment


def serve_plan(loaded: LoadedPlan, query_seconds: float) -> None:
    """Blocks, serving every deployment; no run limit, since a paused failover keeps its slot. Escalations an
    earlier `serve` left open are carried on once this one has registered its deployments."""
    served_since = datetime.now(UTC)
    send_heartbeats_often()
    ensure_crash_detection()
    threading.Thread(target=carry_on_escalations, name="carry-on-escalations", daemon=True, kwargs={
        "plan_path": str(loaded.path), "plan": loaded.plan, "ledger": Ledger(load_settings().ledger),
        "log": lambda line: print(line, flush=True), "served_since": served_since}).start()
    serve(*deployments(loaded), query_seconds=query_seconds, limit=None)
