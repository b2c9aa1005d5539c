"""Which site is which: the normal primary, the other site, the one serving now, and the plan's hosts as
SSH targets. Failover, failback, verify, drills and the CLI ask here, and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping

from lifeline.configs.plan import Host, Plan
from lifeline.tasks.adapters import replication
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.sip import KamailioRpc, SbcError
from lifeline.tasks.adapters.ssh import DEFAULT_CONNECT_TIMEOUT_SECONDS, SshTarget
from lifeline.tasks.run.adapter_inputs import aws_session, replicated_database


def ssh_target(name: str, host: Host, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS) -> SshTarget:
    return SshTarget(name=name, address=host.address, port=host.port, user=host.user, key_file=host.key_file,
                     known_hosts_file=host.known_hosts_file, connect_timeout=connect_timeout,
                     key_passphrase_file=host.key_passphrase_file)


def ssh_targets(hosts: Mapping[str, Host], connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS) -> dict[str, SshTarget]:
    return {name: ssh_target(name, host, connect_timeout) for name, host in hosts.items()}


def normal_primary_site(plan: Plan) -> str:
    """Where every database's primary is in the normal state (the plan's first site when they differ)."""
    primaries = {database.primary for database in plan.databases.values()}
    if len(primaries) == 1:
        return primaries.pop()
    return next(iter(plan.sites))


def other_site(plan: Plan, site: str) -> str:
    others = [name for name in plan.sites if name != site]
    if not others:
        raise LifelineError(f"the plan has no site other than {site} to fail over to")
    return others[0]


def dataset_sites(plan: Plan) -> dict[str, list[str]]:
    """Site → the datasets whose data it holds (a dataset without a `site` is at the normal primary)."""
    held: dict[str, list[str]] = {}
    for name, dataset in plan.datasets.items():
        held.setdefault(dataset.site or normal_primary_site(plan), []).append(name)
    return held


def is_primary(plan: Plan, database: str, site: str) -> bool:
    """The database's instance at `site` answers and is not in recovery."""
    return replication.instance_state(replicated_database(plan.databases[database]), site).in_recovery is False


def primary_site(plan: Plan, database: str) -> str | None:
    """Where the database's primary is now (None when no instance is one)."""
    return next((site for site in plan.databases[database].instances if is_primary(plan, database, site)), None)


def _dns_values(plan: Plan) -> tuple[str, ...] | None:
    """What the call centre's DNS record holds now; None when the plan has no record or no AWS account to read it."""
    if plan.dns is None or plan.aws is None:
        return None
    values, _ = aws_session(plan.aws).record_value(plan.dns.zone, plan.dns.record)
    return tuple(values)


def dns_names(plan: Plan, site: str) -> bool | None:
    """The DNS record names `site`; None when the plan has no record to read."""
    values = _dns_values(plan)
    return None if values is None else plan.dns.values[site] in values


def serving_site(plan: Plan) -> str | None:
    """The site the DNS record names now: the one callers reach (None without a record, or naming no site)."""
    values = _dns_values(plan)
    if values is None:
        return None
    return next((site for site, value in plan.dns.values.items() if value in values), None)


def calls_routed_to(plan: Plan, site: str) -> bool | None:
    """The SBC routes the service number to `site` alone; None without telephony for the site."""
    if plan.telephony is None or site not in plan.telephony.sites:
        return None
    try:
        states = KamailioRpc(plan.telephony.sbc.rpc_url).states(plan.telephony.sbc.dispatcher_group)
    except SbcError:  # unknown: the failover's sip_route step will find out and say so
        return None
    return all((states.get(entry.destination) == "active") == (name == site)
               for name, entry in plan.telephony.sites.items())


def has_taken_over(plan: Plan, site: str) -> bool:
    """Every database of `site` is a primary, the DNS record names it and the SBC routes calls there: a failover
    to it has happened."""
    if any(site in database.instances and not is_primary(plan, name, site) for name, database in plan.databases.items()):
        return False
    if plan.dns is not None and plan.aws is None:
        raise LifelineError("the plan has no `aws` section: DNS switches and SMS need it")
    return dns_names(plan, site) is not False and calls_routed_to(plan, site) is not False


def has_begun_serving(plan: Plan, site: str) -> bool:
    """Some database of `site` is a primary or the DNS record names it: a failover to it got at least that far."""
    if any(site in database.instances and is_primary(plan, name, site) for name, database in plan.databases.items()):
        return True
    return dns_names(plan, site) is True or calls_routed_to(plan, site) is True
