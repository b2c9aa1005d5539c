"""Lifeline answers a paused run's form itself: the approval's deadline says no, an escalation that ended closes its form."""

from __future__ import annotations

import threading

RETRY_SECONDS = 0.5


def answer_form(flow_run_id: object, run_input: dict, pause_over: threading.Event) -> bool:
    """Resume the paused run with `run_input`. Prefect refuses until the run is Paused and its form's schema is
    saved, which under load can come late: so keep asking until it takes (True), or until `pause_over` is set
    because the pause ended otherwise, a person having answered first (False)."""
    from prefect.client.orchestration import get_client

    while not pause_over.is_set():
        try:
            with get_client(sync_client=True) as client:
                result = client.resume_flow_run(flow_run_id, run_input=run_input)
        except Exception:  # noqa: BLE001 - the pause's own timeout still ends the wait
            result = None
        if result is not None and result.status.value == "ACCEPT":
            return True
        pause_over.wait(RETRY_SECONDS)
    return False
