"""Verify a site: every check of every service at once; healthy only when every critical one is."""

from __future__ import annotations

from pathlib import Path

from lifeline.configs.loading import load_plan
from lifeline.configs.settings import load_settings
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run import topology
from lifeline.tasks.run.record import Step, Trigger
from lifeline.tasks.steps.recorded_run import recorded_run
from lifeline.tasks.steps.verification import verify_site
from prefect import flow


class Unhealthy(LifelineError):
    pass


@flow(name="verify", log_prints=False)
def verify_flow(plan_path: str, site: str | None = None, trigger: Trigger = "cli", record_id: str | None = None) -> str:
    """Run every service check of a site (or of every site) once, concurrently.

    Args:
        plan_path: The plan file (YAML) on the machine that runs Lifeline.
        site: Only this site's services; empty for the site the DNS record names (else every site).
        trigger: Who started the run: schedule, ui or cli.
        record_id: Id for the run record (the CLI sets it); empty for a new one.
    """
    loaded = load_plan(Path(plan_path))
    with recorded_run("verify", loaded, load_settings(), trigger=trigger, record_id=record_id) as journal:
        site = site or topology.serving_site(loaded.plan)
        checked = verify_site(loaded.plan, site)
        for result in checked.results:
            journal.record.steps.append(
                Step(
                    name=f"{result.service}: {result.check}",
                    started_at=checked.at,
                    ended_at=checked.at,
                    status="completed" if result.healthy else ("failed" if result.critical else "warning"),
                    detail={"target": result.target, "latency_ms": round(result.latency_ms, 1),
                            "critical": result.critical, "detail": result.detail},
                )
            )
        if not checked.critical_healthy:
            raise Unhealthy(f"critical services unhealthy at {site or 'every site'}: "
                            f"{', '.join(checked.critical_failures)}")
        return journal.record.id
