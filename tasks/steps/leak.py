"""The steps of the data-leak procedure: isolate a compromised host, move the backups to a clean
repository holding only trusted snapshots, and retire the old repository.

What "revoked" means here, for a host Lifeline cannot trust any more (and so must not log in to):

- **SSH**: the compromised host's *host key* is removed from the plan's known_hosts file. Lifeline
  (and anything using that file) then refuses to talk to whatever answers at that address, so a
  compromised or impersonated host is never trusted with commands or credentials again until a
  person re-keys it. Lifeline cannot remove keys from the host's own authorized_keys without
  logging in to it, which is exactly what it must not do.
- **Database**: the role the host used (`database_role`) gets `NOLOGIN` at the current primary
  (roles are cluster-wide and replicate to the standby) and its open sessions are terminated.
- **Storage**: the AWS access key in the old repository's `environment_file` is deactivated
  (IAM UpdateAccessKey Status=Inactive), unless it is also Lifeline's own AWS key (then it is
  recorded as "rotate by hand", because deactivating it would cut off the recovery itself). A
  local repository has no storage credentials: its password is what opens it, and the password
  is retired with the old repository.
- **Old repository**: kept untouched as evidence and marked revoked in the record; the new
  repository has a new random password, so the old password does not open it (checked).

Trust: only snapshot ids the ledger recorded before the incident time T are copied, never
snapshots chosen by time: restic's snapshot time is set by the client (`backup --time`).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paramiko
from lifeline.configs.base import RESTIC_REMOTE_SCHEMES
from lifeline.configs.plan import Plan
from lifeline.configs.settings import Settings
from lifeline.tasks.adapters.environment_file import read_environment_file
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.postgres.connection import PostgresError, connection_info, database_session
from lifeline.tasks.adapters.restic import ResticRepository, WrongPassword
from lifeline.tasks.run.adapter_inputs import aws_session
from lifeline.tasks.run.holds import Holds, RepositoryHold
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.steps.repository_slots import repository_key, repository_slots
from lifeline.tasks.steps.step import step
from psycopg import sql


class LeakRecoveryFailed(LifelineError):
    pass


@dataclass
class Done:
    """A step's result: its detail goes into the journal; warnings mark the step "warning"."""

    detail: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Copied(Done):
    copies: dict[str, str] = field(default_factory=dict)  # trusted id in the old repository -> id in the new


# --- isolate the host ----------------------------------------------------------------------------


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def line_names_host(line: str, name: str) -> bool:
    fields = line.split()
    if len(fields) < 3 or line.lstrip().startswith("#"):
        return False
    for entry in fields[0].lstrip("@").split(","):
        if entry == name or (entry.startswith("|1|") and paramiko.HostKeys.hash_host(name, entry) == entry):
            return True
    return False


@step(retries=0, timeout_seconds=30)
def revoke_host_key(plan: Plan, host_name: str) -> Done:
    """Remove the compromised host's key from the plan's known_hosts: nobody using it trusts the host."""
    if host_name not in plan.hosts:
        raise LeakRecoveryFailed(f"host {host_name!r} is not in the plan (known: {', '.join(plan.hosts)})")
    host = plan.hosts[host_name]
    name = known_hosts_name(host.address, host.port)
    path = Path(host.known_hosts_file)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    removed = [line for line in lines if line_names_host(line, name)]
    kept = [line for line in lines if line not in removed]
    if removed:
        temporary = path.with_name(f".{path.name}.lifeline")
        temporary.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    return Done(detail={
        "host": host_name, "known_hosts_file": str(path), "entry": name,
        "host_keys_removed": [" ".join(line.split()[1:2]) for line in removed],
        "already_revoked": not removed,
    })


def primary_instance(database: Any) -> tuple[str, Any] | None:
    ordered = sorted(database.instances.items(), key=lambda item: item[0] != database.primary)
    for site, instance in ordered:
        try:
            with database_session(connection_info(instance.dsn, instance.passfile), f"look at {site}") as session:
                row = session.execute("SELECT pg_is_in_recovery()").fetchone()
        except PostgresError:
            continue
        if row is not None and row[0] is False:
            return site, instance
    return None


