"""The plan: every problem named by its field path; `lifeline validate` exits 2 on any."""

from __future__ import annotations

from pathlib import Path

import pytest
from lifeline.configs.loading import PlanInvalid, load_plan

from tests.helpers import run_cli, write_password, write_plan

EXAMPLE = Path(__file__).parent.parent / "configs" / "callcenter.yaml"


def valid_document() -> dict:
    return {
        "name": "cc",
        "repositories": {"local": {"url": "./repo", "password_file": "./pw", "init": True}},
        "datasets": {"recordings": {"repository": "local", "paths": ["/srv/recordings"]}},
    }


@pytest.fixture
def plan_dir(tmp_path) -> Path:
    write_password(tmp_path / "pw")
    return tmp_path


def problems(plan_dir: Path, document: dict) -> list[str]:
    with pytest.raises(PlanInvalid) as raised:
        load_plan(write_plan(plan_dir, document))
    return [str(problem) for problem in raised.value.problems]


def test_valid_plan_resolves_paths_relative_to_the_plan_file(plan_dir):
    loaded = load_plan(write_plan(plan_dir, valid_document()))
    assert loaded.plan.repositories["local"].url == str(plan_dir / "repo")
    assert loaded.plan.repositories["local"].password_file == plan_dir / "pw"
    assert len(loaded.sha256) == 64


def test_every_problem_is_reported_with_its_field_path(plan_dir):
    document = valid_document()
    document["datasets"]["recordings"]["retension"] = {"daily": 7}  # a typo
    document["datasets"]["recordings"]["copy_to"] = ["offsite"]
    document["datasets"]["crm"] = {"repository": "nowhere"}
    document["targets"] = {"rto_minutes": "soon"}
    document["repositories"]["local"]["password_file"] = "./missing.pw"
    found = problems(plan_dir, document)
    assert any(p.startswith("datasets.recordings.retension: unknown key") for p in found)
    assert any(p.startswith("targets.rto_minutes:") for p in found)
    # References and files are checked once the types are right:
    document["datasets"]["recordings"].pop("retension")
    document["targets"] = {"rto_minutes": 10}
    found = problems(plan_dir, document)
    assert "datasets.recordings.copy_to: no repository named 'offsite'" in found
    assert "datasets.crm.repository: no repository named 'nowhere'" in found
    assert "datasets.crm: no source: set one of paths, postgres or command" in found
    assert any(p.startswith("repositories.local.password_file: file not found") for p in found)


def test_a_password_in_a_dsn_is_refused(plan_dir):
    document = valid_document()
    document["datasets"]["recordings"] = {
        "repository": "local",
        "postgres": {"dsn": "postgresql://lifeline:hunter2@127.0.0.1/crm"},
    }
    found = problems(plan_dir, document)
    assert found == ["datasets.recordings.postgres.dsn: must not contain a password: put it in a passfile"]


def test_malformed_yaml_names_the_line(plan_dir):
    path = plan_dir / "broken.yaml"
    path.write_text("name: cc\nrepositories: {local: [\n")
    with pytest.raises(PlanInvalid) as raised:
        load_plan(path)
    assert "line" in str(raised.value.problems[0])


def test_the_example_plan_is_valid_once_its_secrets_exist(tmp_path):
    plan = tmp_path / "callcenter.yaml"
    plan.write_text(EXAMPLE.read_text())
    write_password(tmp_path / "secrets" / "restic.pw")
    (tmp_path / "secrets" / "aws.env").write_text("AWS_ACCESS_KEY_ID=x\n")
    (tmp_path / "secrets" / "pgpass").write_text("")
    loaded = load_plan(plan)
    assert set(loaded.plan.datasets) == {"recordings", "crm-db", "ivr-config"}


def test_validate_command_prints_each_problem_and_exits_2(plan_dir):
    document = valid_document()
    document["datasets"]["recordings"]["repository"] = "nowhere"
    document["surprise"] = 1
    result = run_cli("validate", "--plan", str(write_plan(plan_dir, document)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.endswith("surprise: unknown key") for line in lines)
    assert "Traceback" not in result.stderr and result.stdout == ""
    ok = run_cli("validate", "--plan", str(write_plan(plan_dir, valid_document())))
    assert ok.returncode == 0 and "valid" in ok.stdout


def test_no_plan_at_all_is_bad_input():
    result = run_cli("backup")
    assert result.returncode == 2 and "LIFELINE_PLAN" in result.stderr
