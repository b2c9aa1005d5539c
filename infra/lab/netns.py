"""--netns mode (root only): namespaces ``main``, ``dr`` and ``ops`` joined by veth links.

Each side has one address on its loopback (main 10.77.0.1, dr 10.77.0.2, ops 10.77.0.3) and
point-to-point /30 links: main-ops, dr-ops and main-dr, with host routes between the site
addresses (``src`` set, so PostgreSQL sees site addresses), and a trunk per site from ops (the
carrier) to the site's PBX. ops does not forward, so cutting
main-dr really cuts replication. A cut sets main's end of the link down: the peer keeps its
route but loses carrier, so packets vanish and connections time out, as with a real cut.

Code in this process reaches a namespace through :func:`run_in_namespace` (a thread that has
``setns``-ed into it), never by addressing a namespace's IP from the root namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .processes import IP, LabError, LabUsageError, is_root, run

Result = TypeVar("Result")

NAMESPACES: tuple[str, str, str] = ("main", "dr", "ops")
SIDE_ADDRESSES: dict[str, str] = {"main": "10.77.0.1", "dr": "10.77.0.2", "ops": "10.77.0.3"}
# link -> ((namespace, device, address/30), (namespace, device, address/30)); main's end first
LINKS: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "main-ops": (("main", "to-ops", "10.77.1.1"), ("ops", "to-main", "10.77.1.2")),
    "dr-ops": (("dr", "to-ops", "10.77.2.1"), ("ops", "to-dr", "10.77.2.2")),
    "main-dr": (("main", "to-dr", "10.77.3.1"), ("dr", "to-main", "10.77.3.2")),
}
# The carrier's trunks: one circuit from ops (where the carrier's SBC is) to each site's PBX, apart from the
# sites' data links. A site's PBX listens on its end; the /30 is directly connected, so no routes.
TRUNKS: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "main-trunk": (("main", "trunk", "10.77.4.1"), ("ops", "trunk-main", "10.77.4.2")),
    "dr-trunk": (("dr", "trunk", "10.77.5.1"), ("ops", "trunk-dr", "10.77.5.2")),
}
TRUNK_ADDRESSES: dict[str, str] = {site: ends[0][2] for site, ends in (("main", TRUNKS["main-trunk"]),
                                                                       ("dr", TRUNKS["dr-trunk"]))}
OWNER_FILE = Path("/run/lifeline-lab-netns.owner")
CLONE_NEWNET = 0x40000000


def namespace_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def claim(lab_dir: Path) -> None:
    """Only one --netns lab per machine (namespace names are global)."""
    if not is_root():
        raise LabUsageError("--netns needs root (network namespaces)")
    if OWNER_FILE.exists():
        owner = OWNER_FILE.read_text(encoding="utf-8").strip()
        if owner != str(lab_dir):
            raise LabUsageError(f"the lab namespaces belong to the lab at {owner}; `lab down` it first")
    elif any(namespace_exists(name) for name in NAMESPACES):
        raise LabUsageError("network namespaces main/dr/ops exist but are not the lab's; remove them first")
    OWNER_FILE.write_text(f"{lab_dir}\n", encoding="utf-8")


def _ip(*arguments: str, namespace: str | None = None, check: bool = True) -> None:
    prefix = ["-n", namespace] if namespace else []
    run([IP, *prefix, *arguments], check=check, timeout=10)


def _routes() -> dict[str, list[tuple[str, str]]]:
    """namespace -> [(the other side's site address, next hop on the link between them)]"""
    routes: dict[str, list[tuple[str, str]]] = {name: [] for name in NAMESPACES}
    for (namespace, _, address), (peer_namespace, _, peer_address) in LINKS.values():
        routes[namespace].append((SIDE_ADDRESSES[peer_namespace], peer_address))
        routes[peer_namespace].append((SIDE_ADDRESSES[namespace], address))
    return routes


def ensure_links() -> None:
    """Create what is missing and bring every link and route up (idempotent)."""
    for name in NAMESPACES:
        if not namespace_exists(name):
            _ip("netns", "add", name)
        _ip("link", "set", "lo", "up", namespace=name)
        _ip("address", "replace", f"{SIDE_ADDRESSES[name]}/32", "dev", "lo", namespace=name)
    for (namespace, device, address), (peer_namespace, peer_device, peer_address) in [*LINKS.values(), *TRUNKS.values()]:
        if not _device_exists(namespace, device):
            _ip("link", "add", device, "netns", namespace, "type", "veth", "peer", "name", peer_device,
                "netns", peer_namespace)
        for side_namespace, side_device, side_address in ((namespace, device, address),
                                                          (peer_namespace, peer_device, peer_address)):
            _ip("address", "replace", f"{side_address}/30", "dev", side_device, namespace=side_namespace)
            _ip("link", "set", side_device, "up", namespace=side_namespace)
    for namespace, routes in _routes().items():
        for destination, via in routes:
            _ip("route", "replace", f"{destination}/32", "via", via, "src", SIDE_ADDRESSES[namespace],
                namespace=namespace)


def _device_exists(namespace: str, device: str) -> bool:
    completed = run([IP, "-n", namespace, "link", "show", device], check=False, timeout=10)
    return completed.returncode == 0


def set_link(link: str, up: bool) -> None:
    """Cut (or restore) a link at main's end. Restoring re-adds the routes the kernel dropped."""
    links = {**LINKS, **TRUNKS}
    if link not in links:
        raise LabUsageError(f"unknown link {link!r}; links: {', '.join(links)}")
    namespace, device, _ = links[link][0]
    if up:
        ensure_links()
    else:
        _ip("link", "set", device, "down", namespace=namespace)


def link_states() -> dict[str, bool]:
    states: dict[str, bool] = {}
    for link, ((namespace, device, _), _peer) in {**LINKS, **TRUNKS}.items():
        completed = run([IP, "-n", namespace, "-o", "link", "show", device], check=False, timeout=10)
        states[link] = completed.returncode == 0 and ",UP" in completed.stdout.split(">")[0]
    return states


def delete() -> None:
    """Remove the namespaces (their veths go with them) and the ownership marker."""
    _forget_threads()
    for name in NAMESPACES:
        if namespace_exists(name):
            _ip("netns", "delete", name, check=False)
    OWNER_FILE.unlink(missing_ok=True)
    left = [name for name in NAMESPACES if namespace_exists(name)]
    if left:
        raise LabError(f"could not remove network namespaces: {left}")


# namespace -> (identity of the namespace file when the threads entered it, its threads)
_executors: dict[str, tuple[tuple[int, int], ThreadPoolExecutor]] = {}
_executors_lock = threading.Lock()
_thread = threading.local()


def _enter(namespace: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({namespace}): {os.strerror(error)}")
    finally:
        os.close(descriptor)
    _thread.namespace = namespace


def run_in_namespace(namespace: str, function: Callable[[], Result]) -> Result:
    """Call ``function`` on a thread living in ``namespace`` (sockets it opens are there)."""
    if getattr(_thread, "namespace", None) == namespace:
        return function()  # already there (nested call)
    try:
        identity = _identity(namespace)
    except FileNotFoundError:
        raise LabError(f"network namespace {namespace!r} does not exist; run `lab up --netns`") from None
    with _executors_lock:
        entered, executor = _executors.get(namespace, (None, None))
        if executor is None or entered != identity:  # a namespace deleted and made again is a new one
            if executor is not None:
                executor.shutdown(wait=False)
            executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"netns-{namespace}",
                                          initializer=_enter, initargs=(namespace,))
            _executors[namespace] = (identity, executor)
    return executor.submit(function).result()


def _identity(namespace: str) -> tuple[int, int]:
    status = os.stat(f"/run/netns/{namespace}")
    return status.st_dev, status.st_ino


def _forget_threads() -> None:
    with _executors_lock:
        for _, executor in _executors.values():
            executor.shutdown(wait=False)
        _executors.clear()
