"""Failover steps: fence the old site, promote the standby, switch DNS, and the runbook's own steps.

Each step first looks whether its effect is already there, and then does nothing: a
failover killed at any point and started again converges.
"""

from __future__ import annotations

import time
from dataclasses import replace as replaced_copy
from datetime import datetime

import httpx
from lifeline.configs.plan import Plan
from lifeline.configs.recovery import DatabaseInstance, HttpStep, SshStep
from lifeline.tasks.adapters import replication, ssh
from lifeline.tasks.adapters.aws import AwsSession
from lifeline.tasks.adapters.commands import run_command
from lifeline.tasks.adapters.deadline import within_step
from lifeline.tasks.adapters.environment_file import read_environment_file
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.postgres.connection import (
    ConnectionFailed,
    PostgresError,
    connection_info,
    database_session,
)
from lifeline.tasks.adapters.replication import failback as replication_failback
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import aws_session, database_node, replicated_database
from lifeline.tasks.run.record import utc_now
from lifeline.tasks.steps.step import step
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field


class FenceFailed(LifelineError):
    pass


class StepFailed(LifelineError):
    pass


class StepOutcome(BaseModel):
    changed: bool
    at: datetime = Field(default_factory=utc_now)
    detail: dict = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list, description="Non-empty: the step is marked `warning`.")


def dns_account(plan: Plan) -> AwsSession:
    if plan.aws is None:
        raise StepFailed("the plan has no `aws` section: DNS switches need it")
    return aws_session(plan.aws)


def _site_answers(plan: Plan, site: str, targets: dict[str, ssh.SshTarget]) -> bool:
    hosts = [name for name, host in plan.hosts.items() if host.site == site]
    if not hosts:
        return False
    for name in hosts:
        try:
            ssh.run(targets[name], ["true"], timeout=3)
        except ssh.SshError:
            return False
    return True


def _databases_down(plan: Plan, site: str) -> list[str]:
    """Databases of `site` that still accept connections: what fencing must bring to zero."""
    return [
        name
        for name, database in plan.databases.items()
        if site in database.instances and replication.instance_state(replicated_database(database), site).reachable
    ]


# A self-fenced database is seen to take no writes when its connection fails or it answers read-only.
SELF_FENCE_CHECK_CONNECT_TIMEOUT_SECONDS = 3
_READ_ONLY_SQL = "SELECT current_setting('transaction_read_only') = 'on', pg_is_in_recovery()"


def self_fence_remaining(self_fence_seconds: float, incident_at: datetime | None, now: datetime) -> float:
    """Seconds still to wait: the site fences itself `self_fence_seconds` after the incident, not after we ask."""
    elapsed = (now - incident_at).total_seconds() if incident_at is not None else 0.0
    return max(self_fence_seconds - elapsed, 0.0)


def _write_risk(name: str, site: str, instance: DatabaseInstance) -> str | None:
    """Why database `name` at `site` may still take writes; None when its connection fails or it is read-only."""
    described = f"database {name} (instance at site {site}, host {instance.host})"
    try:
        connection = replaced_copy(connection_info(instance.dsn, instance.passfile),
                                   connect_timeout_seconds=SELF_FENCE_CHECK_CONNECT_TIMEOUT_SECONDS,
                                   statement_timeout=f"{SELF_FENCE_CHECK_CONNECT_TIMEOUT_SECONDS}s")
        with database_session(connection, "connect to") as session:
            read_only, in_recovery = session.execute(_READ_ONLY_SQL).fetchone()  # type: ignore[misc]
    except ConnectionFailed:
        return None
    except PostgresError as error:  # e.g. login refused: it may well be up, so this proves nothing
        return f"{described} cannot be checked ({error})"
    if read_only or in_recovery:
        return None
    return f"{described} still accepts writes at {connection.address}"


def writable_databases(plan: Plan, site: str) -> list[str]:
    """The databases of `site` not seen to take no writes, each with why."""
    risks = (_write_risk(name, site, database.instances[site])
             for name, database in plan.databases.items() if site in database.instances)
    return [risk for risk in risks if risk is not None]