@step(retries=1, retry_delay_seconds=2, timeout_seconds=60)
def revoke_database_role(plan: Plan, role: str | None) -> Done:
    """`ALTER ROLE … NOLOGIN` at each database's current primary, and end the role's sessions."""
    if role is None:
        return Done(detail={"database_role": None, "revoked": "no database role named in the scenario"})
    done: dict[str, Any] = {"database_role": role, "databases": {}}
    warnings = []
    for name, database in plan.databases.items():
        found = primary_instance(database)
        if found is None:
            warnings.append(f"database {name}: no primary answers; {role} not revoked there")
            continue
        site, instance = found
        with database_session(connection_info(instance.dsn, instance.passfile), f"revoke {role} at {site}") as session:
            exists = session.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            if exists is None:
                done["databases"][name] = {"site": site, "role": "absent"}
                continue
            session.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
            ended = session.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
                [role],
            ).fetchone()
            done["databases"][name] = {"site": site, "login_revoked": True, "could_log_in_before": bool(exists[0]),
                                       "sessions_terminated": int(ended[0]) if ended else 0}
    if not done["databases"] and not warnings:
        warnings.append("the plan has no databases: no role revoked")
    return Done(detail=done, warnings=warnings)


@step(retries=1, retry_delay_seconds=2, timeout_seconds=60)
def revoke_storage_access(plan: Plan, repository_name: str) -> Done:
    """Deactivate the old repository's AWS access key, unless it is Lifeline's own (then: by hand)."""
    entry = plan.repositories[repository_name]
    environment = read_environment_file(entry.environment_file)
    key_id = environment.get("AWS_ACCESS_KEY_ID")
    detail: dict[str, Any] = {"repository": repository_name}
    if not key_id:
        detail["storage"] = ("no storage credentials (a local repository): its password is what opens it, "
                             "and that password is retired with the old repository")
        return Done(detail=detail)
    detail["access_key"] = f"…{key_id[-4:]}"
    own = read_environment_file(plan.aws.credentials_file).get("AWS_ACCESS_KEY_ID") if plan.aws else None
    if own == key_id or plan.aws is None:
        why = "it is also Lifeline's own AWS key" if own == key_id else "the plan has no `aws` section"
        detail["deactivated"] = False
        return Done(detail=detail, warnings=[f"access key …{key_id[-4:]} not deactivated ({why}): rotate it by hand"])
    session = aws_session(plan.aws)
    owner = session.call("iam", "get_access_key_last_used", AccessKeyId=key_id).get("UserName")
    parameters = {"AccessKeyId": key_id, "Status": "Inactive", **({"UserName": owner} if owner else {})}
    session.call("iam", "update_access_key", **parameters)
    detail.update(deactivated=True, user=owner)
    return Done(detail=detail)


@step(retries=2, retry_delay_seconds=[2, 10], timeout_seconds=120)
def hold_old_repository(old: ResticRepository, ledger: Ledger, run_id: str, reason: str) -> Done:
    """Nothing forgotten or pruned in it from now on: the trusted snapshots are there and nowhere else. A
    retention already holding the repository whole finishes first; every later one is skipped, recorded "held"."""
    wanted = RepositoryHold(repository=repository_key(old), name=old.name, url=old.display_url, reason=reason,
                            run_id=run_id)
    hold = Holds(ledger).place(wanted)
    return Done(detail={"repository": old.name, "held_by": hold.placed_by, "since": hold.since.isoformat(),
                        "already_held": hold.run_id != run_id})


# --- the new repository ---------------------------------------------------------------------------


def clean_repository(old: ResticRepository, url: str, password_file: Path, settings: Settings,
                     plan: Plan) -> ResticRepository:
    """The new repository's adapter: a remote one signs with Lifeline's own AWS key, never the old one."""
    environment = {}
    if url.startswith(RESTIC_REMOTE_SCHEMES) and plan.aws is not None:
        environment = read_environment_file(plan.aws.credentials_file)
    return ResticRepository(name=f"{old.name}-clean", url=url, password_file=password_file,
                            environment=environment, cache_dir=settings.restic_cache_dir,
                            binary=settings.restic_binary)


