"""The lab's components by name: how to start, stop, find and reach each one.

Names: ``moto``, ``s3-tls``, ``smtp``, ``chat``, ``sshd-main``, ``sshd-dr``, ``postgres-main``, ``postgres-dr``,
``postgres-calllog``, ``service-main``, ``service-dr``, ``callgen``, ``kamailio`` (the carrier's SBC), ``pbx-main``,
``pbx-dr``, ``softphones-main``, ``softphones-dr`` (the agents' registrations kept fresh), ``phones`` (the
emergency contacts').

The SIP components listen on UDP: a PBX or the phones are up when they answer OPTIONS; Kamailio when its JSON-RPC (TCP) accepts.
"""

from __future__ import annotations

import os
import signal
import sys

from . import kamailio, postgres, s3_tls, sshd
from .context import LabContext
from .pbx import listen_address
from .ports import port_free
from .processes import (
    LabError,
    is_alive,
    log_tail,
    process_tree,
    proportional_kib,
    read_pid,
    resident_kib,
    start_daemon,
    stop_tree,
    wait_until,
)
from .state import COMPONENT_SIDES

PYTHON_MODULES: dict[str, str] = {
    "moto": "lifeline.infra.lab.moto_server",
    "smtp": "lifeline.infra.lab.smtp",
    "chat": "lifeline.infra.lab.chat",
    "service-main": "lifeline.infra.lab.callcenter",
    "service-dr": "lifeline.infra.lab.callcenter",
    "callgen": "lifeline.infra.lab.callgen",
    "pbx-main": "lifeline.infra.lab.pbx",
    "pbx-dr": "lifeline.infra.lab.pbx",
    "softphones-main": "lifeline.infra.lab.softphones",
    "softphones-dr": "lifeline.infra.lab.softphones",
    "phones": "lifeline.infra.lab.phones",
}
SITE_ARGUMENT = ("service-", "pbx-", "softphones-")  # components that take --site
LISTENING_ON_NO_PORT = ("callgen", "softphones-main", "softphones-dr")  # they only call out
NATIVE_DAEMONS = {"s3-tls": s3_tls.start, "kamailio": kamailio.start}  # Debian's programs, with configs the lab writes


def side(name: str) -> str:
    return COMPONENT_SIDES[name]


def port(context: LabContext, name: str) -> int | None:
    """The port it takes requests on (None for the call generator and the softphones). Kamailio's is SIP's (UDP);
    its JSON-RPC listens on ``ports.sip_rpc`` (TCP)."""
    if name in LISTENING_ON_NO_PORT:
        return None
    if name == "kamailio":
        return context.state.ports.sip
    return context.state.ports.for_component(name)


def host(context: LabContext, name: str) -> str:
    """The address it listens on: its side's, but a PBX of a --netns lab listens on its end of the carrier's trunk."""
    if name.startswith("pbx-"):
        return listen_address(context.state, side(name))
    return context.address(side(name))


def address(context: LabContext, name: str) -> str | None:
    """``host:port`` where the component listens (None for the call generator and the softphones)."""
    listening_port = port(context, name)
    return None if listening_port is None else f"{host(context, name)}:{listening_port}"


def pid(context: LabContext, name: str) -> int | None:
    if name.startswith("postgres-"):
        return postgres.pid(context, name.removeprefix("postgres-"))
    if name.startswith("sshd-"):
        return sshd.pid(context, name.removeprefix("sshd-"))
    found = read_pid(context.paths.pid_file(name))
    return found if is_alive(found, context.marker) else None


def processes(context: LabContext, name: str) -> list[int]:
    """Every pid of a component: its main process and all descendants (PostgreSQL backends,
    sshd sessions...)."""
    main_pid = pid(context, name)
    return process_tree(main_pid) if main_pid else []


def memory_kib(context: LabContext) -> dict[str, dict[str, int]]:
    """Per component: process count, resident (RSS) and proportional (PSS) memory in KiB."""
    usage: dict[str, dict[str, int]] = {}
    for name in COMPONENT_SIDES:
        pids = processes(context, name)
        usage[name] = {"processes": len(pids), "rss_kib": sum(map(resident_kib, pids)),
                       "pss_kib": sum(map(proportional_kib, pids))}
    return usage


