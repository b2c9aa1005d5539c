"""Backup and restore flows end to end, with real restic, a real Prefect server and the ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from lifeline.configs.loading import load_plan
from lifeline.configs.settings import load_settings
from lifeline.flows.backup import backup_flow
from lifeline.flows.restore import restore_flow
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.restic import ResticRepository
from lifeline.tasks.steps.preflight import assess_readiness
from lifeline.tasks.steps.repositories import open_repository

from tests.helpers import (
    files_plan,
    ledger,
    make_recordings,
    run_cli,
    step_named,
    tree,
    write_password,
    write_plan,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def files_setup(tmp_path, lifeline_home):
    recordings = make_recordings(tmp_path / "srv" / "recordings")
    password = write_password(tmp_path / "plan" / "restic.pw")
    plan = write_plan(tmp_path / "plan", files_plan(tmp_path / "plan", recordings))
    return plan, recordings, password


def test_backup_then_verified_restore_gives_back_every_file(files_setup, tmp_path):
    plan, recordings, _ = files_setup
    backup_id = backup_flow(str(plan))
    record = ledger().run(backup_id)
    assert record.status == "completed"
    assert len(record.snapshots) == 1
    steps = {step.name: step for step in record.steps}
    assert {"prepare local", "backup recordings", "retention recordings", "prune local", "check local"} <= set(steps)
    assert steps["backup recordings"].detail["files"] == 4
    assert record.rpo_seconds is None  # no earlier snapshot to measure against

    target = tmp_path / "restored"
    restore_id = restore_flow(str(plan), "recordings", str(target))
    restored = ledger().run(restore_id)
    assert restored.status == "completed"
    assert restored.snapshots == record.snapshots
    assert tree(target) == tree(recordings)
    assert restored.rto_seconds is not None and restored.rpo_seconds >= 0
    assert not list(tmp_path.glob(".restored.lifeline-staging-*"))


def test_prune_and_check_run_when_due_and_maintain_runs_them_now(files_setup):
    plan, _, _ = files_setup

    def maintenance(record_id: str) -> dict[str, tuple[str, str | None]]:
        steps = ledger().run(record_id).steps
        return {step.name: (step.status, step.detail.get("reason")) for step in steps
                if step.name in ("prune local", "check local", "retention recordings")}

    first = maintenance(backup_flow(str(plan)))
    soon_after = maintenance(backup_flow(str(plan)))
    maintained = maintenance(backup_flow(str(plan), maintain=True))

    assert first == maintained == {name: ("completed", None)
                                   for name in ("prune local", "check local", "retention recordings")}
    assert soon_after["retention recordings"] == ("completed", None)  # the policy applies every run
    for name in ("prune local", "check local"):
        status, reason = soon_after[name]
        assert status == "skipped" and "due every 12 h" in reason and "--maintain" in reason


def test_a_held_repository_keeps_every_snapshot_until_the_hold_is_released(files_setup):
    """A data-leak recovery's evidence: retention (`last: 3`) and prune leave a held repository alone, say so in
    the backup's record, and do not count as done; released, the next backup keeps what the policy says."""
    plan, recordings, _ = files_setup
    repository = open_repository(load_plan(plan).plan, "local", load_settings())

    def snapshot_count() -> int:
        return len(repository.snapshots())

    held = run_cli("hold", "place", "local", "--plan", str(plan), "--operator", "Ana Duty",
                   "--reason", "main suspected compromised; keep the evidence")
    assert held.returncode == 0, held.stderr
    listed = json.loads(run_cli("hold", "list", "--json").stdout)
    assert [(hold["name"], hold["operator"]) for hold in listed] == [("local", "Ana Duty")]

    for number in range(5):
        (recordings / f"call {number}.wav").write_bytes(b"x" * (100 + number))
        record = ledger().run(backup_flow(str(plan)))  # prune is due every time: a held one was not done
        assert record.status == "completed", record.error
        for name in ("retention recordings", "prune local"):
            step = step_named(record, name)
            assert step.status == "skipped" and "local is held by operator Ana Duty" in step.detail["reason"]
        if number == 0:
            assert step_named(record, "check local").status == "completed"  # reading it is allowed
    assert snapshot_count() == 5  # retention would keep 3

    released = run_cli("hold", "release", "local", "--plan", str(plan))
    assert released.returncode == 0 and "released" in released.stderr, released.stderr
    assert json.loads(run_cli("hold", "list", "--json").stdout) == []
    after = ledger().run(backup_flow(str(plan)))
    assert step_named(after, "retention recordings").status == "completed"
    assert step_named(after, "prune local").status == "completed"
    assert snapshot_count() == 3


