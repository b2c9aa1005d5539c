"""pgBackRest, run on the database host over SSH as the cluster's owner: continuous WAL archiving,
full/diff/incr backups, point-in-time restores.

As with restic: pure functions build each command's arguments (`arguments.py`), one method runs them, and
`errors.py` turns an exit status and pgBackRest's `ERROR: [NNN]` line into one-line errors. The configuration
is rendered from plain values (`render_config`): it holds the S3 secret, so it is written 0600 over SFTP and
never passed on a command line. `archiving.py` is the PostgreSQL side (archive_command, pg_stat_archiver).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.pgbackrest.arguments import backup_arguments, restore_arguments, restore_target
from lifeline.tasks.adapters.pgbackrest.errors import PgBackRestFailed, classify
from lifeline.tasks.adapters.ssh import SshTarget

__all__ = ["Backup", "PgBackRest", "PgBackRestFailed", "StanzaInfo", "parse_info", "render_config"]


@dataclass(frozen=True)
class Backup:
    label: str
    type: str
    repository: int
    started_at: datetime
    stopped_at: datetime
    wal_start: str
    wal_stop: str
    size: int
    repository_size: int


@dataclass(frozen=True)
class StanzaInfo:
    stanza: str
    status: str
    backups: tuple[Backup, ...]
    wal_min: str | None
    wal_max: str | None

    @property
    def oldest_restorable(self) -> datetime | None:
        """The end of the oldest backup: a restore cannot reach back before it. pgBackRest keeps the stop time in
        whole seconds and wants a target after it, so the next whole second."""
        oldest = min((backup.stopped_at for backup in self.backups), default=None)
        return oldest + timedelta(seconds=1) if oldest is not None else None

    def newest_backup(self, repository: int | None = None) -> Backup | None:
        chosen = [backup for backup in self.backups if repository is None or backup.repository == repository]
        return max(chosen, key=lambda backup: backup.stopped_at, default=None)


def parse_info(text: str) -> list[StanzaInfo]:
    stanzas = []
    for entry in json.loads(text or "[]"):
        archives = entry.get("archive") or []
        stanzas.append(StanzaInfo(
            stanza=entry["name"],
            status=(entry.get("status") or {}).get("message", ""),
            backups=tuple(
                Backup(label=backup["label"], type=backup["type"],
                       repository=int((backup.get("database") or {}).get("repo-key", 1)),
                       started_at=datetime.fromtimestamp(backup["timestamp"]["start"], UTC),
                       stopped_at=datetime.fromtimestamp(backup["timestamp"]["stop"], UTC),
                       wal_start=backup["archive"]["start"], wal_stop=backup["archive"]["stop"],
                       size=backup["info"]["size"], repository_size=backup["info"]["repository"]["size"])
                for backup in entry.get("backup") or []),
            wal_min=min((archive["min"] for archive in archives if archive.get("min")), default=None),
            wal_max=max((archive["max"] for archive in archives if archive.get("max")), default=None),
        ))
    return stanzas


def render_config(global_options: Mapping[str, str | int], stanzas: Mapping[str, Mapping[str, str | int]]) -> str:
    """pgbackrest.conf: a [global] section, then one section per stanza; values are written as given."""
    for options in (global_options, *stanzas.values()):
        for key, value in options.items():
            if "\n" in f"{key}{value}" or "=" in key:
                raise ValueError(f"pgBackRest option {key!r}: a name without '=' and a value on one line")
    lines = ["[global]", *(f"{key}={value}" for key, value in global_options.items())]
    for name, options in stanzas.items():
        lines += ["", f"[{name}]", *(f"{key}={value}" for key, value in options.items())]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PgBackRest:
    """pgBackRest for one stanza on one database host."""

    target: SshTarget
    config: PurePosixPath
    stanza: str
    binary: str = "pgbackrest"

    def write_config(self, text: str) -> None:
        ssh.run(self.target, ["mkdir", "-p", "-m", "0700", str(self.config.parent)], 20, check=True)
        ssh.write_file(self.target, self.config, text.encode(), 0o600)

    def _run(self, operation: str, arguments: tuple[str, ...], timeout: float) -> str:
        argv = [self.binary, f"--config={self.config}", f"--stanza={self.stanza}", *arguments]
        result = ssh.run(self.target, argv, timeout)
        output = f"{result.stdout}\n{result.stderr}"
        if result.exit_status != 0:
            raise classify(result.exit_status, output, operation, f"stanza {self.stanza} on {self.target.label}")
        return result.stdout

    def stanza_create(self, timeout: float = 120) -> None:
        self._run("stanza-create", ("stanza-create",), timeout)

    def check(self, timeout: float = 120) -> None:
        """Every repository reachable, and a WAL segment switched and archived into each."""
        self._run("check", ("check",), timeout)

    def backup(self, kind: str, repository: int, timeout: float = 3600) -> None:
        self._run("backup", backup_arguments(kind, repository), timeout)

    def info(self, timeout: float = 60) -> StanzaInfo:
        found = parse_info(self._run("info", ("info", "--output=json"), timeout))
        if not found or found[0].status.startswith("error (missing stanza"):
            raise PgBackRestFailed(f"pgbackrest info: stanza {self.stanza} does not exist on {self.target.label} "
                                   "(`lifeline pitr setup` creates it)")
        return found[0]

    def restore(self, data_directory: PurePosixPath, *, to_time: datetime | None = None, before_xid: int | None = None,
                port: int | None = None, archiving: bool = False, timeout: float = 3600) -> None:
        target = restore_target(to_time=to_time, before_xid=before_xid)
        self._run("restore", restore_arguments(data_directory, target, port=port, archiving=archiving), timeout)
