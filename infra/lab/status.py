"""``lab status``: each component, the databases' roles, replication, DNS, services, and whether
the lab is in its normal state:

main is primary, dr streams from it with less than 1 s of lag (measured in LSNs: dr replays,
within 1 s, everything main had written when we asked), the DNS record names main, every
service is healthy (main's answers 200; dr's answers, with 503 as a read-only standby should),
the carrier's SBC routes the calls to main (its dispatcher: main active, dr inactive), no fault is
active (neither of the call centre nor of a communication channel), no site is powered off, no drill
leftovers. (The agents registered at the SBC are shown, not judged: a test logs them out on purpose; the softphones that
keep them registered are judged like every component.)
"""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from . import agents, aws, components, control_plane, kamailio, postgres
from .context import LabContext
from .control_plane import ControlPlaneStatus
from .state import COMPONENT_SIDES, SITES, load_channel_faults, load_faults

Role = Literal["primary", "standby", "down", "unreachable"]
NORMAL_ROUTING = {"main": "active", "dr": "inactive"}


class ComponentStatus(BaseModel):
    up: bool
    address: str | None
    pid: int | None = None


class DnsStatus(BaseModel):
    record: str
    value: str | None = None
    points_at: str | None = Field(default=None, description="main or dr (None: unknown value or moto unreachable)")


class ServiceStatus(BaseModel):
    url: str
    http_status: int | None = None
    healthy: bool = False
    detail: str | None = None


class ReplicationStatus(BaseModel):
    streaming: bool = False
    lag_bytes: int | None = None
    caught_up_within_1s: bool = False


class TelephonyStatus(BaseModel):
    routing: dict[str, str] = Field(default_factory=dict, description="site -> its PBX's state in the SBC's "
                                    "dispatcher: active, inactive, disabled (empty: the SBC does not answer)")
    agents: dict[str, list[str]] = Field(default_factory=dict, description="site -> agents registered in its domain")
    detail: str | None = None


class LabStatus(BaseModel):
    lab_dir: str
    mode: str
    plan: str | None
    running: bool = Field(default=False, description="any component is up")
    normal: bool
    not_normal_because: list[str]
    components: dict[str, ComponentStatus]
    databases: dict[str, Role]
    replication: ReplicationStatus
    dns: DnsStatus
    services: dict[str, ServiceStatus]
    faults: dict[str, str]
    channel_faults: dict[str, str] = Field(default_factory=dict,
                                           description="sms-down, email-down, chat-down: not incidents, kept apart")
    powered_off: list[str]
    drill_leftovers: list[str]
    memory_mib: dict[str, float] = Field(default_factory=dict, description="total rss and pss of lab processes")
    control_plane: ControlPlaneStatus | None = None  # with `lab up --control-plane`
    telephony: TelephonyStatus = Field(default_factory=TelephonyStatus)


def _role(context: LabContext, cluster: str) -> Role:
    if postgres.pid(context, cluster) is None:
        return "down"
    try:
        in_recovery = postgres.query(context, cluster, "SELECT pg_is_in_recovery()")[0][0]
    except Exception:  # noqa: BLE001 - running but not answering (e.g. a cut link)
        return "unreachable"
    return "standby" if in_recovery else "primary"


def _replication(context: LabContext, roles: dict[str, Role]) -> ReplicationStatus:
    if roles.get("main") != "primary" or roles.get("dr") != "standby":
        return ReplicationStatus()
    try:
        rows = postgres.query(
            context, "main",
            "SELECT state, pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
            "FROM pg_stat_replication WHERE application_name = 'dr'")
        if not rows:
            return ReplicationStatus()
        state, target, lag = rows[0]
        deadline = time.monotonic() + 1.0
        caught_up = False
        while time.monotonic() < deadline and not caught_up:
            caught_up = bool(postgres.query(
                context, "dr", "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", parameters=(target,))[0][0])
            if not caught_up:
                time.sleep(0.05)
        return ReplicationStatus(streaming=state == "streaming", lag_bytes=lag, caught_up_within_1s=caught_up)
    except Exception:  # noqa: BLE001 - a database went away while we asked
        return ReplicationStatus()


def _dns(context: LabContext) -> DnsStatus:
    status = DnsStatus(record=aws.RECORD)
    if components.pid(context, "moto") is None or not context.paths.aws_environment_file.exists():
        return status

    def lookup() -> tuple[str | None, int]:
        route53 = aws.client(context.paths, context.state, "route53")
        return aws.record_value(route53, aws.hosted_zone_id(route53))

    try:
        status.value, _ = context.in_ops(lookup)
    except Exception:  # noqa: BLE001 - moto not answering
        return status
    sites_by_value = {value: site for site, value in context.state.dns_values.items()}
    status.points_at = sites_by_value.get(status.value or "")
    return status


def _service(context: LabContext, site: str) -> ServiceStatus:
    address = context.address(site)
    port = context.state.ports.for_component(f"service-{site}")
    status = ServiceStatus(url=f"http://{address}:{port}")

    def ask() -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(address, port, timeout=3)
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    try:
        status.http_status, body = context.in_ops(ask)
        status.healthy = status.http_status == 200
        status.detail = json.loads(body or b"{}").get("detail")
    except Exception as error:  # noqa: BLE001 - not answering at all
        status.detail = str(error)[:200]
    return status