def listening(context: LabContext, name: str) -> bool:
    listening_port = port(context, name)
    if listening_port is None:
        return True
    if name == "kamailio":
        return context.probe_port("ops", context.state.ports.sip_rpc)
    if name.startswith("pbx-") or name == "phones":
        address = host(context, name)
        try:
            return context.in_side(side(name), lambda: kamailio.options_ok(address, listening_port))
        except LabError:  # the namespace is gone
            return False
    return context.probe_port(side(name), listening_port)


def is_up(context: LabContext, name: str) -> bool:
    return pid(context, name) is not None and listening(context, name)


def check_port_free(context: LabContext, name: str) -> None:
    """Before starting: the port must not be held by something that is not ours."""
    taken: list[int] = []
    if name == "kamailio":
        ports = context.state.ports
        ops = context.address("ops")
        if context.probe_port("ops", ports.sip_rpc):
            taken.append(ports.sip_rpc)
        if not context.in_side("ops", lambda: port_free(ports.sip, ops)):
            taken.append(ports.sip)
    elif name.startswith("pbx-") or name == "phones":
        address, udp_port = host(context, name), context.state.ports.for_component(name)
        if not context.in_side(side(name), lambda: port_free(udp_port, address)):
            taken.append(udp_port)
    elif (listening_port := port(context, name)) is not None and context.probe_port(side(name), listening_port):
        taken.append(listening_port)
    if taken:
        raise LabError(f"port {', '.join(map(str, taken))} for {name} is in use by another process "
                       f"(choose other ports: `lab up --port-base N` or `--free-ports` on a new LIFELINE_HOME)")


def _python_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def start_python(context: LabContext, name: str) -> int:
    running = pid(context, name)
    if running:
        return running
    check_port_free(context, name)
    argv = [sys.executable, "-m", PYTHON_MODULES[name], "--lab-dir", str(context.paths.root)]
    if name.startswith(SITE_ARGUMENT):
        argv += ["--site", side(name)]
    if name == "moto":
        (context.paths.run_dir / "moto.ready").unlink(missing_ok=True)
    return start_daemon(argv, pid_file=context.paths.pid_file(name), log_file=context.paths.log_file(name),
                        netns=context.namespace(side(name)), env=_python_environment())


def wait_python(context: LabContext, name: str, started: int, timeout: float = 20.0) -> None:
    """Wait until a started Python component serves (moto: until its bootstrap is done)."""
    log = context.paths.log_file(name)

    def ready() -> bool:
        if not is_alive(started):
            return True
        if name == "moto":
            return read_pid(context.paths.run_dir / "moto.ready") == started
        return listening(context, name)

    if not wait_until(ready, timeout, 0.05) or not is_alive(started):
        raise LabError(f"{name} did not come up: {log_tail(log)}")


def start(context: LabContext, name: str) -> int:
    """Start one component and wait until it serves (idempotent)."""
    if name.startswith("postgres-"):
        cluster = name.removeprefix("postgres-")
        if postgres.pid(context, cluster) is None:
            check_port_free(context, name)
        return postgres.start(context, cluster)
    if name.startswith("sshd-"):
        site = name.removeprefix("sshd-")
        if sshd.pid(context, site) is None:
            check_port_free(context, name)
        return sshd.start(context, site)
    running = pid(context, name)
    if running:
        return running
    if name in NATIVE_DAEMONS:
        check_port_free(context, name)
        started = NATIVE_DAEMONS[name](context)
        if not wait_until(lambda: listening(context, name) or not is_alive(started), 10, 0.05) or \
                not is_alive(started):
            raise LabError(f"{name} did not come up: {log_tail(context.paths.log_file(name))}")
        return started
    started = start_python(context, name)
    wait_python(context, name, started)
    return started


def stop(context: LabContext, name: str, *, crash: bool = False) -> list[int]:
    """Stop one component. ``crash``: the way a fault or a power cut does it (PostgreSQL
    ``-m immediate``, SIGKILL for the rest); otherwise a clean, fast stop."""
    if name.startswith("postgres-"):
        return postgres.stop(context, name.removeprefix("postgres-"), "immediate" if crash else "fast")
    if name.startswith("sshd-"):
        return sshd.stop(context, name.removeprefix("sshd-"))
    stopped = stop_tree(pid(context, name), first_signal=signal.SIGKILL if crash else signal.SIGTERM, timeout=3.0)
    context.paths.pid_file(name).unlink(missing_ok=True)
    return stopped
