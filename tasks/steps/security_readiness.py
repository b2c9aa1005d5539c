"""Ready to contain a compromise: can the data-leak procedure's isolation steps run right now, and can every
repository's credentials be rotated? Checked when a security warning comes in, before anything is compromised."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lifeline.configs.base import RESTIC_REMOTE_SCHEMES
from lifeline.configs.drills import LeakRecovery
from lifeline.configs.plan import Plan
from lifeline.configs.settings import Settings
from lifeline.tasks.adapters.postgres.connection import connection_info, database_session
from lifeline.tasks.steps.leak import known_hosts_name, line_names_host, primary_instance
from lifeline.tasks.steps.preflight import Readiness, run_probes
from lifeline.tasks.steps.repositories import open_repository
from lifeline.tasks.steps.step import step


def writable_folder(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def host_key_revocable(plan: Plan, host_name: str) -> tuple[bool, str]:
    host = plan.hosts[host_name]
    path, name = Path(host.known_hosts_file), known_hosts_name(host.address, host.port)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if not any(line_names_host(line, name) for line in lines):
        return False, f"{path} holds no key for {name}: already revoked, or never trusted"
    if not (os.access(path, os.W_OK) and writable_folder(path.parent)):
        return False, f"{path} cannot be rewritten by this user: the host key could not be removed"
    return True, f"the key of {name} can be removed from {path}"


def role_revocable(plan: Plan, role: str | None) -> tuple[bool, str]:
    if role is None:
        return True, "the scenario names no database role"
    found = []
    for name, database in plan.databases.items():
        primary = primary_instance(database)
        if primary is None:
            return False, f"database {name}: no primary answers, {role} could not be revoked"
        site, instance = primary
        with database_session(connection_info(instance.dsn, instance.passfile), f"look at {role} at {site}") as session:
            exists = session.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            may = session.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")\
                .fetchone()
        if exists and not (may and may[0]):
            return False, f"database {name} at {site}: Lifeline's role may not ALTER ROLE {role}"
        found.append(f"{name} at {site}" + ("" if exists else f" (no role {role})"))
    return True, f"{role} can be set NOLOGIN at " + ", ".join(found or ["no database"])


def clean_repository_creatable(leak: LeakRecovery) -> tuple[bool, str]:
    problems = []
    if not leak.new_repository_url.startswith(RESTIC_REMOTE_SCHEMES):  # a local repository: its folder
        target = Path(leak.new_repository_url.removeprefix("local:"))
        if target.exists() and any(target.iterdir()):
            problems.append(f"{target} exists and is not empty")
        elif not writable_folder(target.parent):
            problems.append(f"{target.parent} is not a writable folder")
    if not writable_folder(Path(leak.new_password_file).parent):
        problems.append(f"{Path(leak.new_password_file).parent} is not a writable folder for the new password")
    return (False, "; ".join(problems)) if problems else (True, f"{leak.new_repository_url} can be created")


def credentials_rotatable(plan: Plan, settings: Settings, name: str) -> tuple[bool, str]:
    """The current password opens the repository (restic lists its keys), and a new password can be written
    beside the current one, which only its owner reads."""
    entry = plan.repositories[name]
    keys = open_repository(plan, name, settings).keys()
    password_file = Path(entry.password_file)
    mode = stat.S_IMODE(password_file.stat().st_mode)
    if mode & 0o077:
        return False, f"{password_file} is mode {mode:04o}: others can read the password (chmod 600)"
    if not writable_folder(password_file.parent):
        return False, f"{password_file.parent} is not writable: a new password cannot be written there"
    return True, f"opened with the current password ({len(keys)} key(s)); {password_file} is 0600"


def assess_compromise_readiness(plan: Plan, settings: Settings) -> Readiness:
    probes = []
    for scenario_name, scenario in plan.scenarios.items():
        leak = scenario.recovery.leak
        if leak is None:
            continue
        probes += [
            (f"{scenario_name}: host key of {leak.host}", lambda leak=leak: host_key_revocable(plan, leak.host)),
            (f"{scenario_name}: database role", lambda leak=leak: role_revocable(plan, leak.database_role)),
            (f"{scenario_name}: clean repository", lambda leak=leak: clean_repository_creatable(leak)),
        ]
    probes += [(f"repository {name}: credentials", lambda name=name: credentials_rotatable(plan, settings, name))
               for name in plan.repositories]
    return Readiness(target_site=plan.name, items=run_probes(probes), action="contain a compromise of")


@step(retries=0, timeout_seconds=120)
def check_compromise_readiness(plan: Plan, settings: Settings) -> Readiness:
    return assess_compromise_readiness(plan, settings)
