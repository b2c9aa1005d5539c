"""The lab's components by name: how to start, stop, find and reach each one.

Names: ``moto``, ``s3-tls``, ``smtp``, ``chat``, ``sshd-main``, ``sshd-dr``, ``postgres-main``, ``postgres-dr``,
``postgres-calllog``, ``service-main``, ``service-dr``, ``callgen``.
"""

from __future__ import annotations

import os
import signal
import sys

from . import postgres, s3_tls, sshd
from .context import LabContext
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
}


def side(name: str) -> str:
    return COMPONENT_SIDES[name]


def port(context: LabContext, name: str) -> int | None:
    return None if name == "callgen" else context.state.ports.for_component(name)


def address(context: LabContext, name: str) -> str | None:
    """``host:port`` where the component listens (None for the call generator)."""
    listening = port(context, name)
    return None if listening is None else f"{context.address(side(name))}:{listening}"


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
    return listening_port is None or context.probe_port(side(name), listening_port)


def is_up(context: LabContext, name: str) -> bool:
    return pid(context, name) is not None and listening(context, name)


def check_port_free(context: LabContext, name: str) -> None:
    """Before starting: the port must not be held by something that is not ours."""
    listening_port = port(context, name)
    if listening_port is not None and context.probe_port(side(name), listening_port):
        raise LabError(f"port {listening_port} for {name} is in use by another process "
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
    if name.startswith("service-"):
        argv += ["--site", name.removeprefix("service-")]
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
    if name == "s3-tls":
        check_port_free(context, name)
        started = s3_tls.start(context)
        if not wait_until(lambda: listening(context, name) or not is_alive(started), 10, 0.05) or \
                not is_alive(started):
            raise LabError(f"s3-tls did not come up: {log_tail(context.paths.log_file(name))}")
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
