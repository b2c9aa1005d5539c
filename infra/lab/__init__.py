"""The lab: a two-site call centre on one machine.

Python API (each takes ``home``; default ``$LIFELINE_HOME`` or ``~/.lifeline``; state in home/lab)::

    up(home, *, netns=False, port_base=None, free_ports=False, call_rate=None) -> Path  # plan.yaml
    down(home, *, purge=False) -> list[int]          # pids stopped
    status(home) -> LabStatus                        # .model_dump(mode="json") for JSON
    fault(name, home) -> (iso_time, what_was_done)
    heal(home) -> list[str]
    power(site, "on" | "off", home) -> list[str]
    open_lab(home) -> LabContext                     # paths, state (ports...), lab user
    agents.login(context, site, names) / agents.logout(...) / agents.registered(context)  # SIPp at the SBC
    kamailio.routing(context) / kamailio.set_routing(context, site, "a" | "i" | "d")       # the carrier's routing

Errors: LabUsageError (exit 2), LabError (exit 1).
"""

from __future__ import annotations

from pathlib import Path

from .context import LabContext
from .lab import down, fault, heal, open_lab, power, up
from .ports import Ports
from .processes import LabError, LabUsageError
from .state import LabPaths, LabState, lifeline_home, load_channel_faults, load_faults
from .status import LabStatus
from .status import status as _status


def status(home: Path | None = None) -> LabStatus:
    """The lab's status (see status.py for what "normal" means)."""
    return _status(open_lab(home))


__all__ = [
    "LabContext", "LabError", "LabPaths", "LabState", "LabStatus", "LabUsageError", "Ports", "down", "fault",
    "heal", "lifeline_home", "load_channel_faults", "load_faults", "open_lab", "power", "status", "up",
]
