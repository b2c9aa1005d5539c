"""restic argument vectors: pure functions from what to do to the arguments that do it.

No secrets ever appear here: the repository, its password file and a copy's source
repository travel in RESTIC_* environment variables (see ResticRepository).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

RETENTION_FLAGS = {
    "last": "--keep-last", "hourly": "--keep-hourly", "daily": "--keep-daily",
    "weekly": "--keep-weekly", "monthly": "--keep-monthly", "yearly": "--keep-yearly",
}


def _tag_list(tags: Iterable[str]) -> tuple[str, ...]:
    tags = tuple(tags)
    if any(not tag or "," in tag for tag in tags):
        raise ValueError(f"restic tags must be non-empty and contain no comma: {tags!r}")
    return ("--tag", ",".join(tags)) if tags else ()


def backup_arguments(
    paths: Sequence[str | os.PathLike[str]] = (), *, exclude: Sequence[str] = (), tags: Sequence[str] = (),
    host: str | None = None, time: datetime | None = None, stdin_filename: str | None = None,
) -> tuple[str, ...]:
    if bool(paths) == bool(stdin_filename):
        raise ValueError("backup takes either paths or stdin_filename")
    arguments: list[str] = ["backup", "--json"]
    if stdin_filename:
        arguments += ["--stdin", "--stdin-filename", stdin_filename]
    for pattern in exclude:
        arguments += ["--exclude", pattern]
    arguments += _tag_list(tags)
    if host:
        arguments += ["--host", host]
    if time is not None:  # restic reads --time in its local zone
        arguments += ["--time", time.astimezone().strftime("%Y-%m-%d %H:%M:%S")]
    if paths:
        arguments += ["--", *(os.fspath(path) for path in paths)]
    return tuple(arguments)


def forget_arguments(tags: Sequence[str], retention: Mapping[str, int]) -> tuple[str, ...]:
    """Per dataset: without --tag, forget would apply the policy to every snapshot (docs/facts.md, restic)."""
    if not tags:
        raise ValueError("forget without --tag would apply the policy to every snapshot in the repository")
    unknown = set(retention) - set(RETENTION_FLAGS)
    if unknown:
        raise ValueError(f"unknown retention keys: {sorted(unknown)}")
    policy = [part for key, count in retention.items() if count for part in (RETENTION_FLAGS[key], str(count))]
    if not policy:
        raise ValueError("retention keeps nothing: give at least one of " + ", ".join(RETENTION_FLAGS))
    return ("forget", "--json", *_tag_list(tags), "--group-by", "host,tags", *policy)


def forget_snapshots_arguments(snapshot_ids: Sequence[str]) -> tuple[str, ...]:
    if not snapshot_ids:
        raise ValueError("no snapshot ids to forget")
    return ("forget", "--", *snapshot_ids)


def prune_arguments() -> tuple[str, ...]:
    return ("prune",)


def check_arguments(read_data_subset: str | None = None) -> tuple[str, ...]:
    return ("check", "--read-data-subset", read_data_subset) if read_data_subset else ("check",)


def copy_arguments(snapshot_ids: Sequence[str]) -> tuple[str, ...]:
    """The source repository is passed in RESTIC_FROM_* variables (see copy_source_environment)."""
    return ("copy", *(("--", *snapshot_ids) if snapshot_ids else ()))


def restore_arguments(
    snapshot_id: str, target: str | os.PathLike[str], *, verify: bool = True, json_output: bool = False
) -> tuple[str, ...]:
    arguments = ["restore", snapshot_id, "--target", os.fspath(target)]
    return tuple(arguments + ["--verify"] * verify + ["--json"] * json_output)


def snapshots_arguments(tags: Sequence[str] = (), snapshot_ids: Sequence[str] = ()) -> tuple[str, ...]:
    return ("snapshots", "--json", *_tag_list(tags), *(("--", *snapshot_ids) if snapshot_ids else ()))


def ls_arguments(snapshot_id: str) -> tuple[str, ...]:
    return ("ls", "--json", snapshot_id)


def init_arguments(copy_chunker_params: bool = False) -> tuple[str, ...]:
    return ("init", "--copy-chunker-params") if copy_chunker_params else ("init",)


def key_list_arguments() -> tuple[str, ...]:
    return ("key", "list", "--json")


def unlock_arguments() -> tuple[str, ...]:
    return ("unlock",)  # plain unlock: only locks restic itself calls stale; a live backup's lock stays