def _self_fenced(plan: Plan, site: str, self_fence_seconds: float, incident_at: datetime | None,
                 force: bool) -> StepOutcome:
    logger = get_run_logger()
    remaining = self_fence_remaining(self_fence_seconds, incident_at, utc_now())
    if remaining > 0:
        left = within_step(remaining) or remaining
        if left < remaining:  # a shortened wait would prove nothing: the site may not have fenced itself yet
            raise FenceFailed(f"site {site} needs {remaining:.0f} s more to fence itself, but its fence step has "
                              f"{left:.0f} s left: raise the step's timeout_seconds above fencing.{site}.self_fence_seconds")
        logger.info("site %s does not answer: waiting %.0f s for it to fence itself", site, remaining)
        time.sleep(remaining)
    detail: dict = {"site": site, "method": "self_fencing", "waited_seconds": round(remaining, 3)}
    unproven = writable_databases(plan, site)
    if unproven and not force:
        raise FenceFailed(
            f"refusing to promote: site {site} does not answer over SSH and has no fence command, and "
            f"{self_fence_seconds:g} s after the incident {'; '.join(unproven)}: stop it, give the site a fence "
            f"command in fencing.{site}.command, or rerun with --force"
        )
    if unproven:
        logger.warning("forced past unproven self-fencing of %s: %s", site, "; ".join(unproven))
        detail["forced_past"] = unproven
    return StepOutcome(changed=False, detail=detail)


@step(retries=1, retry_delay_seconds=2, timeout_seconds=300)
def fence_site(plan: Plan, site: str, incident_at: datetime | None = None, force: bool = False) -> StepOutcome:
    """Positive fencing: prove `site` no longer takes writes before anything else is promoted.

    A site that does not answer and has no fence command is given `self_fence_seconds` from `incident_at`
    to fence itself; then its databases must refuse connections or answer read-only, unless `force`.
    """
    logger = get_run_logger()
    targets = topology.ssh_targets(plan.hosts)
    if _site_answers(plan, site, targets):
        stopped = []
        for name, database in plan.databases.items():
            instance = database.instances.get(site)
            if instance is None:
                continue
            if replication.stop_server(database_node(instance), targets[instance.host]).done:
                stopped.append(name)
        still = _databases_down(plan, site)
        if still:
            raise FenceFailed(f"site {site}: databases {', '.join(still)} still accept connections after pg_ctl stop")
        method = f"stopped over SSH ({', '.join(stopped) or 'databases already stopped'})"
        logger.info("fenced %s: %s", site, method)
        return StepOutcome(changed=bool(stopped), detail={"site": site, "method": "ssh", "how": method})
    fencing = plan.fencing.get(site)
    if fencing and fencing.command:
        result = run_command(fencing.command, timeout=fencing.command_timeout_seconds)
        if result.returncode != 0:
            raise FenceFailed(f"site {site}: fence command exited {result.returncode}: {result.stderr_tail(2)}")
        still = _databases_down(plan, site)
        if still:
            raise FenceFailed(f"site {site}: fence command ran but {', '.join(still)} still accept connections")
        return StepOutcome(changed=True, detail={"site": site, "method": "fence_command", "command": fencing.command[0]})
    if fencing and fencing.self_fence_seconds is not None:
        return _self_fenced(plan, site, fencing.self_fence_seconds, incident_at, force)
    raise FenceFailed(
        f"site {site} does not answer and the plan has no fencing for it (fencing.{site}.command or "
        "self_fence_seconds): refusing to promote on the hope that it is down"
    )


@step(retries=2, retry_delay_seconds=1, timeout_seconds=120)
def promote_standby(plan: Plan, database_name: str, site: str) -> StepOutcome:
    promotion = replication.promote(replicated_database(plan.databases[database_name]), site,
                                   topology.ssh_targets(plan.hosts))
    return StepOutcome(
        changed=promotion.promoted,
        detail={"database": database_name, "site": site, "promoted": promotion.promoted,
                "timeline": promotion.timeline, "fork_lsn": str(promotion.lsn) if promotion.lsn is not None else None},
    )


@step(retries=3, retry_delay_seconds=[1, 2, 5], timeout_seconds=180)
def switch_dns(plan: Plan, site: str) -> StepOutcome:
    dns = plan.dns
    if dns is None:
        raise StepFailed("the plan has no `dns` section to switch")
    value = dns.values[site]
    switch = dns_account(plan).switch_record(dns.zone, dns.record, value, dns.ttl)
    return StepOutcome(changed=switch.changed, detail={"record": dns.record, "value": value, "site": site})