def test_second_backup_measures_rpo_as_time_since_previous_snapshot(files_setup):
    plan, recordings, _ = files_setup
    first = ledger().run(backup_flow(str(plan)))
    (recordings / "new call.wav").write_bytes(b"x" * 1000)
    second = ledger().run(backup_flow(str(plan)))
    step = next(s for s in second.steps if s.name == "backup recordings")
    assert second.rpo_seconds == pytest.approx(step.detail["rpo_seconds"])
    assert 0 < second.rpo_seconds < (second.ended_at - first.started_at).total_seconds()
    assert second.met_targets is True
    assert second.snapshots != first.snapshots


def test_preflight_trusts_the_ledger_only_while_the_repository_still_holds_the_snapshot(files_setup):
    plan_path, _, _ = files_setup
    backup_flow(str(plan_path))
    plan, settings = load_plan(plan_path).plan, load_settings()

    def recordings_backup() -> tuple[bool, str]:
        [item] = [item for item in assess_readiness(plan, settings, "dr").items if item.name == "backup recordings"]
        return item.ready, item.detail

    ready, detail = recordings_backup()
    assert ready and "snapshot file present" in detail, detail
    # The snapshot is forgotten (by hand, a prune, an attacker): the ledger still lists it, the repository not.
    [facts] = ledger().snapshots_recorded(plan.name, "recordings")
    open_repository(plan, "local", settings).forget_snapshots([facts.snapshot_id])
    ready, detail = recordings_backup()
    assert not ready and "no snapshot yet" in detail, detail


def test_restore_over_existing_data_is_refused_without_replace(files_setup, tmp_path):
    plan, recordings, _ = files_setup
    backup_flow(str(plan))
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "today.wav").write_bytes(b"today's calls")
    with pytest.raises(Exception, match="already holds data"):
        restore_flow(str(plan), "recordings", str(target))
    assert tree(target) == {"today.wav": b"today's calls"}

    restore_flow(str(plan), "recordings", str(target), replace=True)
    assert tree(target) == tree(recordings)
    aside = list(tmp_path.glob("occupied.replaced-*"))
    assert len(aside) == 1 and tree(aside[0]) == {"today.wav": b"today's calls"}


def test_restore_as_of_picks_the_newest_snapshot_at_or_before_that_time(files_setup, tmp_path):
    plan, recordings, _ = files_setup
    first = ledger().run(backup_flow(str(plan)))
    (recordings / "later.wav").write_bytes(b"later")
    backup_flow(str(plan))
    target = tmp_path / "as-of"
    restored = ledger().run(restore_flow(str(plan), "recordings", str(target), as_of=first.ended_at))
    assert restored.snapshots == first.snapshots
    assert not (target / "later.wav").exists()


def test_failing_producer_fails_the_dataset_and_leaves_no_snapshot(tmp_path, lifeline_home):
    write_password(tmp_path / "plan" / "restic.pw")
    plan = write_plan(
        tmp_path / "plan",
        {
            "name": "producer-test",
            "repositories": {"local": {"url": "./repo", "password_file": "./restic.pw", "init": True}},
            "datasets": {
                "ivr-config": {
                    "repository": "local",
                    "command": [sys.executable, "-c", "import sys; sys.stdout.write('x' * 100000); sys.exit(3)"],
                    "stdin_filename": "ivr.tar",
                }
            },
        },
    )
    result = run_cli("backup", "--plan", str(plan), "--json")
    assert result.returncode == 1, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    failed = next(s for s in record["steps"] if s["name"] == "backup ivr-config")
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert "Traceback" not in result.stderr
    listing = run_cli("snapshots", "--plan", str(plan), "--json")
    assert json.loads(listing.stdout) == []


