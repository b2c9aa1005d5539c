"""The run record: what ran, when, how long the business was down, what it lost and cost.

A `Journal` collects the steps of one flow run as they happen (every attempt, its
timestamps and outcome); `RunRecord` is what the ledger stores and the artifacts show.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

RunKind = Literal["backup", "restore", "failover", "failback", "verify", "drill", "alert"]
Trigger = Literal["schedule", "ui", "cli", "intake"]
StepStatus = Literal["running", "completed", "failed", "skipped", "warning"]
RunStatus = Literal["running", "completed", "failed", "cancelled"]


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Step(BaseModel):
    name: str
    started_at: datetime
    ended_at: datetime | None = None
    attempts: int = 1
    status: StepStatus = "running"
    detail: dict[str, Any] = Field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()


class RunRecord(BaseModel):
    id: str = Field(default_factory=new_run_id)
    kind: RunKind
    plan: str
    plan_sha256: str
    scenario: str | None = None
    parent_id: str | None = None  # the run that started this one (a drill's failback); None for a run of its own
    trigger: Trigger = "cli"
    status: RunStatus = "running"
    host: str = Field(default_factory=socket.gethostname)  # where the run's process runs ...
    pid: int = Field(default_factory=os.getpid)  # ... and which: a run whose process is gone can be closed
    started_at: datetime = Field(default_factory=utc_now)
    ended_at: datetime | None = None
    incident_at: datetime | None = None
    recovered_at: datetime | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rto_target_seconds: float | None = None
    rpo_target_seconds: float | None = None
    met_targets: bool | None = None
    affected_customers: int | None = None
    impact_source: Literal["call_log", "model"] | None = None
    cost: float | None = None
    currency: str | None = None
    bytes: int = 0
    snapshots: list[str] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    milestones: dict[str, datetime] = Field(default_factory=dict)
    error: str | None = None

    def judge_targets(self) -> None:
        """met_targets is true only when every objective that has a target and a measure was met."""
        verdicts = [
            measured <= target
            for measured, target in (
                (self.rto_seconds, self.rto_target_seconds),
                (self.rpo_seconds, self.rpo_target_seconds),
            )
            if measured is not None and target is not None
        ]
        self.met_targets = all(verdicts) if verdicts else None


def _say_nothing(event: str, **fields: object) -> None:
    return None


def _note_nothing(person: str) -> None:
    return None


def _keep_nothing() -> None:
    return None


def _say_nothing_of(step: Step) -> None:
    return None


def _carry_on_nothing(run_id: str) -> None:
    return None


def _tell_nobody(event: str, contact_ids: list[str], level: int | None = None) -> None:
    return None


def _told_nobody(event: str) -> frozenset[str]:
    return frozenset()


def _send_nowhere(audiences: list[str], template: str | None, message: str | None) -> None:
    return None


class PublicPage(Protocol):
    """The public status page as a run sees it (steps implement it; a plan without one gets `NoPublicPage`)."""

    def preview(self, events: list[str]) -> str: ...

    def approve(self, by: str) -> None: ...

    def post(self, event: str, *, resolved: bool = False) -> None: ...


class NoPublicPage:
    def preview(self, events: list[str]) -> str:
        return ""

    def approve(self, by: str) -> None:
        return None

    def post(self, event: str, *, resolved: bool = False) -> None:
        return None


class Journal:
    """Thread-safe step log of one run; tasks running concurrently append to it."""

    def __init__(self, record: RunRecord):
        self.record = record
        self._lock = threading.Lock()
        self.message_fields: dict[str, object] = {}  # what the run's messages may say (sites, reason...)
        self.timezone = "UTC"  # the plan's: the zone a person is shown times in
        self.announce: Callable[..., None] = _say_nothing  # set when the plan tells people of its runs
        self.answered_by: Callable[[str], None] = _note_nothing  # a person answered the run's approval
        self.send: Callable[..., list | None] = _send_nowhere  # a runbook `notify` step; None: nobody to tell
        self.public: PublicPage = NoPublicPage()  # the status page, when the plan has one
        self.tell_contacts: Callable[..., None] = _tell_nobody  # an event to named people (an approver's deputies)
        # The run goes on with what an earlier run of the same incident began: whom it told is not told again.
        self.carry_on: Callable[[str], None] = _carry_on_nothing
        self.told_before: Callable[[str], frozenset[str]] = _told_nobody  # contacts those earlier runs told of an event
        # Called at every step's start and end: the ledger shows how far a run got, even one whose process is killed.
        self.on_change: Callable[[], None] = _keep_nothing
        self.on_step_end: Callable[[Step], None] = _say_nothing_of  # the run's log line for an operator

    def tell(self, event: str, **fields: object) -> None:
        """Announce an event of this run to the audiences the plan names for it."""
        self.announce(event, **{**self.message_fields, **fields})

    def milestone(self, name: str, at: datetime | None = None) -> datetime:
        at = at or utc_now()
        with self._lock:
            self.record.milestones.setdefault(name, at)
            return self.record.milestones[name]

    def _attempt(self, name: str) -> Step:
        with self._lock:
            for step in self.record.steps:
                if step.name == name and step.status in ("running", "failed"):
                    step.attempts += 1
                    step.status, step.ended_at = "running", None
                    return step
            step = Step(name=name, started_at=utc_now())
            self.record.steps.append(step)
            return step

    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Time one attempt of a step; a retry of the same step counts as a further attempt."""
        step = self._attempt(name)
        self.on_change()
        try:
            yield step
        except BaseException as error:
            with self._lock:
                step.status, step.ended_at = "failed", utc_now()
                step.detail["error"] = str(error) or type(error).__name__
            self.on_change()
            self.on_step_end(step)
            raise
        with self._lock:
            step.ended_at = utc_now()
            if step.status == "running":
                step.status = "completed"
            step.detail.pop("error", None)
        self.on_change()
        self.on_step_end(step)

    def record_skipped(self, name: str, reason: str) -> None:
        now = utc_now()
        with self._lock:
            self.record.steps.append(
                Step(name=name, started_at=now, ended_at=now, status="skipped", detail={"reason": reason})
            )
        self.on_change()
