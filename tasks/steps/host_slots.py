"""A host's slots: a Prefect global concurrency limit per SSH host whose `concurrency` the plan sets, so that
the commands every run and every worker sends to that host at once stay within it (sshd's MaxStartups drops
connections beyond its own limit, and a host in trouble should not get a storm of sessions).

Opt-in, per host: every gated command costs a slot's acquisition and release at the server (about 0.1 s on
PostgreSQL; on the SQLite server, a write that meets another answers 503 and Prefect's client retries after
about 2 s). On the lab's failover path that took the RTO from 0.75 s to 4.8 s, so hosts are not limited
unless the plan says so. Every recorded run gates its SSH commands through the limits (`hosts_limited`);
`lifeline deploy` and every run create or resize them first, used with `strict=True` like the repositories'.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from lifeline.configs.plan import Plan
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.deadline import within_step
from lifeline.tasks.run import topology
from lifeline.tasks.steps.limits import ensure_sizes, held, keyed


def host_limit_name(target: ssh.SshTarget) -> str:
    return f"lifeline-host-{keyed(target.name, f'{target.user}@{target.address}:{target.port}')}"


def limited_hosts(plan: Plan) -> dict[str, int]:
    """Limit name -> size, for the hosts whose `concurrency` the plan sets."""
    targets = topology.ssh_targets(plan.hosts)
    return {host_limit_name(targets[name]): host.concurrency for name, host in plan.hosts.items()
            if host.concurrency is not None}


def ensure_host_limits(plan: Plan) -> None:
    """Create each limited host's limit, or resize it to the plan's `concurrency`."""
    ensure_sizes(limited_hosts(plan))


@contextmanager
def hosts_limited(plan: Plan) -> Iterator[None]:
    """Inside, every SSH command to a host whose `concurrency` the plan sets holds one of its slots while it
    runs; commands to other hosts go straight through."""
    limits = limited_hosts(plan)
    if not limits:
        yield
        return
    ensure_sizes(limits)

    def host_slot(target: ssh.SshTarget) -> AbstractContextManager[None]:
        name = host_limit_name(target)
        return held(name, timeout_seconds=within_step(None)) if name in limits else nullcontext()

    with ssh.sessions_gated_by(host_slot):
        yield
