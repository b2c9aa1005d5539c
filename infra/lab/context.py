"""One object that every lab module receives: paths, persisted state, the lab user, and how to
reach each side (directly on loopback, or inside a network namespace)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .processes import LabUser
from .state import LabPaths, LabState

Result = TypeVar("Result")


@dataclass
class LabContext:
    paths: LabPaths
    state: LabState
    user: LabUser

    @property
    def netns(self) -> bool:
        return self.state.mode == "netns"

    def namespace(self, side: str) -> str | None:
        """The network namespace a side's processes run in (None on plain loopback)."""
        return side if self.netns else None

    def address(self, side: str) -> str:
        return self.state.addresses.of(side)

    @property
    def marker(self) -> str:
        """Appears in the command line of every lab process (guards against pid reuse)."""
        return str(self.paths.root)

    def in_ops(self, function: Callable[[], Result]) -> Result:
        """Run ``function`` where Lifeline runs: in the ``ops`` namespace with --netns (so it
        reaches the sites' addresses the way the plan does), else right here."""
        if not self.netns:
            return function()
        from .netns import run_in_namespace

        return run_in_namespace("ops", function)

    def in_side(self, side: str, function: Callable[[], Result]) -> Result:
        """Run ``function`` inside ``side``'s own namespace (with --netns), else right here."""
        if not self.netns:
            return function()
        from .netns import run_in_namespace

        return run_in_namespace(side, function)

    def probe_port(self, side: str, port: int, timeout: float = 0.25) -> bool:
        """Is something listening on ``side``'s address and ``port``? Asked from inside that
        side, so a cut link does not make a running component look stopped."""
        from .processes import LabError, port_open

        address = self.address(side)
        try:
            return self.in_side(side, lambda: port_open(address, port, timeout))
        except LabError:  # the namespace is gone: nothing can listen in it
            return False
