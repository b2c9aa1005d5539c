"""What a run proved about the data, where it deviated from the plan, and the corrective action each
deviation calls for; with the small formatting helpers both reports share.

Rules, all naming the step concerned: a failed step → fix it; a retried step → investigate it; a
warning → review it; a forced preflight → resolve its findings; a missed RTO → shorten the slowest
steps (and the approval wait); a missed RPO → back up or replicate more often; lost calls → call back;
negative evidence (a sentinel that did not survive) → find out why; an RTO far above the history's
median → compare with the fastest earlier run.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from lifeline.tasks.report.charts import duration_text
from lifeline.tasks.run.record import RunRecord, Step

RECOVERY_KINDS = ("restore", "failover", "failback", "drill")
EVIDENCE_KEY = re.compile(
    r"verified|sentinel|survived|intact|lost_call|lsn|row_counts|^rows_|^files$|checksum|sha256|integrity"
    r"|^snapshot_(id|time)$|missing|differing|healthy_in_a_row"
)
PASS_FAIL_KEY = re.compile(r"verified|sentinel|survived|intact|matches|integrity")
REGRESSION_FACTOR = 1.5
FAILED, MISSED, PROCESS, NOTE = range(4)


@dataclass(frozen=True)
class Finding:
    """A deviation from the plan, and the corrective action it calls for (if any)."""

    deviation: str
    action: str | None = None
    severity: int = 3  # FAILED first, then MISSED (targets, data), PROCESS (retries, warnings, force), NOTE


# --- small helpers, shared with the trend report ------------------------------------------------


def plan_zone(plan: Any) -> tzinfo:
    try:
        return ZoneInfo(getattr(plan, "timezone", None) or "UTC")
    except (ValueError, KeyError):
        return UTC


def when(moment: datetime | None, zone: tzinfo) -> str:
    return "—" if moment is None else moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def seconds_text(seconds: float | None) -> str:
    return "—" if seconds is None else duration_text(seconds)


def scenario_of(plan: Any, name: str | None) -> Any | None:
    scenarios = getattr(plan, "scenarios", None) or {}
    return scenarios.get(name) if name else None


def scenario_target_seconds(plan: Any, scenario_name: str | None, measure: str) -> float | None:
    """The scenario's own target, else the plan's; `measure` is rto or rpo."""
    for targets in (getattr(scenario_of(plan, scenario_name), "targets", None), getattr(plan, "targets", None)):
        minutes = getattr(targets, f"{measure}_minutes", None)
        if minutes is not None:
            return float(minutes) * 60
    return None


def value_text(value: Any, limit: int = 160) -> str:
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:,.3f}".rstrip("0").rstrip(".")
    elif isinstance(value, dict):
        text = ", ".join(f"{key}={value_text(item, 40)}" for key, item in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(value_text(item, 40) for item in value)
    else:
        text = "—" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def step_kind(step: Step) -> str:
    """The waterfall's colour key and the step log's row class."""
    if step.status == "completed" and step.attempts > 1:
        return "retried"
    return step.status


# --- what the run proved, and where it deviated -------------------------------------------------


def evidence(record: RunRecord) -> list[tuple[Step, str, Any]]:
    """Every step detail that looks like proof about the data: counts verified, sentinels, lost calls, gaps."""
    return [(step, key, value)
            for step in record.steps for key, value in step.detail.items() if EVIDENCE_KEY.search(key)]


def _negative(key: str, value: Any) -> str | None:
    """What in a pass/fail piece of evidence says fail, e.g. a sentinel that did not survive."""
    if not PASS_FAIL_KEY.search(key):
        return None
    if value is False or (isinstance(value, str) and value.lower() in ("no", "false", "lost", "missing", "failed")):
        return value_text(value)
    if isinstance(value, dict):
        failed = [name for name, item in value.items() if item is False or item in ("lost", "missing", "failed")]
        return ", ".join(failed) + " failed" if failed else None
    return None


def _evidence_findings(record: RunRecord) -> list[Finding]:
    found: list[Finding] = []
    for step, key, value in evidence(record):
        if key.startswith("lost_calls_") and isinstance(value, int) and value > 0:
            database = key.removeprefix("lost_calls_")
            found.append(Finding(
                f"{value} call(s) acknowledged by the old primary are missing at the new primary of `{database}`.",
                f"Call back or re-enter the {value} lost call(s) of `{database}`: their ids are in step `{step.name}` "
                f"(`lost_call_ids_{database}`).", severity=MISSED))
        elif key == "lsn_gap_bytes" and isinstance(value, dict):
            for database, gap in value.items():
                if gap:
                    found.append(Finding(f"The old primary of `{database}` had written {gap:,} bytes of WAL that "
                                         "the promoted standby never received.", severity=MISSED))
        elif key in ("rows_only_at_old_primary", "rows_differing") and value:
            found.append(Finding(
                f"{value} row(s) {key.removeprefix('rows_').replace('_', ' ')} (step `{step.name}`).",
                f"Reconcile those rows from the split report `{step.detail.get('split_report', '?')}` "
                f"(step `{step.name}`).", severity=MISSED))
        elif (failed := _negative(key, value)) is not None:
            found.append(Finding(
                f"Evidence `{key}` of step `{step.name}` is negative: {failed}.",
                f"Find out why `{key}` failed in `{step.name}`: the data it guards may be lost or corrupt.",
                severity=MISSED))
    if record.kind in ("restore", "drill") and record.status == "completed" and not evidence(record):
        found.append(Finding("No step recorded data-integrity evidence.",
                             "Make the verification steps record what they proved (rows_verified, files_verified, "
                             "sentinel).", severity=PROCESS))
    return found


def _step_findings(step: Step, rerun: str, failed_before: int, previous_runs: int) -> list[Finding]:
    found: list[Finding] = []
    tries = f"{step.attempts} attempt{'s' if step.attempts != 1 else ''}"
    if step.status == "failed":
        error = step.detail.get("error") or "no error was recorded"
        recurring = f" It also failed in {failed_before} of the previous {previous_runs} runs." if failed_before else ""
        found.append(Finding(f"Step `{step.name}` failed after {tries}: {error}",
                             f"Fix `{step.name}`: {error}.{recurring} Then {rerun} to prove the fix.", severity=FAILED))
    elif step.attempts > 1:
        found.append(Finding(
            f"Step `{step.name}` needed {tries} before it {step.status}.",
            f"Investigate why `{step.name}` needed {tries}: find the first attempts' errors in the run's logs; "
            "a retry that helps today may not help in a real incident.", severity=PROCESS))
    if step.status == "skipped":
        reason = step.detail.get("reason", "no reason recorded")
        found.append(Finding(f"Step `{step.name}` was skipped: {reason}.", severity=NOTE))
    warnings = [step.detail["warning"]] if step.detail.get("warning") else []
    warnings += [str(item) for item in step.detail.get("warnings") or []]
    if warnings or step.status == "warning":
        text = "; ".join(warnings) or "see its detail"
        found.append(Finding(f"Step `{step.name}` warned: {text}", f"Review the warning of `{step.name}`: {text}.",
                             severity=PROCESS))
    if step.detail.get("forced_past"):
        reasons = "; ".join(map(str, step.detail["forced_past"]))
        found.append(Finding(
            f"`{step.name}` was forced past: {reasons}",
            f"Resolve what `{step.name}` found before the next run ({reasons}): a recovery should not need --force.",
            severity=PROCESS))
    return found


def _slowest(record: RunRecord, count: int = 2) -> str:
    timed = sorted((s for s in record.steps if s.seconds), key=lambda s: s.seconds or 0.0, reverse=True)[:count]
    return " and ".join(f"`{s.name}` ({duration_text(s.seconds or 0.0)})" for s in timed) or "none recorded"


def _rpo_action(record: RunRecord, target: float) -> str:
    if record.kind == "backup":
        backups = [s for s in record.steps if s.name.startswith("backup ") and s.detail.get("rpo_seconds") is not None]
        worst = max(backups, key=lambda s: s.detail["rpo_seconds"], default=None)
        if worst is not None:
            return (f"Back up `{worst.name.removeprefix('backup ')}` more often: its last two snapshots were "
                    f"{duration_text(worst.detail['rpo_seconds'])} apart, the target is {duration_text(target)} "
                    "(`schedules.backup`).")
    if record.kind == "restore":
        return (f"Take backups of the restored dataset at least every {duration_text(target)}: the newest good "
                "snapshot was older than that when the incident struck.")
    losing = sorted({key.removeprefix("lost_calls_") for step, key, value in evidence(record)
                     if key.startswith("lost_calls_") and value} | {
                        database for step, key, value in evidence(record) if key == "lsn_gap_bytes"
                        and isinstance(value, dict) for database, gap in value.items() if gap})
    where = ", ".join(f"`{name}`" for name in losing) or "the databases"
    return (f"Reduce the replication lag of {where} (or make commits synchronous) so that an incident loses at most "
            f"{duration_text(target)} of data.")


def _target_findings(record: RunRecord, targets: dict[str, float | None]) -> list[Finding]:
    found: list[Finding] = []
    rto, rto_target = record.rto_seconds, targets["rto"]
    if rto is not None and rto_target is not None and rto > rto_target:
        action = (f"Shorten the recovery by at least {duration_text(rto - rto_target)}: the longest steps were "
                  f"{_slowest(record)}; automate them or prepare them before an incident.")
        approval = next((s for s in record.steps if s.name == "approval"), None)
        waited = float(approval.detail.get("waited_seconds") or 0) if approval else 0.0
        if waited >= 0.25 * rto:
            action += (f" Waiting for approval took {duration_text(waited)} of it: name an on-call approver or "
                       "pre-approve this scenario.")
        found.append(Finding(f"RTO {duration_text(rto)} missed the target {duration_text(rto_target)} by "
                             f"{duration_text(rto - rto_target)}.", action, severity=MISSED))
    rpo, rpo_target = record.rpo_seconds, targets["rpo"]
    if rpo is not None and rpo_target is not None and rpo > rpo_target:
        found.append(Finding(f"RPO {duration_text(rpo)} missed the target {duration_text(rpo_target)} by "
                             f"{duration_text(rpo - rpo_target)}.", _rpo_action(record, rpo_target), severity=MISSED))
    if record.kind in RECOVERY_KINDS and record.status == "completed":
        for label, measured in (("RTO", rto), ("RPO", rpo)):
            if measured is None and targets[label.lower()] is not None:
                found.append(Finding(f"{label} was not measured, so the {label} target could not be judged.",
                                     severity=NOTE))
    return found


def _regression(record: RunRecord, history: Sequence[RunRecord]) -> list[Finding]:
    earlier = [r for r in history if r.id != record.id and r.kind == record.kind and r.scenario == record.scenario
               and r.rto_seconds is not None and r.started_at < record.started_at]
    if record.rto_seconds is None or len(earlier) < 3:
        return []
    median = statistics.median(r.rto_seconds for r in earlier)  # type: ignore[misc]
    if median <= 0 or record.rto_seconds <= REGRESSION_FACTOR * median:
        return []
    fastest = min(earlier, key=lambda r: r.rto_seconds or 0.0)
    return [Finding(
        f"RTO {duration_text(record.rto_seconds)} is {record.rto_seconds / median:.1f}× the median of the previous "
        f"{len(earlier)} runs ({duration_text(median)}).",
        f"Compare this step log with run `{fastest.id}` (RTO {seconds_text(fastest.rto_seconds)}) to find the step "
        "that slowed down.", severity=PROCESS)]


def findings(record: RunRecord, targets: dict[str, float | None], history: Sequence[RunRecord]) -> list[Finding]:
    drill = record.kind == "drill" and record.scenario
    rerun = f"rerun the drill `{record.scenario}`" if drill else f"rerun the {record.kind}"
    previous = [r for r in history if r.id != record.id and r.kind == record.kind and r.scenario == record.scenario]
    failed_before = Counter(name for r in previous for name in {s.name for s in r.steps if s.status == "failed"})
    found = [f for step in record.steps for f in _step_findings(step, rerun, failed_before[step.name], len(previous))]
    if "forced" in record.milestones and not any(s.detail.get("forced_past") for s in record.steps):
        found.append(Finding("The run was forced past a failed preflight.",
                             "Resolve the preflight findings before the next run: a recovery should not need --force.",
                             severity=PROCESS))
    if record.status in ("failed", "cancelled") and not any(s.status == "failed" for s in record.steps):
        cause = record.error or "no error was recorded"
        found.append(Finding(f"The run {'failed' if record.status == 'failed' else 'was cancelled'}: {cause}",
                             f"Fix the cause ({cause}), then {rerun}." if record.status == "failed" else None,
                             severity=FAILED))
    found += _target_findings(record, targets) + _evidence_findings(record) + _regression(record, history)
    return sorted(found, key=lambda finding: finding.severity)
