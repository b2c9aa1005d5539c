"""What an operator sees of a Lifeline run in the Prefect UI: its name, and how a refused one ends."""

from __future__ import annotations

from lifeline.tasks.adapters.locks import RunInProgress
from prefect.client.schemas.objects import State
from prefect.logging import get_run_logger
from prefect.states import Cancelled

__all__ = ["RunInProgress", "name_this_run", "refused"]


def name_this_run(kind: str, record_id: str) -> str:
    """Names this Prefect flow run after its Lifeline record (`failover-<record id>`), so the UI's run list and the
    ledger speak of the same run; returns how a person finds it (name and link), or "" outside a flow run."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    if flow_run.id is None:
        return ""
    name = f"{kind}-{record_id}"
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=name)
    except Exception as error:  # noqa: BLE001 - a name is for people: the run goes on without it
        get_run_logger().warning("could not name the Prefect run after its record %s: %s", record_id, error)
        return ""
    ui = PREFECT_UI_URL.value()
    return f"Prefect run {name!r}" + (f" {ui}/runs/flow-run/{flow_run.id}" if ui else "")


def refused(busy: RunInProgress) -> State:
    """How a run refused because another holds the plan ends: a deployment's run Cancelled with the one line naming
    that run, not Failed with a traceback; called from the CLI, the refusal is raised (one line, exit 2) as before."""
    from prefect.runtime import deployment

    if deployment.id is None:
        raise busy
    get_run_logger().warning("%s", busy)
    return Cancelled(message=str(busy))
