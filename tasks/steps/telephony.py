"""Telephony steps: route the carrier's calls to a site, wait for its agents, put up the IVR's announcement.

Each looks first whether its effect is already there, like every failover step, so a run
killed half-way and started again converges.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import PurePosixPath

from lifeline.configs.messages import render_text
from lifeline.configs.plan import Plan
from lifeline.configs.telephony import Telephony
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.deadline import within_step
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.sip import KamailioRpc, SbcError, SipEndpoint, place_call
from lifeline.tasks.adapters.speech import speak
from lifeline.tasks.run import topology
from lifeline.tasks.steps.failover import StepOutcome
from lifeline.tasks.steps.step import step
from prefect.logging import get_run_logger

AGENT_POLL_SECONDS = 1.0


class TelephonyFailed(LifelineError):
    pass


def telephony_of(plan: Plan) -> Telephony:
    if plan.telephony is None:
        raise TelephonyFailed("the plan has no `telephony` section")
    return plan.telephony


def sbc_of(telephony: Telephony) -> KamailioRpc:
    return KamailioRpc(telephony.sbc.rpc_url)


def place_test_call(telephony: Telephony, *, record_seconds: float = 0.0):
    """One call to the service number through the SBC, from the test caller id: (result, answering site)."""
    result = place_call(SipEndpoint(telephony.sbc.address, telephony.sbc.port), telephony.service_number,
                        telephony.test_caller_id, answer_timeout=telephony.answer_timeout_seconds,
                        record_seconds=record_seconds)
    return result, telephony.site_answering(result.answered_by)


def routed_sites(telephony: Telephony) -> list[str] | str:
    """The sites the SBC sends the service number to now, or why that cannot be read."""
    try:
        states = sbc_of(telephony).states(telephony.sbc.dispatcher_group)
    except SbcError as error:
        return str(error)
    return [name for name, entry in telephony.sites.items() if states.get(entry.destination) == "active"]


@step(retries=3, retry_delay_seconds=[1, 2, 5], timeout_seconds=60)
def route_calls(plan: Plan, site: str) -> StepOutcome:
    """The SBC's dispatcher sends the service number to `site` only (its destination active first, then the
    others inactive: no gap), read back, then a test call must be answered at `site`."""
    telephony = telephony_of(plan)
    rpc, group = sbc_of(telephony), telephony.sbc.dispatcher_group
    wanted = {name: ("active" if name == site else "inactive") for name in telephony.sites}
    uris = {name: entry.destination for name, entry in telephony.sites.items()}
    before = rpc.states(group)
    missing = [f"telephony.sites.{name}.destination {uri}" for name, uri in uris.items() if uri not in before]
    if missing:
        raise TelephonyFailed(f"the SBC's dispatcher group {group} does not list {', '.join(missing)}: "
                              f"it lists {', '.join(before) or 'nothing'}")
    order = sorted(wanted, key=lambda name: wanted[name] != "active")  # make before break
    changed = [name for name in order if before[uris[name]] != wanted[name]]
    for name in changed:
        rpc.set_state(group, uris[name], wanted[name])  # type: ignore[arg-type]
    after = rpc.states(group)
    wrong = [f"{name} is {after.get(uris[name])}" for name in wanted if after.get(uris[name]) != wanted[name]]
    if wrong:
        raise TelephonyFailed(f"the SBC did not keep the routing to {site}: {'; '.join(wrong)}")
    result, answering = place_test_call(telephony)
    detail = {"site": site, "changed": changed, "dispatcher": after, "test_call": result.summary}
    if answering != site:
        failure = TelephonyFailed(f"the test call to {telephony.service_number} after routing to {site} was "
                                  f"{result.summary}" + (f" (site {answering})" if answering else ""))
        failure.transient = True  # the site's PBX may still be starting, or its CRM promoting
        raise failure
    get_run_logger().info("calls routed to %s; test call %s", site, result.summary)
    return StepOutcome(changed=bool(changed), detail={**detail, "test_call_setup_seconds": result.setup_seconds})


def sbc_ready(plan: Plan, site: str) -> tuple[bool, str]:
    """Preflight: the SBC's RPC answers and its dispatcher lists every site's PBX; agents at `site` are counted
    (they log in during the failover, so too few is said, never a refusal)."""
    telephony = telephony_of(plan)
    listed = sbc_of(telephony).states(telephony.sbc.dispatcher_group)
    states = {name: listed.get(entry.destination) for name, entry in telephony.sites.items()}
    missing = [name for name, state in states.items() if state is None]
    routing = ", ".join(f"{name} {state}" for name, state in states.items() if state)
    if missing:
        return False, (f"the SBC's dispatcher group {telephony.sbc.dispatcher_group} does not list "
                       + ", ".join(f"{name}'s PBX {telephony.sites[name].destination}" for name in missing))
    detail = f"dispatcher group {telephony.sbc.dispatcher_group}: {routing}"
    target = telephony.sites.get(site)
    if target is not None and target.agents_domain and target.agents_required:
        detail += f"; {len(agents_at(telephony, site))} agents registered at {site} ({target.agents_required} needed)"
    return True, detail


def agents_at(telephony: Telephony, site: str) -> list[str]:
    domain = telephony.sites[site].agents_domain
    if not domain:
        raise TelephonyFailed(f"telephony.sites.{site}.agents_domain is not set: agents cannot be counted there")
    return sorted(record.split("@")[0] for record in sbc_of(telephony).registered() if record.endswith(f"@{domain}"))


@step(retries=0, timeout_seconds=900)
def wait_for_agents(plan: Plan, site: str, count: int | None = None) -> StepOutcome:
    """Until `count` agents are registered at the site's registrar domain: until then the site is not recovered."""
    telephony = telephony_of(plan)
    needed = count or telephony.sites[site].agents_required
    logger = get_run_logger()
    started = time.monotonic()
    seen: list[str] = []
    while True:
        agents = agents_at(telephony, site)
        if agents != seen:
            logger.info("%d of %d agents registered at %s: %s", len(agents), needed, site, ", ".join(agents) or "none")
            seen = agents
        if len(agents) >= needed:
            return StepOutcome(changed=False, detail={"site": site, "agents": agents, "needed": needed,
                                                      "waited_seconds": round(time.monotonic() - started, 3)})
        left = within_step(None)
        if left is not None and left < AGENT_POLL_SECONDS:
            raise TelephonyFailed(f"only {len(agents)} of {needed} agents registered at {site} "
                                  f"({', '.join(agents) or 'none'}): the site cannot take calls")
        time.sleep(AGENT_POLL_SECONDS)


