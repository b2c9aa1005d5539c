"""Readiness before anything is touched: can the DR site take over right now, within the targets?

And before a failback: can the primary site be rebuilt from the DR site and switched back to?
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from datetime import datetime, timedelta
from functools import partial

from lifeline.configs.plan import Plan
from lifeline.configs.settings import Settings
from lifeline.tasks.adapters import replication, ssh
from lifeline.tasks.adapters.aws import AwsSession
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import aws_session, replicated_database
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import Journal, utc_now
from lifeline.tasks.steps.approval import ApprovalMode, Decision, ask_recorded
from lifeline.tasks.steps.approvers import Approvers
from lifeline.tasks.steps.failover import resumes_switch_back
from lifeline.tasks.steps.pitr import archive_lag
from lifeline.tasks.steps.repositories import dataset_tags, open_repository, snapshot_file_present
from lifeline.tasks.steps.telephony import sbc_ready
from pydantic import BaseModel


class ReadinessItem(BaseModel):
    name: str
    ready: bool
    detail: str
    bad_input: bool = False  # not ready because the plan is wrong (an unknown host key, refused credentials)


class Readiness(BaseModel):
    target_site: str
    items: list[ReadinessItem]
    action: str = "fail over"

    @property
    def ready(self) -> bool:
        return all(item.ready for item in self.items)

    @property
    def reasons(self) -> list[str]:
        return [f"{item.name}: {item.detail}" for item in self.items if not item.ready]

    @property
    def bad_input(self) -> bool:
        """Every reason is the plan's own fault: a refusal is then exit 2 (README, exit codes), not 1."""
        not_ready = [item for item in self.items if not item.ready]
        return bool(not_ready) and all(item.bad_input for item in not_ready)

    @property
    def detail(self) -> dict:
        return {"ready": self.ready, "reasons": self.reasons, "checked": len(self.items)}

    def markdown(self) -> str:
        lines = [f"**{'READY' if self.ready else 'NOT READY'}** to {self.action} to `{self.target_site}`", "",
                 "| check | ready | detail |", "|---|---|---|"]
        lines += [f"| {i.name} | {'yes' if i.ready else '**no**'} | {i.detail} |" for i in self.items]
        return "\n".join(lines)


class NotReady(LifelineError):
    """Preflight found reasons not to fail over (or back); --force overrides (and the record says so)."""


def go_or_refuse(readiness: Readiness, force: bool, journal: Journal) -> None:
    """NOT READY refuses unless forced; a forced run records what it went past (in the preflight step)."""
    if readiness.ready:
        return
    if not force:
        refusal = NotReady(f"NOT READY to {readiness.action} to {readiness.target_site}: "
                           + "; ".join(readiness.reasons) + " (--force overrides)")
        refusal.user_error = readiness.bad_input  # e.g. an unknown host key: exit 2
        raise refusal
    journal.milestone("forced")
    journal.record.steps[-1].detail["forced_past"] = readiness.reasons


def approved_past_preflight(
    journal: Journal, readiness: Readiness, prompt: str, *, force: bool, approval: ApprovalMode, timeout_seconds: float,
    reason: str, public_events: tuple[str, ...], approvers: Approvers | None,
) -> Decision:
    """Preflight's verdict, then a person's. NOT READY refuses at once unless forced, except in the UI's form: there
    the operator sees every reason and may force past them with Force (recorded in the approval step)."""
    in_form = approval == "ui" and not force and not readiness.ready and not readiness.bad_input
    if not in_form:
        go_or_refuse(readiness, force, journal)
    decision = ask_recorded(journal, "approval", prompt, readiness.markdown(), approval, timeout_seconds,
                            reason, public_events=public_events, approvers=approvers, offer_force=in_form)
    if decision.approved and decision.forced:
        go_or_refuse(readiness, True, journal)
    return decision


def guarded(name: str, probe: Callable[[], tuple[bool, str]]) -> ReadinessItem:
    bad_input = False
    try:
        ready, detail = probe()
    except LifelineError as error:
        ready, detail, bad_input = False, str(error), error.user_error
    except Exception as error:  # a probe that breaks is a reason not to fail over, not a crash
        ready, detail = False, f"{type(error).__name__}: {error}"
    return ReadinessItem(name=name, ready=ready, detail=detail, bad_input=bad_input)


def _host_reachable(target: ssh.SshTarget) -> tuple[bool, str]:
    started = time.monotonic()
    result = ssh.run(target, ["true"], timeout=5)
    took = time.monotonic() - started
    return result.exit_status == 0, f"{target.label} answers over SSH with a verified host key ({took * 1000:.0f} ms)"


