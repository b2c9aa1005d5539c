"""Prefect global concurrency limits, as Lifeline uses them for repositories and hosts: created or resized
from the plan before they are used, then held with `strict=True` (a limit that does not exist is an error,
never "no limit") and a lease, so that a killed holder's slots come back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

LEASE_SECONDS = 120  # renewed while held; a killed holder's slots come back after it


def keyed(name: str, identity: str) -> str:
    """`<name>-<hash of what it is>`: two plans that name one repository or host differently share the key."""
    return f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def ensure_sizes(sizes: Mapping[str, int]) -> None:
    """Create each limit, or resize it. Two runs starting at once may both create one: the loser resizes."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        for name, size in sizes.items():
            try:
                client.upsert_global_concurrency_limit_by_name(name, size)
            except ObjectAlreadyExists:
                client.upsert_global_concurrency_limit_by_name(name, size)


def size_of(name: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).limit


@contextmanager
def held(name: str, slots: int = 1, timeout_seconds: float | None = None) -> Iterator[None]:
    from prefect.concurrency.sync import concurrency

    with concurrency(name, occupy=slots, strict=True, lease_duration=LEASE_SECONDS, timeout_seconds=timeout_seconds):
        yield
