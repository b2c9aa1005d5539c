"""A site's softphones: the agents logged in at the site stay registered at the carrier's SBC.

A registration lasts an hour (``agents.EXPIRES_SECONDS``). As a softphone does, this process registers each agent
of its site again once less than half of that is left: it reads the SBC's location table every
``POLL_SECONDS`` and runs SIPp for the agents due (:func:`lifeline.infra.lab.agents.refresh`). Only agents who
are registered are kept so: an agent logged out (``lab agents dr logout agent-3``) stays out, and one whose
registration the SBC lost (Kamailio restarted) is logged in again by ``lab heal``. When its site is powered off
this process stops with the site, and the site's registrations run out an hour later, as real ones would.

Runs as ``python -m lifeline.infra.lab.softphones --lab-dir DIR --site dr`` in the site's namespace.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from . import agents
from .context import LabContext
from .processes import LabError
from .state import LabPaths, load_state, now_iso

POLL_SECONDS = 5.0


def keep_registered(context: LabContext, site: str, stopped: threading.Event) -> None:
    while not stopped.is_set():
        try:
            if refreshed := agents.refresh(context, site):
                print(f"{now_iso()} registered again at {site}: {', '.join(refreshed)}", flush=True)
        except LabError as error:  # the SBC away for a while: the next round tries again
            print(f"{now_iso()} could not refresh {site}'s agents: {error}", flush=True)
        stopped.wait(POLL_SECONDS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the agents' softphones of one lab site")
    parser.add_argument("--lab-dir", type=Path, required=True)
    parser.add_argument("--site", choices=["main", "dr"], required=True)
    arguments = parser.parse_args(argv)
    paths = LabPaths(arguments.lab_dir)
    state = load_state(paths)
    if state is None:
        raise SystemExit(f"no lab state in {paths.root}")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    keep_registered(LabContext(paths, state, None), arguments.site, stopped)  # type: ignore[arg-type] - SIPp runs as root


if __name__ == "__main__":
    main(sys.argv[1:])
