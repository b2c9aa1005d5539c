"""What "converged" means after a run was killed and started again, checked the way an operator would:
the run completed, the killed run's record is closed, the lab serves from the expected site, no write a
primary acknowledged is missing there, no answered call is missing there, and nobody got the same
message twice. Each check returns the problems it found (empty: none), so the soak's table can count them
and the tests can assert on them."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

from lifeline.infra.lab.aws import sent_sms
from lifeline.tasks.run.holds import Holds
from lifeline.tasks.run.ledger import Deliveries, Ledger
from lifeline.tasks.run.record import RunRecord

from tests.lab_fixtures import MONITOR_TABLE, Lab, WriteMonitor, call_log


def closed_problems(ledger: Ledger, killed_id: str | None, rerun: RunRecord) -> list[str]:
    if killed_id is None:
        return ["the killed run left no record"]
    killed = ledger.run(killed_id)
    if killed is None:
        return [f"run {killed_id} is not in the ledger"]
    if killed.status == "running" or killed.ended_at is None:
        return [f"the killed run {killed_id} still says {killed.status}"]
    if killed.status == "failed" and not (killed.error or "").startswith("interrupted"):
        return [f"the killed run {killed_id} was closed as failed but not as interrupted: {killed.error}"]
    return []


def serving_problems(lab: Lab, site: str) -> list[str]:
    other = "dr" if site == "main" else "main"
    status = lab.status()
    problems = []
    if status.databases.get(site) != "primary":
        problems.append(f"{site}'s database is {status.databases.get(site)}, not primary")
    if status.databases.get(other) == "primary":
        problems.append(f"{other}'s database is a primary too")
    if status.dns.points_at != site:
        problems.append(f"DNS points at {status.dns.points_at}, not {site}")
    return problems


def lost_row_problems(lab: Lab, monitor: WriteMonitor, site: str, ledger: Ledger | None = None,
                      since: datetime | None = None) -> list[str]:
    """Acknowledged writes missing at `site`, less those a failback since `since` kept aside and reported (rows a
    crashed primary acknowledged but never streamed: in its moved-aside data directory and its split report)."""
    lost = monitor.lost_rows(lab, site)
    if lost and ledger is not None and since is not None:
        lost -= reported_rows_only_at_old_primary(ledger, since)
    return [f"{len(lost)} acknowledged writes are missing at {site}: {sorted(lost)[:5]}"] if lost else []


def reported_rows_only_at_old_primary(ledger: Ledger, since: datetime) -> set[int]:
    """Monitor rows the failbacks since `since` found only at the old primary, from their split reports."""
    found: set[int] = set()
    for record in ledger.runs(kind="failback"):
        if record.started_at < since:
            continue
        for step in record.steps:
            report = step.detail.get("split_report")
            if report and Path(report).is_file():
                for line in Path(report).read_text().splitlines():
                    row = json.loads(line)
                    if row.get("kind") == "only_at_old_primary" and row.get("table", "").endswith(MONITOR_TABLE):
                        found.add(int(row["key"][0]))
    return found


def lost_call_problems(lab: Lab, site: str, since: datetime) -> list[str]:
    """Every call a site answered (with the CRM's id) since `since` is in the database at `site`."""
    answered = {call_id for (call_id,) in call_log(
        lab, "SELECT call_id FROM calls_log WHERE outcome = 'answered' AND call_id IS NOT NULL AND placed_at >= %s",
        since)}
    if not answered:
        return []
    kept = {row for (row,) in lab.query(site, "SELECT id FROM calls WHERE id = ANY(%s)", parameters=(list(answered),))}
    lost = answered - kept
    return [f"{len(lost)} answered calls are missing at {site}: {sorted(lost)[:5]}"] if lost else []


# A drill's own test message: a drill run again after a kill rehearses again, and says so in the message.
REHEARSAL_EVENTS = ("test",)


def twice_told_problems(lab: Lab, ledger: Ledger, run_ids: list[str]) -> list[str]:
    """Nobody got one event twice across the killed run and the runs that took over, and every SMS the lab's
    SNS carried for those runs is one the ledger recorded as delivered or as cut off while sending (a message
    sent again after a kill would show as more SMS than that)."""
    deliveries = Deliveries(ledger)
    told = [delivery for run_id in run_ids for delivery in deliveries.of_run(run_id, with_cut_off=True)
            if delivery.status != "failed"]
    problems = [f"{contact} got {event} {count} times" for (event, contact), count in
                Counter((delivery.event, delivery.contact) for delivery in told
                        if delivery.event not in REHEARSAL_EVENTS).items() if count > 1]
    recorded = sum(1 for delivery in told if delivery.channel_type == "sms")
    carried = sum(1 for sms in sent_sms(lab.context.paths) if any(run_id in sms["message"] for run_id in run_ids))
    if carried > recorded:
        problems.append(f"the lab's SNS carried {carried} SMS for these runs, the ledger recorded {recorded}")
    return problems


def held_problems(ledger: Ledger) -> list[str]:
    """A hold nobody releases stops retention and prune for good: a drill's hold ends with the drill."""
    return [f"{hold.name} is still {hold.describe()}" for hold in Holds(ledger).all()]


def open_exercise_problems(lab: Lab) -> list[str]:
    """Every exercise warning a drill posted is resolved on the public status page (a killed drill's too)."""
    import httpx
    from lifeline.configs.loading import load_plan
    from lifeline.tasks.steps.status_page import page_url

    response = httpx.get(page_url(load_plan(lab.plan).plan, "status.json"), timeout=10)
    incidents = response.json().get("incidents", []) if response.status_code == 200 else []
    return [f"the status page shows exercise {incident['id']} still open" for incident in incidents
            if incident.get("exercise") and not incident.get("resolved")]