def test_wrong_password_is_bad_input_and_the_password_appears_nowhere(files_setup, tmp_path):
    plan, _, password = files_setup
    first = run_cli("backup", "--plan", str(plan), "--json")
    assert first.returncode == 0, first.stderr
    (tmp_path / "plan" / "restic.pw").write_text("wrong-" + password)
    result = run_cli("backup", "--plan", str(plan), "--json")
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "password" in message.lower() and "local" in message
    assert "Traceback" not in result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    everything = first.stdout + first.stderr + result.stdout + result.stderr
    everything += json.dumps([r.model_dump(mode="json") for r in ledger().runs()])
    everything += (Path(load_settings().ledger.removeprefix("sqlite:///"))).read_bytes().decode("latin-1")
    assert password not in everything


def test_missing_repository_without_init_is_refused_with_its_name(files_setup, tmp_path):
    plan, recordings, _ = files_setup
    document = files_plan(tmp_path / "plan", recordings)
    document["repositories"]["local"]["init"] = False
    write_plan(tmp_path / "plan", document)
    result = run_cli("backup", "--plan", str(plan))
    assert result.returncode == 2
    assert "local" in result.stderr and "init" in result.stderr
    assert not (tmp_path / "plan" / "repo").exists()


def test_runs_lists_records_newest_first_as_one_json_array(files_setup):
    plan, _, _ = files_setup
    backup_flow(str(plan))
    result = run_cli("runs", "--plan", str(plan), "--json", "--kind", "backup")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert isinstance(records, list) and records[0]["kind"] == "backup" and records[0]["status"] == "completed"


def test_restore_from_a_corrupted_repository_fails_and_leaves_the_target_untouched(files_setup, tmp_path):
    plan, _, _ = files_setup
    backup_flow(str(plan))
    for pack in (tmp_path / "plan" / "repo" / "data").rglob("*"):
        if pack.is_file():
            pack.chmod(0o644)
            data = bytearray(pack.read_bytes())
            data[len(data) // 2] ^= 0xFF
            pack.write_bytes(bytes(data))
    target = tmp_path / "untouched"
    target.mkdir()
    with pytest.raises(LifelineError):
        restore_flow(str(plan), "recordings", str(target))
    assert list(target.iterdir()) == []
    assert not list(tmp_path.glob(".untouched.lifeline-staging-*"))
    failed = ledger().runs(kind="restore")[0]
    assert failed.status == "failed"
    assert any(step.status == "failed" for step in failed.steps)


def test_a_snapshot_forgotten_between_choice_and_restore_is_chosen_again(files_setup, tmp_path, monkeypatch):
    """The nightly backup's retention may forget "latest" while a restore is about to read it."""
    plan, recordings, _ = files_setup
    older = ledger().run(backup_flow(str(plan)))
    (recordings / "later.wav").write_bytes(b"later")
    newer = ledger().run(backup_flow(str(plan)))
    restore = ResticRepository.restore

    def forgotten_first(repository, snapshot_id, *args, **kwargs):
        if snapshot_id == newer.snapshots[0]:
            repository.forget_snapshots([snapshot_id])  # the real restic, as a concurrent retention would
        return restore(repository, snapshot_id, *args, **kwargs)

    monkeypatch.setattr(ResticRepository, "restore", forgotten_first)
    target = tmp_path / "restored"
    restored = ledger().run(restore_flow(str(plan), "recordings", str(target)))
    assert restored.status == "completed"
    assert restored.snapshots == older.snapshots
    assert [step.name for step in restored.steps if step.name.startswith("choose snapshot")] == [
        "choose snapshot", "choose snapshot again"]
    assert tree(target) == {name: data for name, data in tree(recordings).items() if name != "later.wav"}
    assert not list(tmp_path.glob(".restored.lifeline-staging-*"))


def test_a_named_snapshot_that_is_gone_is_a_clear_error_not_another_snapshot(files_setup, tmp_path, monkeypatch):
    plan, _, _ = files_setup
    chosen = ledger().run(backup_flow(str(plan))).snapshots[0]
    restore = ResticRepository.restore

    def forgotten_first(repository, snapshot_id, *args, **kwargs):
        repository.forget_snapshots([snapshot_id])
        return restore(repository, snapshot_id, *args, **kwargs)

    monkeypatch.setattr(ResticRepository, "restore", forgotten_first)
    target = tmp_path / "restored"
    with pytest.raises(LifelineError, match=f"{chosen[:8]}.*forgotten since it was chosen"):
        restore_flow(str(plan), "recordings", str(target), snapshot=chosen[:8])
    assert not target.exists()
    assert not list(tmp_path.glob(".restored.lifeline-staging-*"))