def announcement_text(plan: Plan, site: str) -> list[tuple[str, str]]:
    telephony = telephony_of(plan)
    fields = {"plan": plan.name, "hotline": plan.hotline or "", "site": site}
    return [(language, render_text(getattr(telephony.announcement, language).body, fields)) for language in ("zh", "en")]


def _ivr_of(plan: Plan, site: str) -> tuple[ssh.SshTarget, PurePosixPath]:
    entry = telephony_of(plan).sites.get(site)
    if entry is None or entry.ivr_host is None or entry.announcement_path is None:
        raise TelephonyFailed(f"telephony.sites.{site} names no ivr_host and announcement_path")
    return topology.ssh_targets(plan.hosts)[entry.ivr_host], entry.announcement_path


@step(retries=2, retry_delay_seconds=2, timeout_seconds=120)
def put_up_announcement(plan: Plan, site: str) -> StepOutcome:
    """Speak the announcement (espeak-ng, sox: 8 kHz µ-law) and write it to the IVR host, replacing any older one."""
    target, path = _ivr_of(plan, site)
    spoken = speak(announcement_text(plan, site))
    ssh.write_file(target, path, spoken.audio, mode=0o644)
    get_run_logger().info("emergency announcement (%.1f s) is on %s at %s", spoken.seconds, target.label, path)
    return StepOutcome(changed=True, detail={"site": site, "host": target.label, "path": str(path),
                                             "seconds": spoken.seconds,
                                             "sha256": hashlib.sha256(spoken.audio).hexdigest()[:16]})


@step(retries=2, retry_delay_seconds=2, timeout_seconds=60)
def take_down_announcement(plan: Plan, site: str) -> StepOutcome:
    """The IVR plays its normal greeting again; the announcement is kept beside it (`.withdrawn`)."""
    target, path = _ivr_of(plan, site)
    if ssh.run(target, ["test", "-e", str(path)], timeout=15).exit_status != 0:
        return StepOutcome(changed=False, detail={"site": site, "path": str(path), "already": "no announcement"})
    ssh.run(target, ["mv", "-f", str(path), f"{path}.withdrawn"], timeout=15, check=True)
    return StepOutcome(changed=True, detail={"site": site, "host": target.label, "moved_to": f"{path}.withdrawn"})
