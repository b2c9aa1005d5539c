"""Realistic run records built in code, for the report and metrics tests and the report benchmark.

`site_loss_drill` is a drill that went wrong in every way a report must show: a forced preflight,
a retried probe, a long approval wait, a DNS warning, a sentinel file that did not survive, lost
calls, a missed RTO and a failed clean-up step.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from lifeline.tasks.run.record import RunRecord, Step

PLAN = "callcenter-east"
SHA = "3f1c0b1f9a3e5d2c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c"
OLD_SHA = "aa" * 32
START = datetime(2026, 11, 28, 2, 0, 0, tzinfo=UTC)
FORCED_REASON = "backup crm-db: newest snapshot 41.0 min old (target 5 min)"
DNS_WARNING = "TTL 300 s: callers may reach the old address for 5 min"

# (name, start s, end s, attempts, status, detail): offsets from START
DRILL_STEPS: list[tuple[str, float, float, int, str, dict]] = [
    ("preflight", 0, 3, 1, "completed", {"ready": False, "reasons": [FORCED_REASON], "checked": 6,
                                         "forced_past": [FORCED_REASON]}),
    ("write sentinel", 3, 4, 1, "completed", {"sentinel_id": "drill-7f3a", "table": "calls"}),
    ("inject fault", 4, 5, 1, "completed", {"fault": "power off main"}),
    ("probe main", 5, 65, 3, "completed", {"critical_healthy": False}),
    ("approval", 65, 365, 1, "completed", {"approved": True, "operator": "duty-manager", "reason": "quarterly drill",
                                           "waited_seconds": 300.0}),
    ("fence main", 365, 380, 1, "completed", {"site": "main"}),
    ("promote crm-db at dr", 380, 500, 1, "completed", {"database": "crm-db", "fork_lsn": "0/3000148"}),
    ("switch dns to dr", 500, 560, 1, "completed", {"record": "crm.callcenter.lab", "warning": DNS_WARNING}),
    ("verify dr", 560, 1005, 1, "completed", {"site": "dr", "rounds": 12, "healthy_in_a_row": 3}),
    ("verify sentinel", 1005, 1010, 1, "completed", {"sentinel_row_survived": True, "sentinel_file_survived": False,
                                                     "rows_verified": 120345, "files_verified": 5012}),
    ("measure", 1010, 1010, 1, "completed", {"lsn_gap_bytes": {"crm-db": 8192}, "lost_calls_crm-db": 2,
                                             "lost_call_ids_crm-db": ["c-1001", "c-1002"], "failed_calls": 40,
                                             "impact_source": "call_log"}),
    ("clean up", 1010, 1030, 2, "failed", {"error": "could not remove the sentinel file: Permission denied"}),
]
DRILL_MILESTONES = {"declared": 0, "forced": 3, "incident": 5, "detected": 65, "awaiting_approval": 65,
                    "approved": 365, "fenced": 380,
                    "promoted": 500, "dns_switched": 560, "recovered": 1005}


def at(seconds: float, start: datetime = START) -> datetime:
    return start + timedelta(seconds=seconds)


def site_loss_drill(start: datetime = START, run_id: str = "d7f3a9c01b2e") -> RunRecord:
    return RunRecord(
        id=run_id, kind="drill", plan=PLAN, plan_sha256=SHA, scenario="site-loss", trigger="schedule",
        status="failed", started_at=start, ended_at=at(1030, start), incident_at=at(5, start),
        recovered_at=at(1005, start), rto_seconds=1000.0, rpo_seconds=240.0, rto_target_seconds=900.0,
        rpo_target_seconds=300.0, met_targets=False, affected_customers=57, impact_source="call_log",
        cost=1916.67, currency="CNY", error="clean up: could not remove the sentinel file: Permission denied",
        steps=[Step(name=name, started_at=at(begin, start), ended_at=at(end, start), attempts=attempts, status=status,
                    detail=dict(detail)) for name, begin, end, attempts, status, detail in DRILL_STEPS],
        milestones={name: at(offset, start) for name, offset in DRILL_MILESTONES.items()},
    )


def simple_drill(scenario: str, start: datetime, rto: float | None, rpo: float | None, *, status: str = "completed",
                 run_id: str | None = None, failed_step: str | None = None, sha: str = SHA) -> RunRecord:
    """An earlier drill: a few steps, figures judged against 15 min / 5 min."""
    steps = [Step(name="inject fault", started_at=start, ended_at=at(1, start), status="completed"),
             Step(name="verify dr", started_at=at(1, start), ended_at=at((rto or 60) + 1, start), status="completed",
                  detail={"rows_verified": 1000, "sentinel_row_survived": True})]
    if failed_step:
        steps.append(Step(name=failed_step, started_at=at((rto or 60) + 1, start), ended_at=at((rto or 60) + 5, start),
                          status="failed", detail={"error": "permission denied"}))
    met = None if rto is None else rto <= 900 and (rpo or 0) <= 300
    record = RunRecord(kind="drill", plan=PLAN, plan_sha256=sha, scenario=scenario, trigger="schedule", status=status,
                       started_at=start, ended_at=at((rto or 60) + 10, start), incident_at=at(1, start),
                       recovered_at=at(rto + 1, start) if rto is not None else None, rto_seconds=rto, rpo_seconds=rpo,
                       rto_target_seconds=900.0, rpo_target_seconds=300.0,
                       met_targets=False if status == "failed" else met, steps=steps,
                       milestones={"incident": at(1, start)})
    if run_id:
        record.id = run_id
    return record


def site_loss_history(count: int = 5) -> list[RunRecord]:
    """Earlier site-loss drills, a week apart, RTO 400-480 s; one of them also failed at `clean up`."""
    return [simple_drill("site-loss", START - timedelta(days=7 * (index + 1)), 400.0 + 20 * index, 60.0,
                         failed_step="clean up" if index == 2 else None, sha=OLD_SHA if index >= 3 else SHA,
                         run_id=f"earlier{index:05d}")
            for index in range(count)]


def backup_record(start: datetime = START, run_id: str = "b0c4e2a1f9d8") -> RunRecord:
    """A nightly backup of two datasets; crm-db's snapshots were 26 h apart against a 25 h target."""
    recordings = {"dataset": "recordings", "repository": "local", "snapshot_id": "a1" * 32,
                  "snapshot_time": at(40, start).isoformat(), "bytes_added": 1_048_576, "bytes_processed": 9_437_184,
                  "files": 5012, "seconds": 38.5, "rpo_seconds": 86_400.0}
    crm = {"dataset": "crm-db", "repository": "local", "snapshot_id": "b2" * 32, "snapshot_time": at(70, start).isoformat(),
           "bytes_added": 524_288, "bytes_processed": 2_097_152, "files": 1, "seconds": 29.0,
           "row_counts": {"calls": 120_000, "customers": 345}, "rpo_seconds": 93_600.0}
    return RunRecord(
        id=run_id, kind="backup", plan=PLAN, plan_sha256=SHA, trigger="schedule", status="completed", started_at=start,
        ended_at=at(120, start), rpo_seconds=93_600.0, rpo_target_seconds=90_000.0, met_targets=False,
        bytes=1_572_864, snapshots=["a1" * 32, "b2" * 32],
        steps=[Step(name="prepare local", started_at=start, ended_at=at(1, start), status="completed",
                    detail={"repository": "local", "created": False}),
               Step(name="backup recordings", started_at=at(1, start), ended_at=at(40, start), status="completed",
                    detail=recordings),
               Step(name="backup crm-db", started_at=at(41, start), ended_at=at(70, start), status="completed",
                    detail=crm),
               Step(name="check local", started_at=at(70, start), ended_at=at(120, start), status="completed",
                    detail={"read_data_subset": "5%"})],
    )


