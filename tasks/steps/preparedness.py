"""Preparedness: what a warning starts before the damage, per alert kind (the plan's `preparedness`).

- weather, natural-disaster: a fresh off-site backup of the critical datasets, a preflight of the DR site, the
  liaison and leadership told with the alert's text;
- network: both sites verified, then a preflight of the DR site, and the notice;
- security: the data-leak procedure's isolation steps and every repository's credential rotation checked;
- public-health: staff-shortage mode (the approvers' deputies approve from the start), and the DR site's agents
  announced to staff.

The `ready` milestone is reached when every part succeeded; the public status page's text is asked for after it,
so a person's time to approve the text never holds up the preparation.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from lifeline.configs.alerts import Preparation
from lifeline.configs.plan import Plan
from lifeline.tasks.adapters.alerts import Alert
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.deliveries import reach_of
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.public import Alerts, Modes
from lifeline.tasks.run.record import Journal, utc_now
from lifeline.tasks.steps.approvers import STAFF_SHORTAGE
from lifeline.tasks.steps.verification import verify_site


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
            entry.detail.update(checks=len(checked.results), unhealthy=checked.critical_failures)
            if checked.critical_failures:
                entry.status = "warning"
                problems.append(f"{site}: {', '.join(checked.critical_failures)}")
    return problems


def tell(journal: Journal, audiences: list[str]) -> list[str]:
    """The alert's notice to `audiences`, waited for; the problems (recipients not reached)."""
    with journal.step(f"notify {', '.join(audiences)}") as entry:
        told = journal.send(audiences, "alert_received", None)
        if told is None:
            entry.status = "warning"
            entry.detail["reason"] = "the plan has no communication plan: nobody was told"
            return ["nobody was told: the plan has no communication plan"]
        reach = reach_of(told)
        entry.detail.update(reach.detail)
        if reach.everybody:
            journal.milestone("notified", reach.last_reached_at)
            return []
        entry.status = "warning"
        return [reach.missed or "nobody to tell"]


def record_readiness(journal: Journal, ready: bool, reasons: list[str]) -> list[str]:
    if ready:
        journal.milestone("preflight_ready")
        return []
    return [f"DR site NOT READY: {'; '.join(reasons)}"]


def conclude(journal: Journal, problems: list[str]) -> None:
    if problems:
        raise NotPrepared("not prepared: " + "; ".join(problems))
    journal.milestone("ready")


def staff_shortage(plan: Plan, ledger: Ledger, journal: Journal, preparation: Preparation, away: str) -> list[str]:
    """Turn staff-shortage mode on, and announce to staff who works at the DR site; the problems."""
    until = utc_now() + timedelta(hours=preparation.staff_shortage_hours)
    with journal.step("staff-shortage mode on") as entry:
        Modes(ledger).turn_on(plan.name, STAFF_SHORTAGE, until, journal.record.id)
        deputies = {name: plan.contacts[name].deputy for name in plan.recovery.approvers if plan.contacts[name].deputy}
        entry.detail.update(until=until.isoformat(timespec="minutes"), deputies_approve=deputies)
    agents = [plan.contacts[name] for name in plan.sites[away].agents]
    if not agents:
        journal.record_skipped("announce the DR site's agents", f"sites.{away}.agents names nobody")
        return [f"sites.{away}.agents names nobody to announce"]
    roster = "; ".join(f"{agent.name} {agent.phones[0] if agent.phones else ''}".strip() for agent in agents)
    ends = until.astimezone(ZoneInfo(plan.timezone)).strftime("%Y-%m-%d %H:%M %Z")  # the plan's time, labelled
    text = (f"人员短缺模式已启动，至 {ends}。{away} 站点值班坐席：{roster}。\n"
            f"Staff-shortage mode is on until {ends}. Agents at site {away}: {roster}.")
    with journal.step("announce the DR site's agents") as entry:
        told = journal.send(["staff"] if "staff" in plan.audiences else list(preparation.notify), None, text)
        reach = reach_of(told or [])
        entry.detail.update(agents=[agent.name for agent in agents], **reach.detail)
        if not reach.reached:
            entry.status = "warning"
            return ["nobody on staff was reached with the DR site's agents"]
    return []
