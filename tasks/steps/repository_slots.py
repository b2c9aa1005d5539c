"""A repository's slots: one Prefect global concurrency limit per repository, sized by the plan's
`concurrency`, so that backups, restores and copies share it and forget, prune and check take it whole,
across every process and every worker on every machine that reports to the same Prefect server.

A file lock on one machine cannot keep a prune on dr's worker from a backup on main's; the server's limit
can. The machine's own reader-writer file lock is still taken inside it, for runs of that machine. Limits
are used with `strict=True`: a limit that does not exist is an error, never "no limit"; `lifeline deploy`
and every run that uses a repository create or resize them first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from lifeline.configs.plan import Plan
from lifeline.tasks.adapters.locks import repository_lock
from lifeline.tasks.adapters.restic import ResticRepository
from lifeline.tasks.run.record import utc_now
from lifeline.tasks.steps.limits import ensure_sizes, held, keyed, size_of
from pydantic import BaseModel

DEFAULT_SLOTS = 4


class Held(BaseModel):
    """When the slots were held: what the run's record shows, to prove the limit held."""

    repository: str
    slots: int
    acquired_at: datetime | None = None
    released_at: datetime | None = None

    @property
    def detail(self) -> dict:
        return {"slots": self.slots, "held_from": _iso(self.acquired_at), "held_until": _iso(self.released_at)}


def repository_key(repository: ResticRepository) -> str:
    return keyed(repository.name, repository.url)


def limit_name(repository: ResticRepository) -> str:
    return f"lifeline-repository-{repository_key(repository)}"


def ensure_limits(plan: Plan, repositories: Mapping[str, ResticRepository]) -> None:
    """Create each repository's limit, or resize it to the plan's `concurrency`."""
    ensure_sizes({limit_name(repository): (configured.concurrency if (configured := plan.repositories.get(name))
                                           else DEFAULT_SLOTS)  # a data leak's new repository is not in the plan
                  for name, repository in repositories.items()})


@contextmanager
def repository_slots(repository: ResticRepository, locks_dir: Path, *, exclusive: bool) -> Iterator[Held]:
    """One slot (shared), or every slot (exclusive), then the machine's file lock; the server's limit first,
    always, so that two holders never wait on each other in opposite orders."""
    name = limit_name(repository)
    holding = Held(repository=repository.name, slots=size_of(name) if exclusive else 1)
    with held(name, holding.slots), repository_lock(locks_dir, repository.name, repository.url, exclusive=exclusive):
        holding.acquired_at = utc_now()
        try:
            yield holding
        finally:
            holding.released_at = utc_now()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
