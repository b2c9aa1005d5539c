"""Preparedness: what a warning starts before the damage, per alert kind (the plan's `preparedness`).

- weather, natural-disaster: a fresh off-site backup of the critical datasets, a preflight of the DR site, the
  liaison and leadership told with the alert's text;
- network: both sites verified, then a preflight of the DR site, and the notice.

The `ready` milestone is reached when every part succeeded; the public status page's text is asked for after it,
so a person's time to approve the text never holds up the preparation.
"""

from __future__ import annotations

from lifeline.configs.alerts import Preparation
from lifeline.configs.plan import Plan
from lifeline.tasks.adapters.alerts import Alert
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.public import Alerts
from lifeline.tasks.run.record import Journal
from lifeline.tasks.steps.verification import verify_site

KINDS_WITH_ACTIONS = ("weather", "natural-disaster", "network")


class NotPrepared(LifelineError):
    pass


def alert_fields(alert: Alert, sites: dict[str, str]) -> dict:
    """What the run's messages and public text may say of the warning."""
    return {"kind": alert.kind, "severity": alert.severity, "headline": alert.headline or alert.event,
            "description": alert.description, "instruction": alert.instruction,
            "sites": ", ".join(sites) or "—", "exercise": alert.exercise}


def critical_datasets(plan: Plan, preparation: Preparation) -> list[str]:
    """The plan's own choice, else every dataset copied off-site."""
    if preparation.datasets is not None:
        return list(preparation.datasets)
    return [name for name, dataset in plan.datasets.items() if dataset.copy_to]


def original_run(ledger: Ledger, alert: Alert) -> str | None:
    """The run of the first alert this update or cancel refers to, when intake took it."""
    for key in alert.references:
        taken = Alerts(ledger).get(key)
        if taken is not None and taken.run_id:
            return taken.run_id
    return None


def verify_sites(plan: Plan, journal: Journal, sites: list[str]) -> list[str]:
    """Every service check of each site, one recorded step per site; the problems found."""
    problems = []
    for site in sites:
        with journal.step(f"verify {site}") as entry:
            checked = verify_site(plan, site)
            unhealthy = [f"{r.service} ({r.detail})" for r in checked.results if r.critical and not r.healthy]
            entry.detail.update(checks=len(checked.results), unhealthy=unhealthy)
            if unhealthy:
                entry.status = "warning"
                problems.append(f"{site}: {', '.join(unhealthy)}")
    return problems


def tell(journal: Journal, audiences: list[str]) -> list[str]:
    """The alert's notice to `audiences`, waited for; the problems (recipients not reached)."""
    with journal.step(f"notify {', '.join(audiences)}") as entry:
        told = journal.send(audiences, "alert_received", None)
        if told is None:
            entry.status = "warning"
            entry.detail["reason"] = "the plan has no communication plan: nobody was told"
            return ["nobody was told: the plan has no communication plan"]
        messages = {d.message_id for d in told}
        reached = {d.message_id for d in told if d.status in ("delivered", "awaiting_confirmation")}
        entry.detail.update(recipients=len(messages), reached=len(reached),
                            fallbacks=len({d.message_id for d in told if d.fallback}))
        if reached == messages and messages:
            journal.milestone("notified", max(d.at for d in told if d.message_id in reached))
            return []
        entry.status = "warning"
        return [f"{len(messages) - len(reached)} of {len(messages)} recipients not reached"]


def record_readiness(journal: Journal, ready: bool, reasons: list[str]) -> list[str]:
    if ready:
        journal.milestone("preflight_ready")
        return []
    return [f"DR site NOT READY: {'; '.join(reasons)}"]


def conclude(journal: Journal, problems: list[str]) -> None:
    if problems:
        raise NotPrepared("not prepared: " + "; ".join(problems))
    journal.milestone("ready")
