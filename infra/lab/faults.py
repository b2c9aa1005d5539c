"""Faults the lab can inject, site power, and the rule that keeps a replaced primary down.

A fault records its time in ``faults.json`` (name -> ISO time, the incident time later flows
read) and then breaks something. A channel fault (``sms-down``, ``email-down``, ``chat-down``)
breaks one of the emergency communication channels: that is no incident of the call centre, so
its time goes to ``channel-faults.json`` instead, which no incident reader looks at. ``heal`` (in
lab.py) undoes infrastructure and channel faults only.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import psycopg

from . import aws, components, control_plane, postgres
from .context import LabContext
from .processes import LabError, LabUsageError, say
from .state import (
    SITES,
    load_all_faults,
    load_channel_faults,
    load_faults,
    now_iso,
    save_channel_faults,
    save_faults,
    save_state,
    site_components,
)

FAULT_DESCRIPTIONS: dict[str, str] = {
    "main-db-down": "main's PostgreSQL stopped with `pg_ctl stop -m immediate`",
    "main-service-down": "main's call-centre service killed",
    "main-ssh-down": "main's sshd (and its sessions) stopped",
    "main-unreachable": ("main's service, PBX and sshd stopped: nothing of main answers (a network outage without "
                         "--netns)"),
    "recordings-lost": "main's recordings folder deleted",
    "crm-corrupted": ("a buggy release's UPDATE at main overwrites the e-mail of every gold and platinum customer "
                      "(replication carries it to dr at once)"),
    "main-compromised": ("main's host compromised: only the incident time is recorded (nothing breaks); "
                         "`heal` re-trusts main's host key and gives crm_app its login back"),
    "site-link-cut": "all of main's links down, its carrier trunk too (--netns only)",
    "trunk-cut": "the carrier's trunk to main's PBX down: no call reaches main, its data links stay up (--netns only)",
    "main-pbx-down": "main's PBX killed: the calls the carrier routes to main fail",
    "replication-cut": "the main-dr link down (--netns only)",
    "sms-down": "the lab's AWS key loses sns:Publish (an IAM Deny): every SMS publish is refused with 403",
    "email-down": "the SMTP sink stopped: connections are refused",
    "chat-down": "the chat webhook receiver stopped: connections are refused",
}
NETNS_ONLY = ("site-link-cut", "replication-cut", "trunk-cut")
# Faults of the communication channels: recorded in channel-faults.json, never as an incident time.
CHANNEL_FAULTS = ("sms-down", "email-down", "chat-down")
# Components a fault leaves stopped (`up` does not restart them while the fault is active).
FAULT_STOPS: dict[str, tuple[str, ...]] = {
    "main-db-down": ("postgres-main",),
    "main-service-down": ("service-main",),
    "main-ssh-down": ("sshd-main",),
    "main-unreachable": ("service-main", "sshd-main", "pbx-main"),
    "main-pbx-down": ("pbx-main",),
    "email-down": ("smtp",),
    "chat-down": ("chat",),
}


def power_fault_name(site: str) -> str:
    return f"{site}-power-off"


def replaced_primary_reason(context: LabContext, cluster: str) -> str | None:
    """Why ``cluster`` must not be started, or None if starting it is safe.

    A cluster with ``standby.signal`` starts as a standby: always safe. Otherwise it would start
    as a primary, which is wrong if the other site has since been promoted: the other site is
    not a standby and is on a newer timeline (``pg_wal/*.history``, written at promotion), or
    is running and answers ``pg_is_in_recovery() = false`` while this one is on an older one.
    """
    if cluster not in SITES or not postgres.initialised(context, cluster):
        return None
    if postgres.is_standby(context, cluster):
        return None
    other = "dr" if cluster == "main" else "main"
    if not postgres.initialised(context, other) or postgres.is_standby(context, other):
        return None
    mine, theirs = postgres.timeline(context, cluster), postgres.timeline(context, other)
    if theirs > mine:
        return (f"{other} has been promoted (timeline {theirs} > {mine}): {cluster}'s old primary stays "
                f"stopped; bring it back as a standby with Lifeline's failback (pg_rewind)")
    if postgres.pid(context, other) is not None:
        try:
            in_recovery = postgres.query(context, other, "SELECT pg_is_in_recovery()")[0][0]
        except Exception:  # noqa: BLE001 - unreachable: decided by the timelines above
            in_recovery = True
        if not in_recovery and theirs >= mine:
            return f"{other} is already a primary: starting {cluster} as a second primary would split the brain"
    return None


def _stop(context: LabContext, name: str) -> Callable[[], str]:
    def action() -> str:
        stopped = components.stop(context, name, crash=True)
        return f"{name} stopped ({len(stopped)} processes)" if stopped else f"{name} was not running"

    return action


def _lose_recordings(context: LabContext) -> str:
    folder = context.paths.recordings_dir("main")
    if not folder.exists():
        return f"{folder} was already gone"
    count = sum(1 for path in folder.rglob("*") if path.is_file())
    shutil.rmtree(folder)
    return f"deleted {folder} ({count} files)"


CORRUPTED_EMAIL = "unknown@callcenter.invalid"
CORRUPTION_CHECK = f"SELECT count(*) FROM customers WHERE email = '{CORRUPTED_EMAIL}'"


def _corrupt_customers(context: LabContext) -> str:
    rows = postgres.query(context, "main", "UPDATE customers SET email = %s WHERE tier IN ('gold', 'platinum') "
                          "RETURNING id", database=postgres.CRM_DATABASE, parameters=(CORRUPTED_EMAIL,))
    return f"{len(rows)} customers' e-mail overwritten at main"


def _cut(context: LabContext, links: list[str]) -> Callable[[], str]:
    def action() -> str:
        from . import netns

        for link in links:
            netns.set_link(link, up=False)
        return f"links down: {', '.join(links)}"

    return action


def _deny_sms(context: LabContext) -> str:
    if components.pid(context, "moto") is None:
        return "moto is not running: `lab up` starts it with sns:Publish taken away"
    context.in_ops(lambda: aws.deny_sms(context.paths, context.state))
    return f"sns:Publish denied to IAM user {aws.IAM_USER} (policy {aws.SMS_DENY_POLICY_NAME})"


def reapply_channel_faults(context: LabContext) -> list[str]:
    """After moto (re)started with a fresh IAM: take sns:Publish away again while sms-down is active."""
    if "sms-down" not in load_channel_faults(context.paths) or components.pid(context, "moto") is None:
        return []
    return [f"sms-down: {_deny_sms(context)}"]


def heal_channels(context: LabContext) -> list[str]:
    """Give sns:Publish back, then clear channel-faults.json (the stopped sink and receiver are
    started by `up`'s repair). A moto that is not running starts fresh, without the Deny."""
    done: list[str] = []
    moto_running = components.pid(context, "moto") is not None and context.paths.aws_environment_file.exists()
    if moto_running and context.in_ops(lambda: aws.allow_sms(context.paths, context.state)):
        done.append(f"sns:Publish allowed again to IAM user {aws.IAM_USER}")
    save_channel_faults(context.paths, {})
    return done


def fault(context: LabContext, name: str) -> tuple[str, str]:
    """Inject fault ``name``; returns (ISO time recorded, what was done). A channel fault's time
    goes to channel-faults.json, every other one's to faults.json (the incident record)."""
    if name not in FAULT_DESCRIPTIONS:
        raise LabUsageError(f"unknown fault {name!r}; known: {', '.join(FAULT_DESCRIPTIONS)}")
    if name in NETNS_ONLY and not context.netns:
        raise LabUsageError(f"fault {name!r} needs the lab in --netns mode")
    actions: dict[str, Callable[[], str]] = {
        "main-db-down": _stop(context, "postgres-main"),
        "main-service-down": _stop(context, "service-main"),
        "main-ssh-down": _stop(context, "sshd-main"),
        "main-unreachable": lambda: "; ".join(_stop(context, name)() for name in FAULT_STOPS["main-unreachable"]),
        "recordings-lost": lambda: _lose_recordings(context),
        "crm-corrupted": lambda: _corrupt_customers(context),
        "main-compromised": lambda: "incident time recorded; nothing else changed",
        "site-link-cut": _cut(context, ["main-ops", "main-dr", "main-trunk"]),
        "trunk-cut": _cut(context, ["main-trunk"]),
        "main-pbx-down": _stop(context, "pbx-main"),
        "replication-cut": _cut(context, ["main-dr"]),
        "sms-down": lambda: _deny_sms(context),
        "email-down": _stop(context, "smtp"),
        "chat-down": _stop(context, "chat"),
    }
    at = now_iso()
    done = actions[name]()
    channel = name in CHANNEL_FAULTS
    faults = load_channel_faults(context.paths) if channel else load_faults(context.paths)
    faults.setdefault(name, at)
    (save_channel_faults if channel else save_faults)(context.paths, faults)
    return faults[name], done


def power_off(context: LabContext, site: str) -> list[str]:
    """Stop everything of a site out of band, the way a PDU would: immediate, no goodbyes."""
    if site not in SITES:
        raise LabUsageError(f"unknown site {site!r}; sites: {', '.join(SITES)}")
    at = now_iso()
    done: list[str] = []
    if context.state.control_plane:
        stopped = control_plane.stop_worker(context, site, crash=True)
        done.append(f"{control_plane.worker_name(site)}: {'stopped' if stopped else 'was not running'}")
    for name in reversed(site_components(site)):
        stopped = components.stop(context, name, crash=True)
        done.append(f"{name}: {'stopped' if stopped else 'was not running'}")
    if site not in context.state.powered_off:
        context.state.powered_off.append(site)
        save_state(context.paths, context.state)
    faults = load_faults(context.paths)
    faults.setdefault(power_fault_name(site), at)
    save_faults(context.paths, faults)
    return done


def power_on(context: LabContext, site: str) -> list[str]:
    """Start a site again; its database only if it has not been replaced."""
    if site not in SITES:
        raise LabUsageError(f"unknown site {site!r}; sites: {', '.join(SITES)}")
    if site in context.state.powered_off:
        context.state.powered_off.remove(site)
        save_state(context.paths, context.state)
    faults = load_faults(context.paths)
    faults.pop(power_fault_name(site), None)
    save_faults(context.paths, faults)
    done: list[str] = []
    active = load_all_faults(context.paths)
    for name in site_components(site):
        if any(name in FAULT_STOPS.get(fault_name, ()) for fault_name in active):
            done.append(f"{name}: left stopped (fault active; `lab heal` undoes it)")
            continue
        if name.startswith("postgres-"):
            reason = replaced_primary_reason(context, site)
            if reason:
                done.append(f"{name}: left stopped: {reason}")
                say(reason)
                continue
        try:
            components.start(context, name)
            done.append(f"{name}: running")
        except LabError as error:
            done.append(f"{name}: failed to start: {error}")
            raise
    if context.state.control_plane:
        done.append(control_plane.start_worker(context, site))
    return done


def heal_compromise(context: LabContext) -> list[str]:
    """Undo what a data-leak recovery revokes: main's host key back in known_hosts, crm_app's login."""
    from . import sshd

    done = []
    if sshd.write_known_hosts(context):
        done.append("known_hosts: host keys of both sites trusted again")
    if postgres.pid(context, "main") is not None and not postgres.is_standby(context, "main"):
        for attempt in range(10):  # links just restored: the first connections may still be refused or cut
            try:
                if postgres.ensure_app_role(context):
                    done.append(f"{postgres.APP_ROLE}: login restored")
                break
            except psycopg.OperationalError:
                if attempt == 9:
                    raise
                time.sleep(0.5)
    return done
