"""Prefect global concurrency limits, as Lifeline uses them for repositories and hosts: created or resized
from the plan before they are used, then held with `strict=True` (a limit that does not exist is an error,
never "no limit") and a lease, so that a killed holder's slots come back."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from uuid import UUID

from lifeline.tasks.adapters.errors import LifelineError

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


class ControlPlaneAway(LifelineError):
    """The Prefect server that keeps the limits did not answer (a restart, a network blip): a retry may find it."""

    transient = True


RELEASE_PATIENCE_SECONDS = 60.0  # how long a release waits for a restarting server before the lease is left to end


@contextmanager
def held(name: str, slots: int = 1, timeout_seconds: float | None = None) -> Iterator[None]:
    """Prefect's `concurrency()` (strict, with a lease), but a server that does not answer is no failure of the
    work: acquiring raises ControlPlaneAway, which the step retries; releasing is tried again for up to
    RELEASE_PATIENCE_SECONDS, then the lease gives the slots back (`_give_back`: a lease the server lost).
    Prefect's client retries a refused connection only once it has connected, and every call here makes a new
    client: a server restarting under a run failed its steps with "All connection attempts failed", and the
    slots they held were never given back."""
    import httpx
    from prefect.concurrency._asyncio import _discard_cleanup_lease
    from prefect.concurrency._events import emit_concurrency_acquisition_events, emit_concurrency_release_events
    from prefect.concurrency._leases import maintain_concurrency_lease
    from prefect.concurrency._sync import acquire_concurrency_slots_with_lease

    try:
        acquired = acquire_concurrency_slots_with_lease([name], slots, timeout_seconds=timeout_seconds, strict=True,
                                                        lease_duration=LEASE_SECONDS)
    except httpx.TransportError as error:
        raise ControlPlaneAway(f"concurrency limit {name}: the Prefect server at {_api_url()} does not answer "
                               f"({error or type(error).__name__})") from None
    events, since = emit_concurrency_acquisition_events(acquired.limits, slots), time.monotonic()
    try:
        # a lease a restarted server forgot cannot be renewed, but the slots stay counted: the work goes on
        with maintain_concurrency_lease(acquired.lease_id, LEASE_SECONDS, raise_on_lease_renewal_failure=False):
            yield
    finally:
        if _release(acquired.lease_id, name, slots, since):
            _discard_cleanup_lease(acquired.lease_id)
        emit_concurrency_release_events(acquired.limits, slots, events)


def _give_back(lease_id: UUID, name: str, slots: int, since: float) -> None:
    """Release by lease; but a restarted server has forgotten its leases (Prefect keeps them in memory) while its
    database still counts the slots they took, and a release by an unknown lease is a silent no-op: those slots
    would never come back and the next exclusive holder would wait forever. They are given back by name then."""
    import httpx
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            client.renew_concurrency_lease(lease_id, lease_duration=LEASE_SECONDS)
        except httpx.HTTPStatusError as error:
            if error.response.status_code not in (404, 410):
                raise
            client.release_concurrency_slots(names=[name], slots=slots,
                                             occupancy_seconds=max(time.monotonic() - since, 0.001))
            return
        client.release_concurrency_slots_with_lease(lease_id)


def _release(lease_id: UUID, name: str, slots: int, since: float) -> bool:
    """True once released; False (with a warning) when it could not be: the work done is never failed for it."""
    import httpx
    from prefect._internal.concurrency.cancellation import CancelledError

    deadline, delay = time.monotonic() + RELEASE_PATIENCE_SECONDS, 0.5
    while True:
        try:
            _give_back(lease_id, name, slots, since)
            return True
        except CancelledError:  # as Prefect's own: the lease stays listed for the task's cleanup
            return False
        except httpx.HTTPStatusError as error:
            logging.getLogger(__name__).warning("could not release the slots of %s: %s; they come back when their "
                                                "lease ends, within %d s", name, error, LEASE_SECONDS)
            return False
        except httpx.TransportError as error:
            if time.monotonic() + delay > deadline:
                logging.getLogger(__name__).warning(
                    "could not release the slots of %s (%s): the Prefect server at %s does not answer; they come "
                    "back when their lease ends, within %d s", name, error or type(error).__name__, _api_url(),
                    LEASE_SECONDS)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "(none)")
