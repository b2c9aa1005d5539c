"""restic adapter: pure argv builders, one runner (ResticRepository._run), one failure classifier.

Secrets never reach an argument vector: the repository URL and password file travel in
RESTIC_* environment variables, and any inherited RESTIC_* variable is removed first.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lifeline.tasks.adapters.commands import (
    CommandError,
    CommandResult,
    CommandTimeout,
    LineCallback,
    run_command,
    run_pipeline,
)
from lifeline.tasks.adapters.restic.arguments import (
    backup_arguments,
    check_arguments,
    copy_arguments,
    forget_arguments,
    forget_snapshots_arguments,
    init_arguments,
    key_list_arguments,
    ls_arguments,
    prune_arguments,
    restore_arguments,
    snapshots_arguments,
    unlock_arguments,
)
from lifeline.tasks.adapters.restic.errors import (
    EXIT_PARTIAL_BACKUP,
    NoSpace,
    PartialBackup,
    ProducerFailed,
    RepositoryLocked,
    RepositoryMissing,
    ResticError,
    ResticFailed,
    SnapshotGone,
    WrongPassword,
    _json_lines,
    _json_object,
    backup_warnings,
    classify_failure,
)

__all__ = [
    "NoSpace", "PartialBackup", "ProducerFailed", "RepositoryLocked", "RepositoryMissing", "ResticError",
    "ResticFailed", "SnapshotGone", "WrongPassword", "classify_failure", "ResticRepository", "Snapshot",
]

ProgressCallback = Callable[[float, int], None]  # (fraction 0..1, bytes done)
# --- versions and features ----------------------------------------------------------------------


@functools.cache
def restic_version(binary: str = "restic") -> tuple[int, int, int]:
    try:
        result = run_command([binary, "version"], timeout=60)
    except CommandError as error:
        raise ResticFailed.during("version", "", str(error)) from None
    match = re.search(r"restic (\d+)\.(\d+)\.(\d+)", result.stdout_text)
    if result.returncode != 0 or match is None:
        raise ResticFailed.during("version", "", f"cannot read the version of {binary}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class Features:
    """What the installed restic can do (docs/facts.md, restic)."""

    version: tuple[int, int, int]

    @property
    def json_restore(self) -> bool:  # 0.16 had --json progress, but errors in JSON mode only from 0.17.1
        return self.version >= (0, 17, 1)


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str
    short_id: str
    data_added: int
    total_files_processed: int
    total_bytes_processed: int
    total_duration: float
    warnings: tuple[str, ...] = ()  # files restic could not read (exit 3): the snapshot lacks them


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime
    paths: tuple[str, ...]
    tags: tuple[str, ...]
    original: str | None = None  # a `restic copy` names the source snapshot's id here


@dataclass(frozen=True)
class Node:
    path: str
    type: str  # file, dir, symlink, ...
    size: int


@dataclass(frozen=True)
class ForgetResult:
    kept: tuple[str, ...]
    removed: tuple[str, ...]


# --- parsing ------------------------------------------------------------------------------------


def parse_restic_time(text: str) -> datetime:
    """restic writes nanoseconds and Z or an offset; datetime wants at most microseconds."""
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if match is None:
        raise ValueError(f"unexpected restic time {text!r}")
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{base}.{(fraction or '')[:6].ljust(6, '0')}{zone}")


def parse_snapshot(data: Mapping[str, Any]) -> Snapshot:
    return Snapshot(
        id=data["id"], short_id=data.get("short_id") or data["id"][:8], time=parse_restic_time(data["time"]),
        paths=tuple(data.get("paths") or ()), tags=tuple(data.get("tags") or ()), original=data.get("original"),
    )


def _progress_reader(on_progress: ProgressCallback | None) -> LineCallback | None:
    if on_progress is None:
        return None

    def read(line: str) -> None:
        message = _json_object(line) if line.startswith("{") else {}
        if message.get("message_type") == "status":
            done = message.get("bytes_done", message.get("bytes_restored", 0))
            on_progress(float(message.get("percent_done", 0.0)), int(done or 0))

    return read


# --- the repository -----------------------------------------------------------------------------

AWS_KEYS = {"AWS_ACCESS_KEY_ID": "aws_access_key_id", "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
            "AWS_SESSION_TOKEN": "aws_session_token"}
CREDENTIALS_PROFILE = "lifeline"


def keys_in_a_file(environment: Mapping[str, str | None], directory: Path, name: str) -> dict[str, str | None]:
    """An S3 key is a secret: anyone who can read a process's environment (/proc/PID/environ) would read it. restic
    (through minio-go) also reads a shared credentials file: the keys go into one, mode 0600, named by
    AWS_SHARED_CREDENTIALS_FILE, and leave the environment (inherited ones too, which restic would prefer)."""
    if not environment.get("AWS_SECRET_ACCESS_KEY"):
        return dict(environment)
    lines = [f"[{CREDENTIALS_PROFILE}]"] + [f"{key} = {environment[variable]}" for variable, key in AWS_KEYS.items()
                                           if environment.get(variable)]
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.ini"
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    os.replace(temporary, path)
    return {**environment, **dict.fromkeys(AWS_KEYS), "AWS_SHARED_CREDENTIALS_FILE": os.fspath(path),
            "AWS_PROFILE": CREDENTIALS_PROFILE}


@dataclass(frozen=True, kw_only=True)
class ResticRepository:
    name: str  # the plan's name for it, used in messages
    url: str
    password_file: Path
    cache_dir: Path
    environment: Mapping[str, str] = field(default_factory=dict)  # e.g. AWS_* for s3: repositories
    binary: str = "restic"
    timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        forbidden = {"RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND"} & set(self.environment)
        if forbidden:
            raise ValueError(f"repository {self.name!r}: pass the password as password_file, not {sorted(forbidden)}")

    @property
    def display_url(self) -> str:
        return re.sub(r"//[^/@]*@", "//", self.url)  # rest:https://user:secret@host/ → rest:https://host/

    @property
    def features(self) -> Features:
        return Features(restic_version(self.binary))

    def restic_environment(self) -> dict[str, str | None]:
        environment: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RESTIC_")}
        environment.update(self.environment)
        environment.update(
            RESTIC_REPOSITORY=self.url, RESTIC_PASSWORD_FILE=os.fspath(self.password_file),
            RESTIC_CACHE_DIR=os.fspath(self.cache_dir),
        )
        return keys_in_a_file(environment, self.cache_dir.parent / "credentials", self.name)

    def copy_source_environment(self, source: ResticRepository) -> dict[str, str]:
        clashes = [name for name, value in source.environment.items() if self.environment.get(name, value) != value]
        if clashes:
            raise ValueError(f"restic copy cannot use different {clashes} for {source.name!r} and {self.name!r}")
        return {**source.environment, "RESTIC_FROM_REPOSITORY": source.url,
                "RESTIC_FROM_PASSWORD_FILE": os.fspath(source.password_file)}

    def argv(self, arguments: Sequence[str]) -> tuple[str, ...]:
        return (self.binary, *arguments)

    def _command_error(self, operation: str, error: CommandError) -> ResticError:
        return ResticFailed.during(operation, self.name, str(error), transient=isinstance(error, CommandTimeout))

    def _run(
        self, operation: str, arguments: Sequence[str], *, on_line: LineCallback | None = None,
        accepted: Sequence[int] = (0,), extra_environment: Mapping[str, str] | None = None,
    ) -> CommandResult:
        environment = keys_in_a_file({**self.restic_environment(), **(extra_environment or {})},
                                     self.cache_dir.parent / "credentials", self.name)
        try:
            result = run_command(self.argv(arguments), env=environment, timeout=self.timeout_seconds, on_line=on_line)
        except CommandError as error:
            raise self._command_error(operation, error) from None
        if result.returncode not in accepted:
            raise classify_failure(result, operation=operation, repository=self.name)
        return result

    # --- operations ---

    def init(self, copy_chunker_params_from: ResticRepository | None = None) -> None:
        source = copy_chunker_params_from
        self._run("init", init_arguments(source is not None),
                  extra_environment=self.copy_source_environment(source) if source else None)

    @property
    def local_path(self) -> Path | None:
        """A local repository's folder (an absolute path, or local:PATH); None for every other backend."""
        path = self.url.removeprefix("local:")
        return Path(path) if path.startswith("/") else None

    def exists(self) -> bool:
        """A local repository's config file says so at once; other backends are asked through restic."""
        if (folder := self.local_path) is not None:
            return (folder / "config").is_file()
        try:
            self._run("cat config", ("cat", "config"))
        except RepositoryMissing:
            return False
        return True

    def backup(
        self, paths: Sequence[str | os.PathLike[str]], *, exclude: Sequence[str] = (), tags: Sequence[str] = (),
        host: str | None = None, time: datetime | None = None, on_progress: ProgressCallback | None = None,
        resolve_full_id: bool = True,
    ) -> BackupSummary:
        """resolve_full_id=False saves a restic call when the caller lists the snapshots anyway."""
        arguments = backup_arguments(paths, exclude=exclude, tags=tags, host=host, time=time)
        result = self._run("backup", arguments, on_line=_progress_reader(on_progress), accepted=(0, 3))
        return self._backup_summary(result, resolve_full_id)

    def backup_from_command(
        self, producer_argv: Sequence[str], *, stdin_filename: str, tags: Sequence[str] = (),
        producer_env: Mapping[str, str | None] | None = None, host: str | None = None, time: datetime | None = None,
        on_progress: ProgressCallback | None = None, resolve_full_id: bool = True,
    ) -> BackupSummary:
        arguments = backup_arguments(stdin_filename=stdin_filename, tags=tags, host=host, time=time)
        try:
            pipeline = run_pipeline(
                producer_argv, self.argv(arguments), producer_env=producer_env,
                consumer_env=self.restic_environment(), timeout=self.timeout_seconds,
                on_line=_progress_reader(on_progress),
            )
        except CommandError as error:
            if error.argv == tuple(producer_argv) and not isinstance(error, CommandTimeout):
                raise ProducerFailed.during("backup", self.name, str(error)) from None
            raise self._command_error("backup", error) from None
        if pipeline.consumer.returncode not in (0, 3):
            raise classify_failure(pipeline.consumer, operation="backup", repository=self.name)
        producer = pipeline.producer
        summary = self._backup_summary(pipeline.consumer, resolve_full_id=resolve_full_id and producer.returncode == 0)
        if producer.returncode == 0:
            return summary
        program = Path(producer.argv[0]).name
        cause = f"{program} exited with {producer.returncode} ({producer.stderr_tail(3) or 'no error output'})"
        try:  # restic saved whatever arrived before the failure: a truncated snapshot
            self.forget_snapshots([summary.short_id])
        except ResticError as error:
            raise ProducerFailed.during("backup", self.name, f"{cause}; its truncated snapshot {summary.short_id} "
                                        f"could not be forgotten: {error}") from error
        raise ProducerFailed.during("backup", self.name, f"{cause}; snapshot {summary.short_id} forgotten")

    def _backup_summary(self, result: CommandResult, resolve_full_id: bool = True) -> BackupSummary:
        summaries = [line for line in _json_lines(result.stdout_text) if line.get("message_type") == "summary"]
        if not summaries or not summaries[-1].get("snapshot_id"):
            raise classify_failure(result, operation="backup", repository=self.name)
        data = summaries[-1]
        snapshot_id = data["snapshot_id"]
        if resolve_full_id and len(snapshot_id) < 64:  # restic 0.14 reports the short id
            snapshot_id = self.snapshot(snapshot_id).id
        return BackupSummary(
            snapshot_id=snapshot_id, short_id=snapshot_id[:8],  # short when not resolved
            **{name: data.get(name, 0) for name in (
                "data_added", "total_files_processed", "total_bytes_processed", "total_duration")},
            warnings=tuple(backup_warnings(result.stderr_text)) if result.returncode == EXIT_PARTIAL_BACKUP else (),
        )

    def snapshots(self, tags: Sequence[str] = (), snapshot_ids: Sequence[str] = ()) -> list[Snapshot]:
        result = self._run("snapshots", snapshots_arguments(tags, snapshot_ids))
        found = json.loads(result.stdout_text or "[]") or []
        return sorted((parse_snapshot(data) for data in found), key=lambda snapshot: snapshot.time)

    def snapshot(self, snapshot_id: str) -> Snapshot:
        """One snapshot by full id, short id or "latest"."""
        found = self.snapshots(snapshot_ids=[snapshot_id])
        if not found:
            raise ResticFailed.during("snapshots", self.name, f"no snapshot {snapshot_id!r}")
        return found[-1]

    def forget(self, tags: Sequence[str], retention: Mapping[str, int]) -> ForgetResult:
        """Applies the policy to the snapshots carrying all `tags` only."""
        result = self._run("forget", forget_arguments(tags, retention))
        groups = json.loads(result.stdout_text or "[]") or []
        return ForgetResult(
            kept=tuple(snapshot["id"] for group in groups for snapshot in group.get("keep") or ()),
            removed=tuple(snapshot["id"] for group in groups for snapshot in group.get("remove") or ()),
        )

    def keys(self) -> list[dict[str, Any]]:
        """The repository's keys (passwords that open it): opening it proves the current password works."""
        return json.loads(self._run("key list", key_list_arguments()).stdout_text or "[]") or []

    def forget_snapshots(self, snapshot_ids: Sequence[str]) -> None:
        self._run("forget", forget_snapshots_arguments(snapshot_ids))

    def prune(self) -> None:
        self._run("prune", prune_arguments())

    def check(self, read_data_subset: str | None = None) -> None:
        self._run("check", check_arguments(read_data_subset))

    def copy_from(self, source: ResticRepository, snapshot_ids: Sequence[str]) -> None:
        self._run("copy", copy_arguments(snapshot_ids), extra_environment=self.copy_source_environment(source))

    def restore(
        self, snapshot_id: str, target_dir: str | os.PathLike[str], *, verify: bool = True,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Progress is reported only by restic >= 0.17.1 (JSON restore output)."""
        json_output = self.features.json_restore
        arguments = restore_arguments(snapshot_id, target_dir, verify=verify, json_output=json_output)
        self._run("restore", arguments, on_line=_progress_reader(on_progress) if json_output else None)

    def ls(self, snapshot_id: str) -> list[Node]:
        result = self._run("ls", ls_arguments(snapshot_id))
        return [
            Node(path=item["path"], type=item.get("type", ""), size=int(item.get("size") or 0))
            for item in _json_lines(result.stdout_text)
            if item.get("struct_type", item.get("message_type")) == "node"
        ]

    def remove_stale_locks(self) -> None:
        """restic's own rule: locks older than 30 minutes, or of a dead process on this host (docs/facts.md)."""
        self._run("unlock", unlock_arguments())
