"""A plan's runbook: ordered groups whose steps run concurrently, each a Prefect task.

Retries, retry delay and timeout come from the step, else from `recovery.defaults`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from lifeline.configs.plan import Plan
from lifeline.configs.recovery import (
    AgentsReadyStep,
    AnnouncementStep,
    ApprovalStep,
    DnsSwitchStep,
    FenceStep,
    HttpStep,
    NotifyStep,
    PromoteStep,
    RecoveryStep,
    RestoreStep,
    SipRouteStep,
    SshStep,
    StepGroup,
    VerifyStep,
    WaitStep,
)
from lifeline.tasks.run.record import Journal
from lifeline.tasks.steps import communication, failover, telephony
from lifeline.tasks.steps.verification import wait_until_recovered
from prefect.futures import PrefectFuture


def step_title(definition: RecoveryStep, source: str, target: str) -> str:
    if definition.name:
        return definition.name
    match definition:
        case PromoteStep():
            return f"promote {definition.database} at {definition.site or target}"
        case DnsSwitchStep():
            return f"switch dns to {definition.to or target}"
        case FenceStep():
            return f"fence {definition.site or source}"
        case SshStep():
            return f"ssh {definition.host}: {definition.command[0]}"
        case HttpStep():
            return f"{definition.method} {definition.url}"
        case RestoreStep():
            return f"restore {definition.dataset}"
        case VerifyStep():
            return f"verify {definition.site or target}"
        case NotifyStep():
            return f"notify {', '.join(definition.audiences) or definition.template}"
        case ApprovalStep():
            return "approval"
        case WaitStep():
            return f"wait {definition.seconds:g} s"
        case SipRouteStep():
            return f"route calls to {definition.to or target}"
        case AgentsReadyStep():
            return f"agents ready at {definition.site or target}"
        case AnnouncementStep():
            return f"announcement at {definition.site or target}"
    return definition.type


def submit_step(plan: Plan, definition: RecoveryStep, journal: Journal, *, source: str, target: str, group: str) -> PrefectFuture:
    defaults = plan.recovery.defaults
    options = {
        "retries": defaults.retries if definition.retries is None else definition.retries,
        "retry_delay_seconds": defaults.retry_delay_seconds if definition.retry_delay_seconds is None else definition.retry_delay_seconds,
    }
    common = {
        "journal": journal,
        "step_name": step_title(definition, source, target),
        "time_limit_seconds": definition.timeout_seconds or defaults.timeout_seconds,
    }
    match definition:
        case PromoteStep():
            task, arguments = failover.promote_standby, (plan, definition.database, definition.site or target)
        case DnsSwitchStep():
            task, arguments = failover.switch_dns, (plan, definition.to or target)
        case FenceStep():
            task, arguments = failover.fence_site, (plan, definition.site or source, journal.record.incident_at)
        case SshStep():
            task, arguments = failover.run_ssh_step, (plan, definition)
        case HttpStep():
            task, arguments = failover.call_http, (definition,)
        case NotifyStep():
            task, arguments = communication.notify, (journal.send, definition.audiences, definition.template,
                                                     definition.message)
        case WaitStep():
            task, arguments = failover.wait, (definition.seconds,)
        case VerifyStep():
            task, arguments = wait_until_recovered, (plan, definition.site or target)
        case SipRouteStep():
            task, arguments = telephony.route_calls, (plan, definition.to or target)
        case AgentsReadyStep():
            task, arguments = telephony.wait_for_agents, (plan, definition.site or target, definition.count)
        case AnnouncementStep():
            task, arguments = telephony.put_up_announcement, (plan, definition.site or target)
        case _:
            raise ValueError(f"step type {definition.type} runs in the flow itself, not as a submitted task")
    return task.with_options(**options).submit(*arguments, **common)


def run_inline_step(
    definition: ApprovalStep | RestoreStep, journal: Journal, *, approval_mode: str, reason: str,
    approval_timeout_seconds: float, restore: Callable[[RestoreStep], str],
) -> bool:
    """Approvals pause the flow itself and restores are subflows: neither runs as a plain task.

    `restore` runs the restore subflow for a step and returns its run record's id (the flow layer
    passes it in, so the runbook does not import a flow). Returns False when a person said no.
    """
    from lifeline.tasks.steps.approval import ask_recorded

    if isinstance(definition, ApprovalStep):
        return ask_recorded(journal, definition.name or "approval", definition.prompt, definition.prompt,
                            approval_mode, definition.timeout_seconds or approval_timeout_seconds, reason).approved  # type: ignore[arg-type]
    with journal.step(definition.name or f"restore {definition.dataset}") as entry:
        run_id = restore(definition)
        entry.detail.update({"restore_run": run_id, "target": definition.target})
    return True


INLINE_STEPS = (ApprovalStep, RestoreStep)


def describe_runbook(plan: Plan, groups: list[StepGroup], source: str, target: str) -> str:
    """What a failover would do, step by step with resolved values; changes nothing."""
    lines = [
        f"Failover of {plan.name}: {source} → {target} (dry run: nothing is changed)",
        "  1. preflight: DR hosts, standby lag, newest snapshots, DNS zone, AWS credentials",
        "  2. approval: a person says yes",
        f"  3. fence {source}: {_fencing_summary(plan, source)}",
    ]
    for number, group in enumerate(groups, start=4):
        lines.append(f"  {number}. {group.name} (concurrently):")
        for definition in group.steps:
            lines.append(f"       - {step_title(definition, source, target)}: {_resolved(plan, definition, target)}")
    verification = plan.recovery.verification
    lines.append(
        f"  {len(groups) + 4}. verify {target}: {verification.rounds} healthy rounds "
        f"{verification.interval_seconds:g} s apart of {', '.join(n for n, s in plan.services.items() if s.site == target and s.critical) or 'no critical service'}"
    )
    return "\n".join(lines)


def _fencing_summary(plan: Plan, site: str) -> str:
    fencing = plan.fencing.get(site)
    parts = ["if it answers: pg_ctl stop over SSH, confirmed"]
    if fencing and fencing.command:
        parts.append(f"else run {' '.join(fencing.command)}")
    if fencing and fencing.self_fence_seconds is not None:
        parts.append(f"else wait until {fencing.self_fence_seconds:g} s after the incident for self-fencing, "
                     "then its databases must refuse connections or answer read-only")
    return "; ".join(parts)


def _resolved(plan: Plan, definition: RecoveryStep, target: str) -> str:
    match definition:
        case PromoteStep():
            instance = plan.databases[definition.database].instances[definition.site or target]
            return f"ssh {instance.host}: {instance.bin_dir}/pg_ctl promote -w -D {instance.data_dir}"
        case DnsSwitchStep():
            dns = plan.dns
            return f"Route 53 UPSERT {dns.record} A {dns.values[definition.to or target]} TTL {dns.ttl}, until INSYNC" if dns else "no dns"
        case SshStep():
            return f"ssh {definition.host}: {' '.join(definition.command)}"
        case HttpStep():
            return f"{definition.method} {definition.url} {json.dumps(definition.json_body) if definition.json_body else ''}".strip()
        case SipRouteStep() if plan.telephony is not None:
            site = definition.to or target
            return (f"SBC {plan.telephony.sbc.rpc_url}: dispatcher.set_state a {plan.telephony.sbc.dispatcher_group} "
                    f"{plan.telephony.sites[site].destination}, the others i; then a test call to "
                    f"{plan.telephony.service_number} must be answered at {site}")
        case AgentsReadyStep() if plan.telephony is not None:
            site = definition.site or target
            return (f"wait until {definition.count or plan.telephony.sites[site].agents_required} agents are "
                    f"registered @{plan.telephony.sites[site].agents_domain}")
        case AnnouncementStep() if plan.telephony is not None:
            site = plan.telephony.sites[definition.site or target]
            return f"espeak-ng + sox → 8 kHz µ-law; sftp {site.ivr_host}:{site.announcement_path}"
        case _:
            return definition.model_dump_json(exclude_none=True)