def _write_new_password(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    os.chmod(path, 0o600)


@step(retries=0, timeout_seconds=300)
def create_clean_repository(old: ResticRepository, new: ResticRepository) -> Done:
    """A new random password (0600) and `init --copy-chunker-params` from the old repository.

    Idempotent: a repository that already exists and opens with the password file is reused.
    """
    password_file = Path(new.password_file)
    reused = password_file.exists() and new.exists()
    if not reused:
        if not password_file.exists() and new.local_path is not None and new.exists():
            raise LeakRecoveryFailed(f"{new.display_url} already exists but {password_file} does not: "
                                     "choose another new_repository_url")
        if password_file.exists():
            password_file.unlink()  # a password from an interrupted attempt never protected anything
        _write_new_password(password_file)
        new.init(copy_chunker_params_from=old)
    new.snapshots()  # opens with the new password
    return Done(detail={
        "new_repository": new.display_url, "reused": reused, "chunker_params_from": old.display_url,
        "new_password_file": str(password_file), "new_password_file_mode": oct(password_file.stat().st_mode & 0o777),
    })


@step(retries=0, timeout_seconds=6 * 3600)
def copy_trusted_snapshots(old: ResticRepository, new: ResticRepository, tags: list[str], trusted: list[str],
                           incident_at: datetime, locks_dir: Path) -> Copied:
    """Copy, by id, the snapshots the ledger recorded before T; every other one is refused. Holds a slot of the
    old repository, as a restore does, so that a nightly backup's prune waits for the copy, not the reverse."""
    with repository_slots(old, locks_dir, exclusive=False):
        return _copy_trusted(old, new, tags, trusted, incident_at)


def _copy_trusted(old: ResticRepository, new: ResticRepository, tags: list[str], trusted: list[str],
                  incident_at: datetime) -> Copied:
    present = old.snapshots(tags=tags)
    trusted_set = set(trusted)
    to_copy = [snapshot.id for snapshot in present if snapshot.id in trusted_set]
    refused = [{"id": snapshot.id, "time": snapshot.time.isoformat()} for snapshot in present
               if snapshot.id not in trusted_set]
    missing = sorted(trusted_set - {snapshot.id for snapshot in present})
    if not to_copy:
        raise LeakRecoveryFailed(f"no snapshot recorded before {incident_at.isoformat()} is in {old.display_url}: "
                                 "nothing trusted to copy")
    new.copy_from(old, snapshot_ids=to_copy)
    copies: dict[str, str] = {}
    untrusted = []
    for snapshot in new.snapshots(tags=tags):
        if snapshot.original in trusted_set:
            copies[snapshot.original] = snapshot.id
        else:
            untrusted.append(snapshot.id)
    lost = [snapshot_id for snapshot_id in to_copy if snapshot_id not in copies]
    if lost or untrusted:
        raise LeakRecoveryFailed(f"the new repository does not hold exactly the trusted snapshots "
                                 f"(not copied: {lost}; untrusted there: {untrusted})")
    return Copied(
        detail={"incident_at": incident_at.isoformat(), "copied": [{"id": source, "copy": copies[source]}
                                                                   for source in to_copy],
                "refused": refused, "recorded_but_absent": missing},
        copies=copies,
    )


@step(retries=0, timeout_seconds=120)
def retire_old_repository(old: ResticRepository, new: ResticRepository, shared_with: list[str]) -> Done:
    """Keep the old repository as evidence, mark it revoked, and prove its password no longer opens the new one."""
    probe = ResticRepository(name=f"{new.name} (old password)", url=new.url, password_file=old.password_file,
                             environment=new.environment, cache_dir=new.cache_dir, binary=new.binary)
    try:
        probe.snapshots()
    except WrongPassword:
        pass
    else:
        raise LeakRecoveryFailed(f"the old password opens {new.display_url}: it must not")
    warnings = [f"repository {name} uses the same (compromised) password file: rotate it too" for name in shared_with]
    return Done(detail={"old_repository": old.display_url, "revoked": True, "kept_as_evidence": True,
                        "old_password_opens_new_repository": False, "password_shared_with": shared_with},
                warnings=warnings)
