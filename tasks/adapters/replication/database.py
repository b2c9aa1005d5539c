"""What the replication adapter needs to know of a database: its sites' instances and how standbys connect."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatabaseNode:
    """One PostgreSQL instance: the SSH host that runs it (pg_ctl runs there) and how to reach it."""

    host: str  # a name among the SSH targets
    dsn: str  # postgresql://user@host:port/database, without a password
    data_dir: Path
    bin_dir: Path  # where pg_ctl, pg_rewind and pg_basebackup live on the host
    passfile: Path | None


@dataclass(frozen=True)
class ReplicatedDatabase:
    """A primary with streaming standbys, one instance per site."""

    primary: str  # site of the primary in the normal state
    instances: Mapping[str, DatabaseNode]  # site -> instance
    replication_user: str
    replication_slot: str | None  # the slot the normal standby streams from
