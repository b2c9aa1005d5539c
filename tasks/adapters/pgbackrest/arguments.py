"""Each pgBackRest command's arguments, from plain values (the config and stanza come first, from the caller)."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import PurePosixPath

BACKUP_TYPES = ("full", "diff", "incr")


def backup_arguments(kind: str, repository: int) -> tuple[str, ...]:
    if kind not in BACKUP_TYPES:
        raise ValueError(f"backup type {kind!r} is not one of {', '.join(BACKUP_TYPES)}")
    return ("backup", f"--type={kind}", f"--repo={repository}")


def restore_target(*, to_time: datetime | None = None, before_xid: int | None = None) -> tuple[str, ...]:
    """To a time (exclusive: the last commit before it is kept, one at it is not), or to just before a
    transaction; then promote, so the restored cluster takes writes on a timeline of its own."""
    if (to_time is None) == (before_xid is None):
        raise ValueError("restore to a time or to a transaction: give exactly one")
    if to_time is not None:
        moment = to_time.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")
        target = ("--type=time", f"--target={moment}")
    else:
        target = ("--type=xid", f"--target={before_xid}")
    return (*target, "--target-exclusive", "--target-action=promote")


def restore_arguments(data_directory: PurePosixPath, target: tuple[str, ...], *, port: int | None = None,
                      archiving: bool = False) -> tuple[str, ...]:
    """Into `data_directory`. A staging copy (`archiving` False) must never push WAL into the live stanza, and
    listens on its own `port`; a replacement of the primary keeps archiving and the primary's port."""
    options = [f"--pg1-path={data_directory}", f"--archive-mode={'preserve' if archiving else 'off'}"]
    if port is not None:
        options.append(f"--recovery-option=port={port}")
    return ("restore", *options, *target)


def archive_command(binary: str, config: PurePosixPath, stanza: str) -> str:
    """PostgreSQL's archive_command: PostgreSQL runs it through a shell, so every part is quoted."""
    return " ".join([shlex.quote(binary), shlex.quote(f"--config={config}"), shlex.quote(f"--stanza={stanza}"),
                     "archive-push", "%p"])
