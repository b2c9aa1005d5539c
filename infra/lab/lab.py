"""The lab's verbs: up, down, fault, heal, power (status is in status.py).

Every verb takes ``home`` (default ``$LIFELINE_HOME`` or ``~/.lifeline``); the lab lives in
``home/lab``. Verbs that change the lab hold an exclusive lock on ``lab/.lock``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Literal

from . import agents, components, faults, plan, postgres, site_files, sshd
from . import control_plane as control_plane_of_lab
from .context import LabContext
from .processes import (
    LabError,
    LabUsageError,
    LabUser,
    boot_clock,
    ensure_lab_user,
    exclusive_lock,
    grant_traverse,
    is_root,
    lab_user_by_name,
    processes_mentioning,
    say,
    started_before,
    stop_tree,
    wait_gone,
)
from .state import (
    COMPONENT_SIDES,
    Addresses,
    LabPaths,
    LabState,
    Ports,
    load_all_faults,
    load_state,
    save_faults,
    save_state,
    site_components,
    write_secret,
)

Log = Callable[[str], None]
DEFAULT_USER = "lifeline"


def _paths(home: Path | None) -> LabPaths:
    return LabPaths.from_home(home)


def open_lab(home: Path | None = None) -> LabContext:
    """The context of an existing lab (raises LabUsageError if there is none)."""
    paths = _paths(home)
    state = load_state(paths)
    if state is None:
        raise LabUsageError(f"no lab at {paths.root}; run `lifeline lab up`")
    try:
        user = lab_user_by_name(state.user)
    except KeyError as error:
        raise LabError(f"the lab user {state.user!r} no longer exists") from error
    return LabContext(paths, state, user)


@contextmanager
def _locked_lab(home: Path | None) -> Iterator[LabContext]:
    """An existing lab, read again under its lock (so concurrent verbs do not lose updates)."""
    paths = open_lab(home).paths  # raises LabUsageError before creating anything
    with exclusive_lock(paths.lock_file):
        yield open_lab(home)


def _new_state(user: LabUser, netns: bool, port_base: int | None, free_ports: bool, call_rate: float | None) -> LabState:
    if netns:
        from .netns import SIDE_ADDRESSES

        addresses = Addresses(**SIDE_ADDRESSES)
        dns_values = {"main": SIDE_ADDRESSES["main"], "dr": SIDE_ADDRESSES["dr"]}
    else:
        addresses = Addresses()
        dns_values = {"main": "127.0.0.1", "dr": "127.0.0.2"}
    ports = Ports.free() if free_ports and not netns else Ports.from_base(port_base) if port_base else Ports()
    state = LabState(mode="netns" if netns else "loopback", user=user.name, ports=ports,
                     addresses=addresses, dns_values=dns_values)
    if call_rate is not None:
        state.call_rate = call_rate
    return state


def _reconcile(existing: LabState, user: LabUser, netns: bool, port_base: int | None, call_rate: float | None) -> bool:
    """Check a request against the persisted lab; returns whether the call rate changed."""
    mode = "netns" if netns else "loopback"
    if existing.mode != mode:
        raise LabUsageError(f"this lab was set up in {existing.mode} mode; `lifeline lab down --purge` to start over")
    if port_base is not None and Ports.from_base(port_base) != existing.ports:
        raise LabUsageError(f"this lab already uses ports from {existing.ports.ssh_main}; "
                            "`lifeline lab down --purge` to choose others")
    if existing.user != user.name:
        raise LabUsageError(f"this lab runs as {existing.user!r}, not {user.name!r}")
    if call_rate is not None and call_rate != existing.call_rate:
        existing.call_rate = call_rate
        return True
    return False


def _prepare_directories(context: LabContext) -> None:
    paths = context.paths
    for directory, mode in ((paths.root, 0o755), (paths.run_dir, 0o755), (paths.logs_dir, 0o755),
                            (paths.secrets_dir, 0o711), (paths.ssh_dir, 0o700),
                            *((paths.side_dir(side), 0o755) for side in ("main", "dr", "ops"))):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(mode)
    grant_traverse(paths.root, context.user)
    for owned in (paths.pgbackrest_dir, paths.pgbackrest_repository_dir):  # pgBackRest runs as the lab user
        owned.mkdir(mode=0o700, exist_ok=True)
        if not context.user.is_current:
            os.chown(owned, context.user.uid, context.user.gid)
    import secrets

    for secret_file in (paths.restic_password_file, paths.intake_token_file):
        if not secret_file.exists():
            write_secret(secret_file, secrets.token_urlsafe(32) + "\n")
    if not paths.smtp_credentials_file.exists():
        write_secret(paths.smtp_credentials_file, f"SMTP_USERNAME=lifeline\nSMTP_PASSWORD={secrets.token_urlsafe(24)}\n")
    postgres.ensure_password(context)


def _blocked(context: LabContext) -> dict[str, str]:
    """Components that must stay stopped: stopped by an active fault, or on a powered-off site."""
    blocked: dict[str, str] = {}
    for fault_name in load_all_faults(context.paths):
        for component in faults.FAULT_STOPS.get(fault_name, ()):
            blocked[component] = f"fault {fault_name} active; `lab heal` undoes it"
    for site in context.state.powered_off:
        for name in site_components(site):
            blocked[name] = f"site {site} is powered off; `lab power {site} on`"
    return blocked


def _parallel(tasks: list[Callable[[], None]]) -> None:
    """Run tasks on threads; raise the first failure after all have finished."""
    with ThreadPoolExecutor(max_workers=max(1, len(tasks))) as executor:
        futures = [executor.submit(task) for task in tasks]
    errors = [future.exception() for future in futures if future.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]


def _start_unless_blocked(context: LabContext, name: str, blocked: dict[str, str], log: Log) -> None:
    if name in blocked:
        if components.pid(context, name) is None:
            log(f"{name}: left stopped ({blocked[name]})")
        return
    components.start(context, name)


def _databases(context: LabContext, blocked: dict[str, str], create: bool, log: Log) -> None:
    """main and the call log (in parallel), the CRM seed, then dr (built from main if missing)."""

    def primary(cluster: str) -> None:
        name = f"postgres-{cluster}"
        if create:
            postgres.initialise(context, cluster)
            if applied := postgres.apply_settings(context, cluster):  # a running cluster from an older lab
                log(applied)
        elif not postgres.initialised(context, cluster):
            log(f"{name}: no cluster; `lab up` creates it")
            return
        reason = faults.replaced_primary_reason(context, cluster)
        if reason and postgres.pid(context, cluster) is None:
            log(f"{name}: left stopped: {reason}")
            return
        _start_unless_blocked(context, name, blocked, log)

    _parallel([lambda: primary("main"), lambda: primary("calllog")])
    if create and postgres.pid(context, "calllog"):
        postgres.seed_call_log(context)
    main_running = postgres.pid(context, "main") is not None
    if create and main_running and not context.state.crm_seeded:
        postgres.seed_crm(context)
        context.state.crm_seeded = True
        save_state(context.paths, context.state)
    if create and main_running and not postgres.is_standby(context, "main"):
        postgres.ensure_app_role(context)
    if create and not postgres.initialised(context, "dr"):
        if main_running and not postgres.is_standby(context, "main"):
            log("building the dr standby from main (pg_basebackup)")
            postgres.build_standby(context)
        else:
            log("postgres-dr: no cluster and main is not a running primary to clone it from")
    elif create:
        postgres.configure(context, "dr")
        if applied := postgres.apply_settings(context, "dr"):
            log(applied)
    if postgres.initialised(context, "dr"):
        primary_reason = faults.replaced_primary_reason(context, "dr")
        if primary_reason and postgres.pid(context, "dr") is None:
            log(f"postgres-dr: left stopped: {primary_reason}")
        else:
            _start_unless_blocked(context, "postgres-dr", blocked, log)


def _ensure_running(context: LabContext, create: bool, log: Log) -> None:
    """Start every component that should run and does not (the heart of up and heal)."""
    blocked = _blocked(context)
    if "moto" not in blocked and components.pid(context, "moto") is None:
        components.check_port_free(context, "moto")
        moto_started: int | None = components.start_python(context, "moto")
    else:
        moto_started = None
    _parallel([
        lambda: _start_unless_blocked(context, "smtp", blocked, log),
        lambda: _start_unless_blocked(context, "chat", blocked, log),
        lambda: _start_unless_blocked(context, "sshd-main", blocked, log),
        lambda: _start_unless_blocked(context, "sshd-dr", blocked, log),
        lambda: _start_unless_blocked(context, "kamailio", blocked, log),
        lambda: _databases(context, blocked, create, log),
    ])
    _parallel([
        lambda: _start_unless_blocked(context, "service-main", blocked, log),
        lambda: _start_unless_blocked(context, "service-dr", blocked, log),
    ])
    _parallel([
        lambda: _start_unless_blocked(context, "pbx-main", blocked, log),
        lambda: _start_unless_blocked(context, "pbx-dr", blocked, log),
        lambda: _start_unless_blocked(context, "phones", blocked, log),
    ])
    _log_in_agents(context, log)
    _parallel([
        lambda: _start_unless_blocked(context, "softphones-main", blocked, log),
        lambda: _start_unless_blocked(context, "softphones-dr", blocked, log),
    ])
    if moto_started is not None:
        components.wait_python(context, "moto", moto_started)
        for done in faults.reapply_channel_faults(context):  # a fresh moto has a fresh IAM
            log(done)
    _start_unless_blocked(context, "s3-tls", blocked, log)
    if postgres.pid(context, "calllog") is not None:
        _start_unless_blocked(context, "callgen", blocked, log)


def _log_in_agents(context: LabContext, log: Log) -> None:
    """The lab's agents (agent-1, agent-2 at main; agent-3, agent-4 at dr) registered at the SBC where they are
    not: at the first up, and after Kamailio restarted (it keeps registrations in memory) or they expired. Not
    at a powered-off site."""
    if components.pid(context, "kamailio") is None:
        return
    sites = [site for site in agents.LAB_AGENTS if site not in context.state.powered_off]
    for done in agents.ensure_logged_in(context, sites):
        log(done)


def up(
    home: Path | None = None,
    *,
    netns: bool = False,
    port_base: int | None = None,
    free_ports: bool = False,
    call_rate: float | None = None,
    template: Path | None = None,
    control_plane: bool = False,
    log: Log = say,
) -> Path:
    """Bring the lab up (create it the first time, repair it after); returns the plan's path."""
    started = time.monotonic()
    paths = _paths(home)
    if netns and not is_root():
        raise LabUsageError("--netns needs root (network namespaces)")
    paths.root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(paths.lock_file):
        existing = load_state(paths)
        user = ensure_lab_user(existing.user if existing else DEFAULT_USER, log=log)
        rate_changed = False
        if existing is None:
            state = _new_state(user, netns, port_base, free_ports, call_rate)
            log(f"creating the lab in {paths.root} ({state.mode}, user {user.name})")
        else:
            state = existing
            rate_changed = _reconcile(state, user, netns, port_base, call_rate)
        save_state(paths, state)
        context = LabContext(paths, state, user)
        _prepare_directories(context)
        if netns:
            from . import netns as namespaces

            namespaces.claim(paths.root)
            namespaces.ensure_links()
        if not state.recordings_seeded:
            site_files.seed_recordings(context)
            site_files.seed_ivr(context)
            state.recordings_seeded = True
            save_state(paths, state)
        site_files.ensure_greetings(context)
        sshd.prepare(context)
        if rate_changed:
            components.stop(context, "callgen")
        _ensure_running(context, create=True, log=log)
        plan_path = plan.write(context, template)
        if control_plane and not state.control_plane:
            state.control_plane = True
            save_state(paths, state)
        if state.control_plane:
            for done in control_plane_of_lab.start(context, plan_path):
                log(done)
    log(f"lab up in {time.monotonic() - started:.1f}s; plan: {plan_path}")
    return plan_path


