"""Repository slots are Prefect global concurrency limits: 20 datasets over 4 repositories in one backup run
stay within each repository's `concurrency`, and forget, prune and check hold their repository alone.
Proven from the run record: every step that used a repository says when it held its slots."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from lifeline.configs.loading import load_plan
from lifeline.flows.backup import backup_flow
from lifeline.tasks.steps.repositories import open_repository
from lifeline.tasks.steps.repository_slots import limit_name

from tests.helpers import ledger, most_at_once, run_cli, write_password, write_plan

pytestmark = pytest.mark.usefixtures("prefect_server", "lifeline_home")

SLOTS = 2


def test_twenty_datasets_over_four_repositories_stay_within_their_limits(tmp_path):
    write_password(tmp_path / "restic.pw")
    datasets = {}
    for number in range(20):
        folder = tmp_path / "data" / f"d{number:02d}"
        folder.mkdir(parents=True)
        (folder / "calls.csv").write_bytes(bytes(range(256)) * 400 * (number + 1))
        datasets[f"d{number:02d}"] = {"repository": f"r{number % 4}", "paths": [str(folder)], "retention": {"last": 2}}
    plan_path = write_plan(tmp_path, {
        "name": "limits", "timezone": "UTC",
        "repositories": {f"r{index}": {"url": f"./repo{index}", "password_file": "./restic.pw", "init": True,
                                       "concurrency": SLOTS} for index in range(4)},
        "datasets": datasets,
    })

    record = ledger().run(backup_flow(str(plan_path)))

    assert record.status == "completed", record.error
    plan = load_plan(plan_path).plan
    from prefect.client.orchestration import get_client

    reached = 0
    for repository in plan.repositories:
        names = [name for name, dataset in plan.datasets.items() if dataset.repository == repository]
        held = {step.name: (datetime.fromisoformat(step.detail["held_from"]),
                            datetime.fromisoformat(step.detail["held_until"]))
                for step in record.steps
                if step.name in {f"backup {name}" for name in names} | {f"retention {name}" for name in names}
                | {f"prune {repository}", f"check {repository}"}}
        assert len(held) == 2 * len(names) + 2, sorted(held)
        shared = [span for name, span in held.items() if name.startswith("backup ")]
        alone = {name: span for name, span in held.items() if not name.startswith("backup ")}
        assert most_at_once(shared) <= SLOTS
        reached = max(reached, most_at_once(shared))
        for name, (start, end) in alone.items():
            others = [span for other, span in held.items() if other != name]
            assert all(other_end <= start or other_start >= end for other_start, other_end in others), name
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(
                limit_name(open_repository(plan, repository, _settings())))
        assert (limit.limit, limit.active_slots) == (SLOTS, 0)  # the plan's size; nothing left held
    assert reached == SLOTS  # the runs did share a repository up to its limit


def _settings():
    from lifeline.configs.settings import load_settings

    return load_settings()


def test_two_machines_backing_up_into_a_missing_repository_create_it_once(tmp_path):
    """Two processes with homes of their own (two machines: no shared file lock) back up two datasets into one
    repository that does not exist yet, at the same moment: one creates it, both snapshots are in it, and it
    checks clean. Two `restic init`s would leave two configs and keys: nothing in it readable."""
    password = tmp_path / "restic.pw"
    write_password(password)
    datasets = {}
    for name in ("calls", "recordings"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "part.bin").write_bytes(name.encode() * 100_000)
        datasets[name] = {"repository": "shared", "paths": [str(tmp_path / "data" / name)]}
    plan_path = write_plan(tmp_path, {
        "name": "two-machines", "timezone": "UTC", "datasets": datasets,
        "repositories": {"shared": {"url": str(tmp_path / "repo"), "password_file": str(password), "init": True}},
    })

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda name: run_cli("backup", "--plan", str(plan_path), "--dataset", name,
                                                  env={"LIFELINE_HOME": str(tmp_path / f"machine-{name}")}),
                             datasets))

    assert [run.returncode for run in runs] == [0, 0], [run.stderr[-2000:] for run in runs]
    restic = ["restic", "-r", str(tmp_path / "repo"), "--password-file", str(password), "--no-cache"]
    listed = subprocess.run([*restic, "snapshots", "--json"], capture_output=True, text=True, check=True)
    assert sorted(path for snapshot in json.loads(listed.stdout) for path in snapshot["paths"]) == \
        sorted(str(tmp_path / "data" / name) for name in datasets)
    assert len(list((tmp_path / "repo" / "keys").iterdir())) == 1  # created once
    assert subprocess.run([*restic, "check"], capture_output=True).returncode == 0