def fake_plan(**overrides) -> SimpleNamespace:
    """A plan with `scenarios`, shaped as the plan model will have them (name → description, targets, cadence)."""
    def scenario(description: str, fault: str, recovery: str, cadence_days: int | None, rto: float = 15, rpo: float = 5):
        return SimpleNamespace(description=description, fault=fault, recovery=recovery, checks=["crm", "sentinel"],
                               targets=SimpleNamespace(rto_minutes=rto, rpo_minutes=rpo), cadence_days=cadence_days)

    values = dict(
        name=PLAN, timezone="Asia/Shanghai", targets=SimpleNamespace(rto_minutes=15, rpo_minutes=5),
        schedules=SimpleNamespace(backup="0 2 * * *", verify="*/5 * * * *", drill="0 3 * * 1"),
        scenarios={
            "site-loss": scenario("Natural disaster: the main site loses power; fail over to dr.",
                                  "power off main", "failover", 30),
            "system-crash": scenario("The main database crashes: promote the standby.", "stop crm-db at main",
                                     "promote", 30, rto=5, rpo=1),
            "data-corruption": scenario("Recordings are lost: restore the last good snapshot.",
                                        "delete recordings", "restore recordings", 90, rto=30, rpo=1500),
            "data-leak": scenario("A host is compromised: isolate it, rotate the repository.", "compromise main",
                                  "rotate and restore", None),
        },
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def drill_with_failback(start: datetime = START) -> tuple[RunRecord, RunRecord]:
    """A site-loss drill and the failback it ran to return to normal: a run it started, so it ends later."""
    drill = site_loss_drill(start)
    failback = RunRecord(id="f4b1c2d3e4f5", kind="failback", plan=PLAN, plan_sha256=SHA, scenario="site-loss",
                         parent_id=drill.id, status="completed", started_at=at(1012, start), ended_at=at(1025, start),
                         incident_at=at(1012, start), recovered_at=at(1024, start), rto_seconds=12.0,
                         steps=[Step(name="promote crm-db at main", started_at=at(1012, start),
                                     ended_at=at(1020, start), status="completed")])
    return drill, failback
