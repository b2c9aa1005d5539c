"""Escalate one run's incident until a person acknowledges it: a flow run of its own under `lifeline serve`."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from lifeline.configs.loading import load_plan
from lifeline.configs.settings import load_settings
from lifeline.tasks.report.artifacts import deliveries_table
from lifeline.tasks.run.ledger import Deliveries, Ledger
from lifeline.tasks.steps.escalation_runs import ESCALATION_FLOW, escalate_with_form
from lifeline.tasks.steps.recorded_run import artifact_key
from prefect import flow
from prefect.artifacts import create_table_artifact


@flow(name=ESCALATION_FLOW, log_prints=False)
def escalation_flow(plan_path: str, run_id: str) -> str:
    """Tell the plan's escalation levels, one after another, until somebody acknowledges the run.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        run_id: The Lifeline run whose incident escalates (the run that raised it starts this one).
    """
    loaded = load_plan(Path(plan_path))
    ledger = Ledger(load_settings().ledger)
    outcome = escalate_with_form(loaded.plan, ledger, run_id)
    told = [delivery for delivery in Deliveries(ledger).of_run(run_id) if delivery.level is not None]
    if told:
        create_table_artifact(table=deliveries_table(told, ZoneInfo(loaded.plan.timezone)), key=artifact_key(loaded.plan.name, "escalation", "deliveries"),
                              description=f"Escalation of run {run_id}: {outcome}")
    return outcome
