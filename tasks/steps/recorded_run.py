"""One run, one record: open it, let the flow fill it, and always save and publish it."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from zoneinfo import ZoneInfo

from lifeline.configs.loading import LoadedPlan
from lifeline.configs.settings import Settings
from lifeline.tasks.adapters import daemons
from lifeline.tasks.adapters.locks import plan_lock
from lifeline.tasks.report.artifacts import deliveries_table, record_markdown, record_table
from lifeline.tasks.run.ledger import Deliveries, Ledger
from lifeline.tasks.run.record import Journal, RunKind, RunRecord, Step, Trigger, new_run_id, utc_now
from lifeline.tasks.steps import drills
from lifeline.tasks.steps.communication import RunCommunications, communicates
from lifeline.tasks.steps.host_slots import hosts_limited
from lifeline.tasks.steps.prefect_run import name_this_run
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.states import Cancelled


def artifact_key(plan: str, kind: str, suffix: str) -> str:
    """Stable per plan and kind, so the Prefect UI shows each key's history run by run."""
    return re.sub(r"[^a-z0-9-]+", "-", f"lifeline-{plan}-{kind}-{suffix}".lower()).strip("-")


def actual_trigger(trigger: Trigger) -> Trigger:
    """A deployment run started by its schedule says so, even on a deployment meant for clicks."""
    if trigger not in ("ui", "schedule"):  # the CLI, intake: they say who they are
        return trigger
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    try:
        with get_client(sync_client=True) as client:
            return "schedule" if client.read_flow_run(flow_run.id).auto_scheduled else "ui"
    except Exception:  # no API at hand: keep what the caller said
        return trigger


EXCLUSIVE_KINDS: tuple[RunKind, ...] = ("failover", "failback", "drill")


class ProgressSaver:
    """Saves the record at every step's start and end, so the ledger shows how far a run got, even one whose
    process is killed. A ledger that is away is said once and skipped: the run goes on, its closing save waits."""

    def __init__(self, ledger: Ledger, record: RunRecord) -> None:
        self.ledger, self.record = Ledger(ledger.url, patience_seconds=0), record
        self.lock = threading.Lock()
        self.away = False

    def __call__(self) -> None:
        with self.lock:  # one save at a time, each of the newest state: the last one written is the newest
            try:
                self.ledger.save_run(self.record)
            except Exception as error:  # noqa: BLE001 - progress is best effort: the closing save waits for it
                if not self.away:
                    get_run_logger().warning("%s; the run goes on and saves its record when it ends", error)
                self.away = True
                return
            if self.away:
                get_run_logger().info("the ledger answers again; the run's record is saved")
            self.away = False


@contextmanager
def exclusive_run(
    kind: RunKind, loaded: LoadedPlan, settings: Settings, sweep: Callable[[], object] | None = None, **options
) -> Iterator[Journal]:
    """A failover, failback or drill: one at a time per plan (a second one refuses at once), recorded.
    `sweep` cleans up what drills left: it runs first, holding the plan lock, before the run's record opens."""
    record_id = options.pop("record_id", None) or new_run_id()
    with plan_lock(settings.locks_dir, loaded.plan.name, kind, record_id, where=name_this_run(kind, record_id)):
        if sweep is not None:
            sweep()
        with recorded_run(kind, loaded, settings, exclusive=True, record_id=record_id, **options) as journal:
            yield journal


def flow_result(journal: Journal):
    """The record's id; a run a person declined ends Cancelled (never Failed), with the record's reason."""
    if journal.record.status == "cancelled":
        return Cancelled(message=journal.record.error or "not approved; nothing was changed")
    return journal.record.id


