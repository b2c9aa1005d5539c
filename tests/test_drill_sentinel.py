"""A data-loss drill judges its sentinel file by the snapshot it restored: a scheduled backup that read the
folder after the sentinel was written holds it (even one that began before), so finding it back is then right."""

from pathlib import Path

import pytest
from lifeline.configs.drills import Scenario
from lifeline.configs.loading import load_plan
from lifeline.configs.settings import load_settings
from lifeline.flows.backup import backup_flow
from lifeline.flows.drill import DrillFailed, check_sentinel
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.record import Journal, RunRecord, utc_now
from lifeline.tasks.steps.drills import Sentinel, restored_snapshot_holds

from tests.helpers import files_plan, ledger, make_recordings, write_password, write_plan

SCENARIO = Scenario.model_validate({
    "description": "recordings lost", "kind": "data-corruption", "fault": {"command": ["true"]},
    "recovery": {"restore": {"dataset": "recordings"}}, "sentinel": {"dataset": "recordings", "file_survives": False},
})


def drill_journal() -> Journal:
    return Journal(RunRecord(kind="drill", plan="cc", plan_sha256="-", snapshots=["0123abcd"]))


@pytest.fixture
def sentinel(tmp_path) -> Sentinel:
    path = tmp_path / "drill-sentinel.wav"
    path.write_text("sentinel")
    return Sentinel(token="drill-x", written_at=utc_now(), file=str(path))


def test_a_sentinel_the_restored_snapshot_lacks_and_found_back_fails_the_drill(sentinel):
    with pytest.raises(DrillFailed, match="sentinel file unexpectedly present"):
        check_sentinel(None, drill_journal(), SCENARIO, sentinel, in_restored_snapshot=lambda path: False)


def test_a_sentinel_the_restored_snapshot_holds_is_expected_back_and_its_absence_fails_the_drill(sentinel):
    journal = drill_journal()
    check_sentinel(None, journal, SCENARIO, sentinel, in_restored_snapshot=lambda path: path == sentinel.file)
    (step,) = journal.record.steps
    assert step.status == "completed" and step.detail["file_expected"] == "the restored snapshot holds it"
    Path(sentinel.file).unlink()
    with pytest.raises(DrillFailed, match="sentinel file lost"):
        check_sentinel(None, drill_journal(), SCENARIO, sentinel, in_restored_snapshot=lambda path: True)


@pytest.mark.usefixtures("prefect_server")
def test_whether_the_restored_snapshot_holds_the_sentinel_comes_from_its_listing(tmp_path, lifeline_home):
    recordings = make_recordings(tmp_path / "srv" / "recordings")
    write_password(tmp_path / "plan" / "restic.pw")
    plan_path = write_plan(tmp_path / "plan", files_plan(tmp_path / "plan", recordings))
    backed_up = (recordings / "drill-sentinel-before.wav")
    backed_up.write_text("in the snapshot")
    (snapshot,) = ledger().run(backup_flow(str(plan_path))).snapshots
    written_after = recordings / "drill-sentinel-after.wav"
    written_after.write_text("after the snapshot")
    plan, settings = load_plan(plan_path).plan, load_settings()

    assert restored_snapshot_holds(plan, settings, SCENARIO, [snapshot], str(backed_up)) is True
    assert restored_snapshot_holds(plan, settings, SCENARIO, [snapshot], str(written_after)) is False
    assert restored_snapshot_holds(plan, settings, SCENARIO, [], str(backed_up)) is None  # nothing restored


def test_a_listing_that_fails_fails_the_verify_sentinel_step_naming_why(sentinel):
    def unreachable(path: str) -> bool:
        raise LifelineError("restic ls on repository 'local' failed: unable to open repository")

    journal = drill_journal()
    with pytest.raises(LifelineError, match="unable to open repository"):
        check_sentinel(None, journal, SCENARIO, sentinel, in_restored_snapshot=unreachable)
    (step,) = journal.record.steps
    assert (step.name, step.status) == ("verify sentinel", "failed")
    assert "unable to open repository" in step.detail["error"]