def _standby_ready(plan: Plan, database_name: str, target_site: str) -> tuple[bool, str]:
    database = plan.databases[database_name]
    target = timedelta(minutes=plan.targets.rpo_minutes if database.rpo_minutes is None else database.rpo_minutes)
    standby = replication.instance_state(replicated_database(database), target_site)
    if not standby.reachable:
        return False, f"standby at {target_site} does not answer: {standby.detail}"
    if standby.in_recovery is False:
        return True, f"{target_site} is already the primary (timeline {standby.timeline})"
    primary = replication.instance_state(replicated_database(database), database.primary)
    if not primary.reachable:
        return True, f"primary at {database.primary} does not answer; standby at {target_site} is in recovery, replay at {standby.current_lsn}"
    if primary.in_recovery is not False:
        return False, f"{database.primary} is not a primary ({primary.role}): nothing to fail over from"
    standby = replication.instance_state(replicated_database(database), target_site)  # observed after the primary: lag is never negative
    lag = replication.replication_lag(primary, standby)
    if not lag.known or standby.receiver_status != "streaming":
        return False, f"standby at {target_site} is not streaming ({standby.receiver_status or 'no WAL receiver'})"
    within = (lag.seconds or 0.0) <= target.total_seconds()
    beyond = "" if within else ": beyond its RPO target"
    return within, (f"standby at {target_site} streaming from {database.primary}, replay lag {lag.bytes} bytes, "
                    f"{lag.seconds or 0:.1f} s (RPO target {target.total_seconds():g} s){beyond}")


def _archive_current(plan: Plan, database_name: str, target_site: str) -> tuple[bool, str]:
    """With PITR the database's RPO target is its `pitr.rpo_minutes`: WAL not yet archived is what a loss of
    the primary's site would cost a point-in-time restore."""
    primary = topology.primary_site(plan, database_name)
    if primary is None:
        return True, "no primary answers: the archive holds what was archived before (see `lifeline pitr status`)"
    lag = archive_lag(plan, database_name, primary)
    status, exposure = lag.status, lag.status.exposure_seconds
    if exposure is None and primary == target_site:  # promoted by a failover that was cut off: this one goes on
        return True, f"{target_site} is already the primary; the failover sets up its archiving when it ends"
    if exposure is None:
        return False, f"archiving is not configured at {primary} (`lifeline pitr setup`)"
    failing = (f"; archive_command failing since {status.last_failed_at:%H:%M:%S} (pgBackRest's log on the host "
               "says why; `lifeline pitr setup` writes the hosts' configs again, e.g. after new S3 keys)") \
        if status.failing else ""
    return lag.within_target, (f"{status.pending_segments} completed segment(s) waiting; unarchived data "
                               f"{exposure:.0f} s (target {lag.target_seconds:g} s){failing}")


def _snapshot_item(plan: Plan, name: str, newest: datetime | None, source: str) -> ReadinessItem:
    if newest is None:
        return ReadinessItem(name=f"backup {name}", ready=False, detail="no snapshot yet")
    age, target = utc_now() - newest, plan.rpo_target(name)
    return ReadinessItem(
        name=f"backup {name}", ready=age <= target,
        detail=f"newest snapshot {age.total_seconds() / 60:.1f} min old (target {target.total_seconds() / 60:g} min; {source})",
    )


def _snapshots_fresh(plan: Plan, settings: Settings, repository_name: str) -> list[ReadinessItem]:
    """Each dataset's newest snapshot against its own RPO target.

    The ledger's record of the snapshots Lifeline made answers in a millisecond, when the repository
    still holds them (a local repository's snapshot file is looked at; a remote one cannot be asked
    without restic). Otherwise the repository itself is listed (half a second), which also finds a
    snapshot made some other way.
    """
    datasets = [name for name, dataset in plan.datasets.items() if dataset.repository == repository_name]
    ledger = Ledger(settings.ledger)
    newest = {name: max(ledger.snapshots_recorded(plan.name, name), key=lambda facts: facts.recorded_at, default=None)
              for name in datasets}
    if all(facts and snapshot_file_present(plan, repository_name, facts.snapshot_id) for facts in newest.values()):
        from_ledger = [_snapshot_item(plan, name, newest[name].recorded_at, "ledger; snapshot file present")
                       for name in datasets]
        if all(item.ready for item in from_ledger):
            return from_ledger
    try:
        snapshots = open_repository(plan, repository_name, settings).snapshots(tags=[f"plan={plan.name}"])
    except LifelineError as error:
        return [ReadinessItem(name=f"backup {name}", ready=False, detail=str(error)) for name in datasets]
    items = []
    for name in datasets:
        tag = dataset_tags(plan, name)[-1]
        times = [snapshot.time for snapshot in snapshots if tag in snapshot.tags]
        items.append(_snapshot_item(plan, name, max(times, default=None), "repository"))
    return items