def down(home: Path | None = None, *, purge: bool = False, log: Log = say) -> list[int]:
    """Stop everything; verify no process and no listening port is left; remove namespaces.
    ``purge`` also deletes the lab directory. Returns the pids stopped."""
    started = time.monotonic()
    paths = _paths(home)
    state = load_state(paths)
    if state is None:
        if purge and paths.root.exists():
            shutil.rmtree(paths.root)
        return []
    stopped: list[int] = []
    stopping_since = boot_clock()
    with _locked_lab(home) as context:

        def stop(name: str) -> None:
            began = time.monotonic()
            stopped.extend(components.stop(context, name))
            if time.monotonic() - began > 2.0:
                log(f"{name} took {time.monotonic() - began:.1f}s to stop")

        stopped.extend(control_plane_of_lab.stop(context))  # before the ops database it runs on
        _parallel([lambda: stop("callgen"), lambda: stop("service-main"), lambda: stop("service-dr")])
        _parallel([partial(stop, name) for name in COMPONENT_SIDES
                   if name not in ("callgen", "service-main", "service-dr")])
        stray = processes_mentioning(str(paths.root))
        for pid in stray:  # a daemon whose pid file was lost
            stopped.extend(stop_tree(pid, timeout=2.0))
        still = [pid for pid in wait_gone(stopped, 1.0) if started_before(pid, stopping_since)]
        listening = [name for name in COMPONENT_SIDES
                     if components.port(context, name) is not None and _still_listening(context, name)]
        if context.netns:
            from . import netns as namespaces

            namespaces.delete()
        if still or listening:
            raise LabError(f"lab down left processes {still} / listening {listening}")
        if purge:
            shutil.rmtree(paths.root)
    log(f"lab down in {time.monotonic() - started:.1f}s ({len(set(stopped))} processes stopped)")
    return sorted(set(stopped))


