"""A data-loss drill judges its sentinel file against the snapshot it restored: a scheduled backup that ran
between the sentinel and the fault holds the sentinel, so finding it back is then the right outcome."""

from datetime import timedelta
from pathlib import Path

import pytest
from lifeline.configs.drills import Scenario
from lifeline.flows.drill import DrillFailed, check_sentinel
from lifeline.tasks.run.record import Journal, RunRecord, utc_now
from lifeline.tasks.steps.drills import Sentinel

SCENARIO = Scenario.model_validate({
    "description": "recordings lost", "kind": "data-corruption", "fault": {"command": ["true"]},
    "recovery": {"restore": {"dataset": "recordings"}}, "sentinel": {"dataset": "recordings", "file_survives": False},
})


def restored_journal(sentinel: Sentinel, snapshot_after_sentinel: timedelta) -> Journal:
    incident_at = sentinel.written_at + timedelta(seconds=5)
    snapshot_at = sentinel.written_at + snapshot_after_sentinel
    record = RunRecord(kind="drill", plan="cc", plan_sha256="-", incident_at=incident_at, snapshots=["0123abcd"],
                       rpo_seconds=(incident_at - snapshot_at).total_seconds())
    return Journal(record)


@pytest.fixture
def sentinel(tmp_path) -> Sentinel:
    path = tmp_path / "drill-sentinel.wav"
    path.write_text("sentinel")
    return Sentinel(token="drill-x", written_at=utc_now(), file=str(path))


def test_a_sentinel_written_after_the_restored_snapshot_and_found_back_fails_the_drill(sentinel):
    journal = restored_journal(sentinel, snapshot_after_sentinel=timedelta(hours=-3))
    with pytest.raises(DrillFailed, match="sentinel file unexpectedly present"):
        check_sentinel(None, journal, SCENARIO, sentinel)


def test_a_sentinel_a_later_backup_took_is_expected_back_and_its_absence_fails_the_drill(sentinel):
    journal = restored_journal(sentinel, snapshot_after_sentinel=timedelta(seconds=2))
    check_sentinel(None, journal, SCENARIO, sentinel)
    (step,) = journal.record.steps
    assert step.status == "completed" and "newer" in step.detail["file_expected"]
    Path(sentinel.file).unlink()
    with pytest.raises(DrillFailed, match="sentinel file lost"):
        check_sentinel(None, restored_journal(sentinel, timedelta(seconds=2)), SCENARIO, sentinel)