def _dns_zone(aws: AwsSession, plan: Plan) -> tuple[bool, str]:
    dns = plan.dns
    values, ttl = aws.record_value(dns.zone, dns.record)
    return True, f"{dns.record} = {', '.join(values)} (TTL {ttl} s)"


def _credentials(aws: AwsSession) -> tuple[bool, str]:
    identity = aws.credentials_accepted()
    return True, f"accepted as {identity.arn}"


def _primary_to_fail_back_from(plan: Plan, database_name: str, home: str, away: str) -> tuple[bool, str]:
    database = replicated_database(plan.databases[database_name])
    if replication.streams_from(database, home, away):
        return True, f"already switched back: {home} is the primary and {away} streams from it"
    serving = replication.instance_state(database, away)
    if not serving.reachable and resumes_switch_back(plan, database_name, home, away):
        return True, f"a switch-back was cut short after {away} stopped cleanly: {home}, its standby, is promoted now"
    if not serving.reachable:
        return False, f"{away} does not answer: {serving.detail}; nothing to rebuild {home} from"
    if serving.in_recovery is not False:
        return False, f"{away} is not a primary ({serving.role}): nothing to fail back from"
    return True, f"{away} is the primary (timeline {serving.timeline}); {home} will be rebuilt from it"


Probe = tuple[str, Callable[[], tuple[bool, str]]]


def _site_and_cloud_probes(plan: Plan, site: str) -> list[Probe]:
    """The site's hosts answer over SSH with verified keys; the AWS credentials and the DNS zone work."""
    probes: list[Probe] = []
    targets = topology.ssh_targets(plan.hosts)
    for name, host in plan.hosts.items():
        if host.site == site:
            probes.append((f"host {name}", lambda target=targets[name]: _host_reachable(target)))
    if plan.aws is not None:
        aws = aws_session(plan.aws)
        probes.append(("aws credentials", lambda: _credentials(aws)))
        if plan.dns is not None:
            probes.append((f"dns zone {plan.dns.zone}", lambda: _dns_zone(aws, plan)))
    if plan.telephony is not None and site in plan.telephony.sites:
        probes.append((f"sbc {plan.telephony.sbc.address}", lambda: sbc_ready(plan, site)))
    return probes


def run_probes(probes: list[Probe], listings: Sequence[Callable[[], list[ReadinessItem]]] = ()) -> list[ReadinessItem]:
    """Every probe and listing runs concurrently; each failure becomes a reason, never an exception."""
    with ThreadPoolExecutor(max_workers=max(1, len(probes) + len(listings))) as pool:
        # each in a copy of this context: the step's time limit and the hosts' session gate reach the threads
        listed = [pool.submit(copy_context().run, listing) for listing in listings]
        probed = [pool.submit(copy_context().run, guarded, *probe) for probe in probes]
        return [future.result() for future in probed] + [item for future in listed for item in future.result()]


def assess_readiness(plan: Plan, settings: Settings, target_site: str) -> Readiness:
    probes = _site_and_cloud_probes(plan, target_site)
    for name in plan.databases_at(target_site):
        probes.append((f"database {name}", lambda name=name: _standby_ready(plan, name, target_site)))
    for name, database in plan.databases.items():
        if database.pitr is not None:
            probes.append((f"archive {name}", lambda name=name: _archive_current(plan, name, target_site)))
    listings = [partial(_snapshots_fresh, plan, settings, repository)
                for repository in sorted({dataset.repository for dataset in plan.datasets.values()})]
    return Readiness(target_site=target_site, items=run_probes(probes, listings))


def assess_failback_readiness(plan: Plan, home: str, away: str) -> Readiness:
    """Home's hosts answer (it is rebuilt and promoted over SSH), each database has a primary at `away`
    to rebuild from (or is already switched back), and DNS can be switched."""
    probes = _site_and_cloud_probes(plan, home)
    for name in plan.databases_at(home, away):
        probes.append((f"database {name}", lambda name=name: _primary_to_fail_back_from(plan, name, home, away)))
    return Readiness(target_site=home, items=run_probes(probes), action="fail back")
