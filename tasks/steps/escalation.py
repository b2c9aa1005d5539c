"""Escalation: without an acknowledgement, the plan's next level is told after its delay, and repeated.

It ends at the first of: a person acknowledges (`lifeline ack`, a form in the UI, or answering the run's
approval), the run that raised it resolves the incident (it recovered), or the last level has been told.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from lifeline.configs.plan import Plan
from lifeline.tasks.run.deliveries import Acknowledgement
from lifeline.tasks.run.ledger import Deliveries
from lifeline.tasks.run.record import utc_now
from lifeline.tasks.steps.notify import Announcement, Notifier

Outcome = Literal["acknowledged", "resolved", "exhausted", "stopped"]
POLL_SECONDS = 0.5


@dataclass
class Escalation:
    plan: Plan
    notifier: Notifier
    deliveries: Deliveries
    announcement: Announcement
    started_at: datetime
    already_told: frozenset[str] = frozenset()
    resolved: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    levels_told: list[int] = field(default_factory=list)
    outcome: Outcome | None = None
    on_level: Callable[[int], None] | None = None

    def acknowledgement(self) -> Acknowledgement | None:
        return self.deliveries.acknowledgement(self.notifier.run_id)

    def run(self) -> Outcome:
        """Blocks until the escalation ends; returns how."""
        self.outcome = self._run()
        return self.outcome

    def _run(self) -> Outcome:
        for minutes, index in self.plan.escalation.level_times():
            due = self.started_at.timestamp() + minutes * 60
            while time.time() < due:
                if (ended := self._ended()) is not None:
                    return ended
                time.sleep(min(POLL_SECONDS, max(0.0, due - time.time())))
            if (ended := self._ended()) is not None:
                return ended
            level = self.plan.escalation.levels[index]
            exclude = self.already_told if minutes == 0 else frozenset()
            announcement = Announcement(self.announcement.event, self.announcement.fields, level=index + 1)
            self.notifier.announce(announcement, [name for name in level.notify if name in self.plan.audiences], exclude)
            self.levels_told.append(index + 1)
            if self.on_level is not None:
                self.on_level(index + 1)
        self.notifier.wait(120)
        return self._ended() or "exhausted"

    def _ended(self) -> Outcome | None:
        if self.stopped.is_set():
            return "stopped"
        if self.resolved.is_set():
            return "resolved"
        if self.acknowledgement() is not None:
            return "acknowledged"
        return None

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"escalation-{self.notifier.run_id}", daemon=True)
        thread.start()
        return thread


def acknowledge(deliveries: Deliveries, run_id: str, contact: str, via: Literal["cli", "ui", "approval"] = "cli",
                note: str = "") -> Acknowledgement:
    return deliveries.acknowledge(Acknowledgement(run_id=run_id, contact=contact, at=utc_now(), via=via, note=note))
