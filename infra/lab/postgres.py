"""The lab's PostgreSQL clusters, all run as the lab user (initdb refuses root).

``main``: the CRM primary. ``dr``: its streaming standby (pg_basebackup -R -X stream -S dr_slot).
``calllog``: the call log, a cluster of its own on the ops side that neither site's failure takes
down. Password authentication on TCP only (no Unix sockets); the password lives in a 0600
passfile that libpq reads through ``passfile=``/PGPASSFILE, never on a command line.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from .context import LabContext
from .processes import LabError, is_alive, log_tail, process_tree, read_pid, run, stop_tree, wait_gone, wait_until
from .state import write_secret

CLUSTERS: tuple[str, str, str] = ("main", "dr", "calllog")
CLUSTER_SIDES: dict[str, str] = {"main": "main", "dr": "dr", "calllog": "ops"}
CRM_DATABASE = "crm"
CALL_LOG_DATABASE = "calls"
REPLICATION_SLOT = "dr_slot"
APP_ROLE = "crm_app"  # the role main's application host uses at the CRM (no password: nobody logs in with it in the lab)


def binaries() -> Path:
    """The PostgreSQL bin directory ($LIFELINE_POSTGRES_BIN_DIR, as in Lifeline's settings, else
    the newest /usr/lib/postgresql/*/bin)."""
    configured = os.environ.get("LIFELINE_POSTGRES_BIN_DIR")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    if not found:
        raise LabError("PostgreSQL server binaries not found (install postgresql or set LIFELINE_POSTGRES_BIN_DIR)")
    return Path(found[-1]).parent


def tool(name: str) -> str:
    return str(binaries() / name)


def port(context: LabContext, cluster: str) -> int:
    return context.state.ports.for_component(f"postgres-{cluster}")


def address(context: LabContext, cluster: str) -> str:
    return context.address(CLUSTER_SIDES[cluster])


def dsn(context: LabContext, cluster: str, database: str) -> str:
    """A URL without the password (libpq finds it in the passfile)."""
    return f"postgresql://{context.user.name}@{address(context, cluster)}:{port(context, cluster)}/{database}"


def connection_parameters(context: LabContext, cluster: str, database: str = "postgres") -> dict[str, Any]:
    return {
        "host": address(context, cluster),
        "port": port(context, cluster),
        "user": context.user.name,
        "dbname": database,
        "passfile": str(context.paths.postgres_passfile),
        "connect_timeout": 3,
        "application_name": "lifeline-lab",
    }


def connect(context: LabContext, cluster: str, database: str = "postgres") -> Any:
    """An autocommit psycopg connection (from wherever the caller runs: use ``in_ops``)."""
    import psycopg

    return psycopg.connect(autocommit=True, **connection_parameters(context, cluster, database))


def query(context: LabContext, cluster: str, sql: str, database: str = "postgres",
          parameters: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    """Run one statement from the ops side and return its rows."""

    def execute() -> list[tuple[Any, ...]]:
        with connect(context, cluster, database) as connection:
            cursor = connection.execute(sql, parameters)
            return list(cursor.fetchall()) if cursor.description else []

    return context.in_ops(execute)


def ensure_password(context: LabContext) -> str:
    """The lab role's password: generated once, kept in the passfile (owned by the lab user)."""
    passfile = context.paths.postgres_passfile
    if passfile.exists():
        return passfile.read_text(encoding="utf-8").strip().rsplit(":", 1)[1]
    if any(initialised(context, cluster) for cluster in CLUSTERS):
        raise LabError(f"{passfile} is gone but the clusters it opens exist; `lifeline lab down --purge` to start over")
    password = secrets.token_urlsafe(24)
    write_secret(passfile, f"*:*:*:{context.user.name}:{password}\n", owner=(context.user.uid, context.user.gid))
    return password


def lab_settings(context: LabContext, cluster: str) -> str:
    listen = address(context, cluster)
    return "\n".join(
        [
            "# written by the Lifeline lab; included from postgresql.conf",
            f"listen_addresses = '{listen}'",
            f"port = {port(context, cluster)}",
            f"unix_socket_directories = '{context.paths.socket_dir(cluster)}'  # pgBackRest's way in; clients use TCP",
            "archive_mode = on                # archive_command is Lifeline's to set (`lifeline pitr setup`)",
            "track_commit_timestamp = on      # a restored point's newest transaction, to the microsecond",
            f"cluster_name = 'lab-{cluster}'",
            "fsync = off                      # lab only: a crash of the machine is not a lab scenario",
            "full_page_writes = on",
            "wal_level = replica",
            "wal_log_hints = on               # pg_rewind needs it",
            "max_wal_senders = 10",
            "max_replication_slots = 10",
            "wal_keep_size = '256MB'",
            "hot_standby = on",
            "wal_receiver_status_interval = '1s'",
            "wal_retrieve_retry_interval = '1s'  # a standby reconnects within a second",
            "shared_buffers = '32MB'",
            "max_connections = 100",
            "password_encryption = 'scram-sha-256'",
            "log_line_prefix = '%m [%p] '",
            "log_min_messages = warning",
            "",
        ]
    )


def hba_text(context: LabContext) -> str:
    user = context.user.name
    network = "10.77.0.0/16" if context.netns else "127.0.0.1/32"
    return "\n".join(
        [
            "# written by the Lifeline lab",
            f"host all         {user} {network} scram-sha-256",
            f"host replication {user} {network} scram-sha-256",
            f"host all         {user} 127.0.0.1/32 scram-sha-256",
            f"local all        {user} peer   # pgBackRest, as the cluster's owner, through the socket folder",
            "",
        ]
    )


def _write_owned(path: Path, text: str, context: LabContext) -> None:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)
    if not context.user.is_current:
        os.chown(path, context.user.uid, context.user.gid)


def make_owned_directory(context: LabContext, path: Path) -> None:
    """An empty 0700 directory owned by the lab user (initdb and pg_basebackup run as that user
    and cannot create it inside the root-owned side directory)."""
    if path.exists():
        shutil.rmtree(path)  # a half-made cluster from an interrupted `up`
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(mode=0o755, exist_ok=True)
    path.mkdir(mode=0o700)
    if not context.user.is_current:
        for owned in (path.parent, path):
            os.chown(owned, context.user.uid, context.user.gid)


def configure(context: LabContext, cluster: str) -> None:
    data = context.paths.data_dir(cluster)
    sockets = context.paths.socket_dir(cluster)
    sockets.mkdir(mode=0o700, exist_ok=True)
    if not context.user.is_current:
        os.chown(sockets, context.user.uid, context.user.gid)
    _write_owned(data / "lab.conf", lab_settings(context, cluster), context)
    _write_owned(data / "pg_hba.conf", hba_text(context), context)


def apply_settings(context: LabContext, cluster: str) -> str | None:
    """A running cluster takes what ``configure`` wrote: restarted (fast) when a setting only a restart changes
    differs from the running one (a cluster from before its socket folder and WAL archiving), else reloaded
    (pg_hba.conf). Returns what was done when it restarted, None otherwise."""
    if pid(context, cluster) is None:
        return None
    try:  # pg_file_settings reads the files now: "could not be applied" is a setting that waits for a restart
        waiting = [name for (name,) in query(context, cluster, "SELECT DISTINCT name FROM pg_file_settings "
                                             "WHERE error = 'setting could not be applied' ORDER BY name")]
    except Exception:  # noqa: BLE001 - not answering (a cut link): reloaded now, checked again by the next `up`
        waiting = []
    if not waiting:
        run([tool("pg_ctl"), "-D", str(context.paths.data_dir(cluster)), "reload"], user=context.user, timeout=15)
        return None
    stop(context, cluster)
    start(context, cluster)
    return f"postgres-{cluster}: restarted to apply {', '.join(waiting)}"


def _complete_marker(context: LabContext, cluster: str) -> Path:
    """Written (beside the data directory) once initdb or pg_basebackup has fully finished:
    PG_VERSION alone appears early and would make a half-made cluster look complete."""
    data = context.paths.data_dir(cluster)
    return data.with_name(f"{data.name}.complete")


def initialised(context: LabContext, cluster: str) -> bool:
    return (context.paths.data_dir(cluster) / "PG_VERSION").exists() and _complete_marker(context, cluster).exists()


def initialise(context: LabContext, cluster: str) -> None:
    """initdb a primary-type cluster (main or calllog) if it does not exist yet."""
    data = context.paths.data_dir(cluster)
    if initialised(context, cluster):
        configure(context, cluster)
        return
    _complete_marker(context, cluster).unlink(missing_ok=True)
    make_owned_directory(context, data)
    password = ensure_password(context)
    password_file = context.paths.secrets_dir / f".initdb-{cluster}.pw"
    write_secret(password_file, password + "\n", owner=(context.user.uid, context.user.gid))
    try:
        run(
            [tool("initdb"), "-D", str(data), "-U", context.user.name, "--auth-local=trust",
             "--auth-host=scram-sha-256", f"--pwfile={password_file}", "--no-sync", "-E", "UTF8",
             "--locale=C.UTF-8"],
            user=context.user,
            timeout=120,
        )
    finally:
        password_file.unlink(missing_ok=True)
    with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\ninclude_if_exists = 'lab.conf'\n")
    configure(context, cluster)
    _complete_marker(context, cluster).touch()


def pid(context: LabContext, cluster: str) -> int | None:
    data = context.paths.data_dir(cluster)
    found = read_pid(data / "postmaster.pid")
    return found if is_alive(found, str(data)) else None


def is_standby(context: LabContext, cluster: str) -> bool:
    """Offline fact: the cluster will start in recovery (standby.signal is present)."""
    return (context.paths.data_dir(cluster) / "standby.signal").exists()


def timeline(context: LabContext, cluster: str) -> int:
    """The newest timeline this cluster knows of, read from disk (works while stopped): the
    highest ``pg_wal/*.history`` (written at promotion) or 1."""
    histories = glob.glob(str(context.paths.data_dir(cluster) / "pg_wal" / "*.history"))
    return max([int(Path(name).stem, 16) for name in histories] or [1])


def start(context: LabContext, cluster: str) -> int:
    """pg_ctl -w start as the lab user, inside the cluster's namespace."""
    running = pid(context, cluster)
    if running:
        return running
    data = context.paths.data_dir(cluster)
    log = context.paths.log_file(f"postgres-{cluster}")
    if not log.exists():
        log.touch()
    if not context.user.is_current:
        os.chown(log, context.user.uid, context.user.gid)
    (data / "postmaster.pid").unlink(missing_ok=True)  # stale after a kill: pg_ctl would refuse
    # the socket's lock too: a killed postmaster nobody reaped yet still "exists" for PostgreSQL's check
    (context.paths.socket_dir(cluster) / f".s.PGSQL.{port(context, cluster)}.lock").unlink(missing_ok=True)
    completed = run(
        [tool("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30", "start"],
        user=context.user,
        netns=context.namespace(CLUSTER_SIDES[cluster]),
        timeout=40,
        check=False,
    )
    started = pid(context, cluster)
    if completed.returncode != 0 or not started:
        raise LabError(f"postgres-{cluster} did not start: {log_tail(log)}")
    return started


def stop(context: LabContext, cluster: str, mode: str = "fast") -> list[int]:
    """pg_ctl stop (``immediate`` is the crash-like stop faults use). Returns the stopped pids."""
    running = pid(context, cluster)
    if not running:
        return []
    tree = process_tree(running)
    run([tool("pg_ctl"), "-D", str(context.paths.data_dir(cluster)), "-m", mode, "-w", "-t", "10", "stop"],
        user=context.user, timeout=15, check=False)
    stop_tree(running, timeout=1.0)  # in case pg_ctl could not
    wait_gone(tree, 2.0)
    return tree


def wait_ready(context: LabContext, cluster: str, timeout: float = 15.0) -> None:
    def ready() -> bool:
        try:
            query(context, cluster, "SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    if not wait_until(ready, timeout, 0.1):
        raise LabError(f"postgres-{cluster} does not accept connections: {log_tail(context.paths.log_file(f'postgres-{cluster}'))}")


def seed_sql(name: str) -> str:
    return resources.files("lifeline.infra.lab").joinpath(name).read_text(encoding="utf-8")


def seed_crm(context: LabContext) -> None:
    """Create the CRM database at main with generated customers, agents and calls (once)."""
    exists = query(context, "main", "SELECT 1 FROM pg_database WHERE datname = %s", parameters=(CRM_DATABASE,))
    if not exists:
        query(context, "main", f"CREATE DATABASE {CRM_DATABASE}")

    def load() -> None:
        with connect(context, "main", CRM_DATABASE) as connection:
            present = connection.execute("SELECT to_regclass('public.calls') IS NOT NULL").fetchone()
            if present and present[0]:
                return
            with connection.transaction():
                connection.execute(seed_sql("crm.sql"))

    context.in_ops(load)


def ensure_app_role(context: LabContext) -> bool:
    """``crm_app`` exists at main (the primary) and may log in; True if it had to be created or re-enabled."""
    rows = query(context, "main", "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", parameters=(APP_ROLE,))
    if rows and rows[0][0]:
        return False
    if rows:
        query(context, "main", f"ALTER ROLE {APP_ROLE} LOGIN")
    else:
        query(context, "main", f"CREATE ROLE {APP_ROLE} LOGIN")
        query(context, "main", f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}",
              database=CRM_DATABASE)
    return True


def seed_call_log(context: LabContext) -> None:
    exists = query(context, "calllog", "SELECT 1 FROM pg_database WHERE datname = %s", parameters=(CALL_LOG_DATABASE,))
    if not exists:
        query(context, "calllog", f"CREATE DATABASE {CALL_LOG_DATABASE}")
    query(context, "calllog", seed_sql("call_log.sql"), database=CALL_LOG_DATABASE)


def build_standby(context: LabContext) -> None:
    """Clone main into dr with a replication slot, if dr does not exist yet."""
    if initialised(context, "dr"):
        configure(context, "dr")
        return
    data = context.paths.data_dir("dr")
    _complete_marker(context, "dr").unlink(missing_ok=True)
    make_owned_directory(context, data)
    slot = query(context, "main", "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", parameters=(REPLICATION_SLOT,))
    if slot:  # left by a dr that no longer exists
        query(context, "main", "SELECT pg_drop_replication_slot(%s)", parameters=(REPLICATION_SLOT,))
    connection = (f"host={address(context, 'main')} port={port(context, 'main')} user={context.user.name} "
                  f"application_name=dr passfile={context.paths.postgres_passfile}")
    run(
        [tool("pg_basebackup"), "-D", str(data), "-R", "-X", "stream", "-C", "-S", REPLICATION_SLOT,
         "-c", "fast", "--no-sync", "-d", connection],
        user=context.user,
        netns=context.namespace("dr"),
        timeout=120,
    )
    configure(context, "dr")
    _complete_marker(context, "dr").touch()