@step(retries=2, retry_delay_seconds=2, timeout_seconds=300)
def run_ssh_step(plan: Plan, definition: SshStep) -> StepOutcome:
    target = topology.ssh_targets(plan.hosts)[definition.host]
    result = ssh.run(target, definition.command, timeout=definition.timeout_seconds or 60)
    if result.exit_status != definition.expect_exit:
        raise StepFailed(f"{target.label}: {definition.command[0]} exited {result.exit_status}: {result.stderr_tail()}")
    return StepOutcome(changed=True, detail={"host": definition.host, "exit": result.exit_status})


@step(retries=2, retry_delay_seconds=2, timeout_seconds=120)
def call_http(definition: HttpStep) -> StepOutcome:
    headers = read_environment_file(definition.headers_file)
    try:
        response = httpx.request(
            definition.method, definition.url, json=definition.json_body, data=definition.form, headers=headers,
            timeout=definition.timeout_seconds or 30,
        )
    except httpx.TransportError as error:  # refused, timed out, reset: the endpoint may answer on a retry
        failure = StepFailed(f"{definition.method} {definition.url}: {str(error) or type(error).__name__}")
        failure.transient = True
        raise failure from None
    if response.status_code not in definition.expect_status:
        error = StepFailed(f"{definition.method} {definition.url}: HTTP {response.status_code}")
        error.transient = response.status_code >= 500
        raise error
    return StepOutcome(changed=True, detail={"url": definition.url, "status": response.status_code})


@step(retries=0, timeout_seconds=86400)
def wait(seconds: float) -> StepOutcome:
    time.sleep(seconds)
    return StepOutcome(changed=False, detail={"seconds": seconds})


@step(retries=1, retry_delay_seconds=5, timeout_seconds=1800)
def rebuild_old_primary_as_standby(plan: Plan, database_name: str, old_primary: str, new_primary: str) -> StepOutcome:
    """The old primary's data directory is moved aside (never deleted) and the rows only it had are reported."""
    rebuild = replication_failback.preserve_and_rebuild_standby(
        replicated_database(plan.databases[database_name]), old_primary, new_primary, topology.ssh_targets(plan.hosts)
    )
    detail: dict = {"database": database_name, "standby": old_primary, "already_streaming": rebuild.already_streaming,
                    "caught_up_in_seconds": round(rebuild.catch_up.seconds, 3)}
    if rebuild.split is not None:
        detail.update({
            "moved_aside": str(rebuild.split.moved_aside_dir),
            "split_report": str(rebuild.split.report_file),
            "rows_only_at_old_primary": rebuild.split.rows_only_at_old_primary,
            "rows_differing": rebuild.split.rows_differing,
        })
    return StepOutcome(changed=not rebuild.already_streaming, detail=detail)


def resumes_switch_back(plan: Plan, database_name: str, home: str, away: str) -> bool:
    """A failback was killed between stopping `away`'s database cleanly and promoting `home`'s, its standby:
    switching back resumes from there, with nothing to rebuild."""
    database = replicated_database(plan.databases[database_name])
    return not replication.instance_state(database, away).reachable and replication_failback.switch_back_cut_short(
        database, topology.ssh_targets(plan.hosts), primary_site=home, standby_site=away)


@step(retries=0, timeout_seconds=600)
def switch_database_back(plan: Plan, database_name: str, primary: str, standby: str) -> StepOutcome:
    """Planned switchover: the current primary stops cleanly, the standby has replayed all of it, then is promoted."""
    switched = replication_failback.switch_back(
        replicated_database(plan.databases[database_name]), topology.ssh_targets(plan.hosts), primary_site=primary,
        standby_site=standby
    )
    promotion = switched.promotion
    return StepOutcome(
        changed=not switched.already_done,
        detail={
            "database": database_name,
            "already_done": switched.already_done,
            "final_checkpoint_lsn": str(switched.final_checkpoint_lsn) if switched.final_checkpoint_lsn else None,
            "fork_lsn": str(promotion.lsn) if promotion and promotion.lsn is not None else None,
            "old_primary_followed": switched.followed,
            "old_primary_rebuilt": switched.rebuild is not None,
        },
    )