def _telephony(context: LabContext) -> TelephonyStatus:
    status = TelephonyStatus()
    if components.pid(context, "kamailio") is None:
        return status
    try:
        status.routing = kamailio.routing(context)
        status.agents = agents.registered(context)
    except Exception as error:  # noqa: BLE001 - the SBC not answering
        status.detail = str(error)[:200]
    return status


def _drill_leftovers(context: LabContext, roles: dict[str, Role]) -> list[str]:
    leftovers = [str(path) for path in sorted(context.paths.drills_dir.glob("*"))] \
        if context.paths.drills_dir.exists() else []
    for cluster in SITES:
        if roles.get(cluster) == "primary":
            try:
                rows = postgres.query(context, cluster, "SELECT drill, count(*) FROM drill_sentinels GROUP BY drill",
                                      database=postgres.CRM_DATABASE)
            except Exception:  # noqa: BLE001 - no CRM database (yet)
                rows = []
            leftovers += [f"{cluster}: {count} drill_sentinels rows of drill {drill!r}" for drill, count in rows]
    return leftovers


def status(context: LabContext) -> LabStatus:
    names = list(COMPONENT_SIDES)
    with ThreadPoolExecutor(max_workers=8) as executor:
        up = dict(zip(names, executor.map(lambda name: components.is_up(context, name), names), strict=True))
        roles_future = {cluster: executor.submit(_role, context, cluster) for cluster in postgres.CLUSTERS}
        dns_future = executor.submit(_dns, context)
        service_futures = {site: executor.submit(_service, context, site) for site in SITES}
        telephony_future = executor.submit(_telephony, context)
        roles: dict[str, Role] = {cluster: future.result() for cluster, future in roles_future.items()}
        replication_future = executor.submit(_replication, context, roles)
        leftovers_future = executor.submit(_drill_leftovers, context, roles)
        services = {site: future.result() for site, future in service_futures.items()}
        dns = dns_future.result()
        replication = replication_future.result()
        leftovers = leftovers_future.result()
        telephony = telephony_future.result()
    component_status = {
        name: ComponentStatus(up=up[name], address=components.address(context, name), pid=components.pid(context, name))
        for name in names
    }
    active_faults = load_faults(context.paths)
    channel_faults = load_channel_faults(context.paths)
    reasons = [f"{name} is down" for name, is_up in up.items() if not is_up]
    if roles.get("main") != "primary":
        reasons.append(f"main's database is {roles.get('main')}, not primary")
    if roles.get("dr") != "standby":
        reasons.append(f"dr's database is {roles.get('dr')}, not a standby")
    if not replication.streaming:
        reasons.append("dr is not streaming from main")
    elif not replication.caught_up_within_1s:
        reasons.append(f"dr lags main by more than 1 s ({replication.lag_bytes} bytes behind)")
    if dns.points_at != "main":
        reasons.append(f"the DNS record names {dns.points_at or dns.value or 'nothing known'}, not main")
    if not services["main"].healthy:
        reasons.append(f"main's service is not healthy ({services['main'].http_status or services['main'].detail})")
    if services["dr"].http_status is None:
        reasons.append("dr's service does not answer")
    if telephony.routing and telephony.routing != NORMAL_ROUTING:
        routing = ", ".join(f"{site} {state}" for site, state in telephony.routing.items())
        reasons.append(f"the SBC's dispatcher has {routing}, not main active and dr inactive")
    reasons += [f"fault {name} active since {at}" for name, at in active_faults.items()]
    reasons += [f"channel fault {name} active since {at}" for name, at in channel_faults.items()]
    reasons += [f"site {site} is powered off" for site in context.state.powered_off]
    reasons += [f"drill leftover: {leftover}" for leftover in leftovers]
    plane = control_plane.status(context) if context.state.control_plane else None
    if plane is not None:
        reasons += [f"the control plane's {name} is down" for name, pid in
                    [("prefect server", plane.server_pid), ("intake", plane.intake_pid),
                     *((f"worker at {site}", pid) for site, pid in
                                                             plane.workers.items() if site not in context.state.powered_off)]
                    if pid is None]
    memory = components.memory_kib(context)
    memory_mib = {kind: round(sum(usage[f"{kind}_kib"] for usage in memory.values()) / 1024, 1)
                  for kind in ("rss", "pss")}
    plan_file: Path = context.paths.plan_file
    return LabStatus(
        lab_dir=str(context.paths.root), mode=context.state.mode,
        plan=str(plan_file) if plan_file.exists() else None,
        running=any(up.values()), normal=not reasons, not_normal_because=reasons,
        components=component_status, databases=roles, replication=replication, dns=dns, services=services,
        faults=active_faults, channel_faults=channel_faults, powered_off=list(context.state.powered_off), drill_leftovers=leftovers,
        memory_mib=memory_mib, control_plane=plane, telephony=telephony,
    )


def status_dict(context: LabContext) -> dict[str, Any]:
    return status(context).model_dump(mode="json")
