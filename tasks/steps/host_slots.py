"""A host's slots: one Prefect global concurrency limit per SSH host, sized by the plan's `concurrency`, so
that the commands every run and every worker sends to one host at once stay within it (sshd's MaxStartups
drops connections beyond its own limit, and a host in trouble should not get a storm of sessions).

Every recorded run gates its SSH commands through these limits (`hosts_limited`); `lifeline deploy` and
every run create or resize them first, and they are used with `strict=True`, as the repositories' are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from lifeline.configs.plan import Plan
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.deadline import within_step
from lifeline.tasks.run import topology
from lifeline.tasks.steps.limits import ensure_sizes, held


def host_limit_name(target: ssh.SshTarget) -> str:
    """Per host and address, so two plans that name one host differently share one limit."""
    where = f"{target.user}@{target.address}:{target.port}"
    return f"lifeline-host-{target.name}-{hashlib.sha256(where.encode()).hexdigest()[:8]}"


def ensure_host_limits(plan: Plan) -> None:
    """Create each host's limit, or resize it to the plan's `concurrency`."""
    targets = topology.ssh_targets(plan.hosts)
    ensure_sizes({host_limit_name(targets[name]): host.concurrency for name, host in plan.hosts.items()})


def host_slot(target: ssh.SshTarget) -> AbstractContextManager[None]:
    return held(host_limit_name(target), timeout_seconds=within_step(None))


@contextmanager
def hosts_limited(plan: Plan) -> Iterator[None]:
    """Inside, every SSH command to one of the plan's hosts holds one of its slots while it runs."""
    if not plan.hosts:
        yield
        return
    ensure_host_limits(plan)
    with ssh.sessions_gated_by(host_slot):
        yield