def close_interrupted_runs(ledger: Ledger, plan: str, found_by: str, *, holding_the_lock: bool) -> list[str]:
    """A record that still says "running" although its process is gone was left by a killed process, and is
    closed as failed: any run's whose process ran on this machine and has ended; and, holding the plan's lock
    (no other failover, failback or drill of the plan is alive), a failover's, failback's or drill's anywhere."""
    closed = []
    for stale in ledger.runs(plan=plan, status="running"):
        gone_here = stale.host == socket.gethostname() and stale.pid != os.getpid() and not daemons.running(stale.pid)
        if gone_here or (holding_the_lock and stale.kind in EXCLUSIVE_KINDS):
            stale.status, stale.ended_at = "failed", utc_now()
            stale.error = f"interrupted: its process ended before the run did (closed by run {found_by})"
            ledger.save_run(stale)
            closed.append(stale.id)
    return closed


def interrupted_since_completed(ledger: Ledger, plan: str, kind: RunKind) -> list[str]:
    """Runs of this kind cut off since the last one that completed, whoever closed their records (the next run,
    a verification that found the process gone, a drill's sweep): a new run of the kind carries them on."""
    found = []
    for run in ledger.runs(plan=plan, kind=kind, last=50):
        if run.status == "completed":
            break
        if run.status == "failed" and (run.error or "").startswith("interrupted"):
            found.append(run.id)
    return found


@contextmanager
def recorded_run(
    kind: RunKind,
    loaded: LoadedPlan,
    settings: Settings,
    *,
    trigger: Trigger = "cli",
    record_id: str | None = None,
    scenario: str | None = None,
    exclusive: bool = False,
    parent_id: str | None = None,
) -> Iterator[Journal]:
    """`exclusive`: the caller holds the plan lock (see exclusive_run)."""
    record = RunRecord(
        kind=kind, plan=loaded.plan.name, plan_sha256=loaded.sha256, trigger=actual_trigger(trigger), scenario=scenario,
        parent_id=parent_id,
    )
    if record_id:
        record.id = record_id
    if not exclusive:  # exclusive_run named it before taking the plan's lock
        name_this_run(kind, record.id)
    journal = Journal(record)
    journal.timezone = loaded.plan.timezone
    journal.on_step_end = partial(say_step, ZoneInfo(loaded.plan.timezone))
    ledger = Ledger(settings.ledger)
    warn_of_drill_leftovers(loaded, settings)
    for closed in close_interrupted_runs(ledger, loaded.plan.name, record.id, holding_the_lock=exclusive):
        get_run_logger().warning("run %s was interrupted (its process is gone): recorded as failed", closed)
    ledger.save_run(record)
    journal.on_change = ProgressSaver(ledger, record)
    communications = RunCommunications(loaded.plan, str(loaded.path), journal, ledger,
                                      carries_on=interrupted_since_completed(ledger, loaded.plan.name, kind)) \
        if communicates(loaded.plan) else None
    if communications is not None:
        journal.announce, journal.answered_by = communications.announce, communications.answered_by
        journal.carry_on, journal.told_before = communications.carry_on, communications.told_of
        journal.send, journal.tell_contacts = communications.send, communications.tell_contacts
    if loaded.plan.status_page is not None:
        from lifeline.tasks.steps.status_page import RunPosts

        journal.public = RunPosts(loaded.plan, ledger, journal)
    try:
        with hosts_limited(loaded.plan):
            yield journal
        record.status = "completed" if record.status == "running" else record.status
    except BaseException as error:
        record.status = "cancelled" if isinstance(error, KeyboardInterrupt) else "failed"
        record.error = str(error) or type(error).__name__
        raise
    finally:
        record.ended_at = utc_now()
        for running in (s for s in record.steps if s.status == "running"):
            running.status, running.ended_at = "failed", record.ended_at
        if record.status == "failed":
            record.met_targets = False if (record.rto_target_seconds or record.rpo_target_seconds) else None
        elif record.met_targets is None:
            record.judge_targets()
        ledger.save_run(record)
        if communications is not None:  # the record says how the run ended while its escalation goes on
            tell_the_end(communications)
            ledger.save_run(record)
        publish(record, loaded, ledger)
        export_metrics(ledger, loaded, settings)


