"""Flow runs whose process died (a worker or `lifeline serve` SIGKILLed, a machine lost) are marked Crashed by the
Prefect server itself, as Prefect documents for zombie flow runs: every deployment's run sends a heartbeat, and an
automation on the server crashes a run whose heartbeats stop. Without it such a run stays Running for ever, and a
deployment that runs one at a time (the scheduled backup and verification) would never run again.

Lifeline's own record of that run is closed by the next run of the plan (its process is gone)."""

from __future__ import annotations

import os
from datetime import timedelta

HEARTBEAT_SECONDS = 30  # Prefect's smallest; its default of 180 s would leave a dead run Running for 9 minutes
AUTOMATION_NAME = "lifeline: crash flow runs whose heartbeats stopped"


def send_heartbeats_often() -> None:
    """For this process's flow runs and the flow-run processes it starts (a worker's, serve's)."""
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)


def ensure_crash_detection() -> bool:
    """Create the server's automation when it has none of that name; True when it was created."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=AUTOMATION_NAME)
        return False
    except ValueError:  # not found
        pass
    Automation(
        name=AUTOMATION_NAME,
        description="Made by Lifeline: a flow run with no heartbeat for three heartbeats' time is Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=3 * HEARTBEAT_SECONDS),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message="its process stopped sending heartbeats (killed, or its machine lost)")],
    ).create()
    return True
