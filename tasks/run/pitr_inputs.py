"""A database's `pitr` section turned into pgBackRest's inputs: the configuration each database host gets, and
the pgBackRest of a site. The S3 keys come from the plan's credentials file into the 0600 config only."""

from __future__ import annotations

from pathlib import PurePosixPath

from lifeline.configs.pitr import Pitr
from lifeline.configs.plan import Plan
from lifeline.configs.recovery import Database
from lifeline.tasks.adapters.environment_file import read_environment_file
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.pgbackrest import PgBackRest, render_config
from lifeline.tasks.adapters.postgres.connection import ConnectionInfo, connection_info
from lifeline.tasks.run.topology import ssh_target


class PitrNotConfigured(LifelineError):
    user_error = True


def pitr_of(plan: Plan, database: str) -> tuple[Database, Pitr]:
    entry = plan.databases.get(database)
    if entry is None:
        raise PitrNotConfigured(f"no database named {database!r} (known: {', '.join(plan.databases) or 'none'})")
    if entry.pitr is None:
        raise PitrNotConfigured(f"databases.{database}.pitr: point-in-time recovery is not configured")
    return entry, entry.pitr


def pitr_database_for(plan: Plan, name: str) -> str | None:
    """The database with PITR that `name` names: a database, or the dataset its `pitr.dataset` stands for."""
    if name in plan.databases and plan.databases[name].pitr is not None:
        return name
    return next((database for database, entry in plan.databases.items()
                 if entry.pitr is not None and entry.pitr.dataset == name), None)


def site_directory(pitr: Pitr, site: str) -> PurePosixPath:
    return PurePosixPath(pitr.work_dir) / site


def config_text(database: Database, site: str) -> str:
    pitr = database.pitr
    assert pitr is not None
    instance = database.instances[site]
    folder = site_directory(pitr, site)
    global_options: dict[str, str | int] = {
        "log-path": str(folder / "log"), "lock-path": str(folder / "lock"), "spool-path": str(folder / "spool"),
        "log-level-console": "warn", "log-level-stderr": "error", "log-level-file": "info",
        "process-max": pitr.process_max, "compress-type": "lz4", "start-fast": "y", "archive-check": "y",
    }
    for number, repository in enumerate(pitr.repositories, start=1):
        prefix = f"repo{number}"
        global_options[f"{prefix}-retention-full"] = repository.retention_full
        if repository.retention_diff is not None:
            global_options[f"{prefix}-retention-diff"] = repository.retention_diff
        if repository.path is not None:
            global_options[f"{prefix}-path"] = str(repository.path)
            continue
        s3 = repository.s3
        assert s3 is not None
        keys = read_environment_file(s3.credentials_file)
        missing = [key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not keys.get(key)]
        if missing:
            raise PitrNotConfigured(f"{s3.credentials_file}: no {' or '.join(missing)} for pgBackRest's {prefix}")
        global_options.update({
            f"{prefix}-type": "s3", f"{prefix}-path": s3.prefix, f"{prefix}-s3-bucket": s3.bucket,
            f"{prefix}-s3-endpoint": s3.endpoint, f"{prefix}-s3-region": s3.region,
            f"{prefix}-storage-port": s3.port, f"{prefix}-s3-uri-style": s3.uri_style,
            f"{prefix}-s3-key": keys["AWS_ACCESS_KEY_ID"], f"{prefix}-s3-key-secret": keys["AWS_SECRET_ACCESS_KEY"],
        })
        if s3.ca_file is not None:
            global_options[f"{prefix}-storage-ca-file"] = str(s3.ca_file)
    stanza: dict[str, str | int] = {"pg1-path": str(instance.data_dir),
                                    "pg1-port": instance_connection(database, site).port}
    if instance.socket_dir is not None:
        stanza["pg1-socket-path"] = str(instance.socket_dir)
    return render_config(global_options, {pitr.stanza: stanza})


def instance_connection(database: Database, site: str) -> ConnectionInfo:
    instance = database.instances[site]
    return connection_info(instance.dsn, instance.passfile)


def pgbackrest_at(plan: Plan, database: Database, site: str) -> PgBackRest:
    pitr = database.pitr
    assert pitr is not None
    host = database.instances[site].host
    return PgBackRest(target=ssh_target(host, plan.hosts[host]), config=site_directory(pitr, site) / "pgbackrest.conf",
                      stanza=pitr.stanza, binary=pitr.binary)