def _still_listening(context: LabContext, name: str) -> bool:
    if context.netns:
        from . import netns as namespaces

        if not namespaces.namespace_exists(COMPONENT_SIDES[name]):
            return False
    return components.listening(context, name)


def fault(name: str, home: Path | None = None) -> tuple[str, str]:
    """Inject a fault; returns (the ISO time recorded as incident time, what was done)."""
    with _locked_lab(home) as context:
        return faults.fault(context, name)


def power(site: str, state: Literal["on", "off"], home: Path | None = None) -> list[str]:
    """Out-of-band power for a site (usable as a fence command)."""
    if state not in ("on", "off"):
        raise LabUsageError(f"power state must be on or off, not {state!r}")
    with _locked_lab(home) as context:
        return faults.power_off(context, site) if state == "off" else faults.power_on(context, site)


def heal(home: Path | None = None, log: Log = say) -> list[str]:
    """Undo infrastructure and channel faults: links up, stopped components started, power back on,
    sns:Publish allowed again. Never starts a primary that has been replaced; never restores data.
    Clears both fault records (faults.json and channel-faults.json)."""
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        log(message)

    with _locked_lab(home) as context:
        active = load_all_faults(context.paths)
        if context.netns:
            from . import netns as namespaces

            namespaces.ensure_links()
            note("links: all up")
        for lost in ("recordings-lost", "crm-corrupted"):
            if lost in active:
                note(f"{lost}: cleared (the lab does not restore data: that is Lifeline's restore)")
        context.state.powered_off = []
        save_state(context.paths, context.state)
        save_faults(context.paths, {})
        for done in faults.heal_channels(context):
            note(done)
        before = {name: components.pid(context, name) for name in COMPONENT_SIDES}
        _ensure_running(context, create=False, log=note)
        for name, pid in before.items():
            if pid is None and components.pid(context, name) is not None:
                note(f"{name}: started")
        for done in faults.heal_compromise(context):  # whatever a data-leak recovery revoked
            note(done)
        if context.state.control_plane:
            for done in control_plane_of_lab.start(context, context.paths.plan_file, deploy=False):
                note(done)
        if active:
            note(f"cleared faults: {', '.join(active)}")
    return notes