def say_step(zone: ZoneInfo, step: Step) -> None:
    """One line per step in the run's log, as an operator reads it: what, how it ended, when (the plan's time)."""
    ended = (step.ended_at or utc_now()).astimezone(zone)
    seconds = (ended - step.started_at).total_seconds()
    outcome = f"failed: {step.detail.get('error', '')}" if step.status == "failed" else step.status
    again = f", attempt {step.attempts}" if step.attempts > 1 else ""
    try:
        logger = get_run_logger()
    except MissingContextError:  # a step journaled outside Prefect's run context (a thread of its own)
        logger = logging.getLogger("lifeline.steps")
    logger.log(logging.WARNING if step.status == "failed" else logging.INFO, "%s: %s at %s %s (%.1f s%s)",
               step.name, outcome, f"{ended:%H:%M:%S}", zone.key, seconds, again)


def tell_the_end(communications: RunCommunications) -> None:
    """Telling people must never fail the run it tells of; what went wrong is in its deliveries."""
    try:
        communications.finish()
    except Exception as error:  # noqa: BLE001
        get_run_logger().warning("could not finish telling people of the run: %s", error)


def warn_of_drill_leftovers(loaded: LoadedPlan, settings: Settings) -> None:
    """Say what drills left that this run does not touch: only a failover, failback or drill, holding the
    plan lock, sweeps a dead drill, and only a failback a kept one."""
    for marker in drills.markers(settings.drills_dir, loaded.plan.name):
        if marker.kept:
            get_run_logger().warning("drill %s (%s) was kept for inspection (marker %s): `lifeline failback --yes` "
                                     "returns the plan to normal", marker.record_id, marker.scenario,
                                     marker.path(settings.drills_dir))
        elif not marker.process_alive and marker.scenario in loaded.plan.scenarios:
            get_run_logger().warning("drill %s (%s) was killed (marker %s): a sweep of what it left is due; the next "
                                     "failover, failback or drill of this plan sweeps it", marker.record_id,
                                     marker.scenario, marker.path(settings.drills_dir))


def export_metrics(ledger: Ledger, loaded: LoadedPlan, settings: Settings) -> None:
    if settings.metrics_textfile is None and settings.pushgateway_url is None:
        return
    from lifeline.tasks.report.metrics import export

    try:
        export(ledger, loaded.plan.name, textfile=settings.metrics_textfile, pushgateway_url=settings.pushgateway_url,
               datasets=list(loaded.plan.datasets))
    except Exception as error:  # monitoring must never fail the run it reports on
        get_run_logger().warning("could not export metrics: %s", error)


def publish(record: RunRecord, loaded: LoadedPlan, ledger: Ledger) -> None:
    zone = ZoneInfo(loaded.plan.timezone)
    try:
        create_table_artifact(
            table=record_table(record, zone),
            key=artifact_key(record.plan, record.kind, "record"),
            description=f"Lifeline {record.kind} run {record.id}: {record.status}",
        )
        create_markdown_artifact(
            markdown=record_markdown(record, zone),
            key=artifact_key(record.plan, record.kind, "summary"),
            description=f"Lifeline {record.kind} run {record.id}",
        )
        deliveries = Deliveries(ledger)
        told, acknowledged = deliveries.of_run(record.id), deliveries.acknowledgement(record.id)
        if told:
            create_table_artifact(table=deliveries_table(told, zone), key=artifact_key(record.plan, record.kind, "deliveries"),
                                  description=f"Who was told what in {record.kind} run {record.id}")
        if record.kind in ("drill", "failover", "failback", "restore", "alert"):
            from lifeline.tasks.report.after_action import load_history, render_markdown

            create_markdown_artifact(
                markdown=render_markdown(record, loaded.plan, load_history(ledger, record), ledger.children(record.id),
                                         told, acknowledged),
                key=artifact_key(record.plan, record.kind, "after-action"),
                description=f"After-action report of {record.kind} run {record.id}",
            )
    except Exception as error:  # the ledger holds the record; a missing artifact must not fail the run
        get_run_logger().warning("could not publish the run record as artifacts: %s", error)
