"""Which site is which: the normal primary, the other site, the one serving now, and the plan's hosts as
SSH targets. Failover, failback, verify, drills and the CLI ask here, and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping

from lifeline.configs.plan import Host
from lifeline.tasks.adapters.ssh import DEFAULT_CONNECT_TIMEOUT_SECONDS, SshTarget


def ssh_target(name: str, host: Host, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS) -> SshTarget:
    return SshTarget(name=name, address=host.address, port=host.port, user=host.user, key_file=host.key_file,
                     known_hosts_file=host.known_hosts_file, connect_timeout=connect_timeout)


def ssh_targets(hosts: Mapping[str, Host], connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS) -> dict[str, SshTarget]:
    return {name: ssh_target(name, host, connect_timeout) for name, host in hosts.items()}
