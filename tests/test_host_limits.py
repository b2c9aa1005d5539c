"""Host slots are Prefect global concurrency limits: the SSH commands a run sends to one host at once stay
within the host's `concurrency`, measured by the host itself (each command prints when it started and ended),
and `lifeline deploy` or any run creates the limit at the plan's size."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

import pytest
from lifeline.configs.loading import load_plan
from lifeline.tasks.adapters import ssh
from lifeline.tasks.run import topology
from lifeline.tasks.steps.host_slots import host_limit_name, hosts_limited

from tests.helpers import most_at_once

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]

SLOTS = 2
COMMANDS = 6
SPAN = "date +%s.%N; sleep 0.4; date +%s.%N"


def test_commands_to_one_host_stay_within_its_limit(lab) -> None:
    plan = load_plan(lab.plan).plan
    name = sorted(plan.hosts)[0]
    host = plan.hosts[name].model_copy(update={"concurrency": SLOTS})
    limited = plan.model_copy(update={"hosts": {name: host}})
    target = topology.ssh_targets(limited.hosts)[name]

    with hosts_limited(limited):
        spans = _spans(target)  # each thread in a copy of this context, where the gate is set
    without_limit_spans = _spans(target)

    assert most_at_once(spans) == SLOTS  # never more, and the slots were used
    assert most_at_once(without_limit_spans) > SLOTS  # the same commands without the gate do overlap more
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(host_limit_name(target))
    assert (limit.limit, limit.active_slots) == (SLOTS, 0)


def _spans(target: ssh.SshTarget) -> list[tuple[float, ...]]:
    """Run COMMANDS commands at once; each one's (start, end) as the host's clock says."""
    with ThreadPoolExecutor(COMMANDS) as pool:
        futures = [pool.submit(copy_context().run, ssh.run, target, ["sh", "-c", SPAN], 60, check=True)
                   for _ in range(COMMANDS)]
        return [tuple(float(moment) for moment in future.result().stdout.split()) for future in futures]
