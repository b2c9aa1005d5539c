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
    # References and files are checked in the same pass, among the entries whose types are right:
    assert "datasets.crm.repository: no repository named 'nowhere'" in found
    assert any(p.startswith("repositories.local.password_file: file not found") for p in found)
    # and once the types are right, every reference is:
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


def test_a_wrong_type_and_a_dangling_reference_come_out_in_one_run(plan_dir):
    document = valid_document()
    document["targets"] = {"rto_minutes": "soon"}
    document["datasets"]["recordings"]["repository"] = "nowhere"
    result = run_cli("validate", "--plan", str(write_plan(plan_dir, document)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line.split(": ", 1)[1] for line in result.stderr.strip().splitlines()]
    assert len(lines) == 2
    assert lines[0].startswith("targets.rto_minutes: ")
    assert lines[1] == "datasets.recordings.repository: no repository named 'nowhere'"


def test_a_reference_to_an_entry_with_a_wrong_type_does_not_dangle(plan_dir):
    document = valid_document()
    document["repositories"]["local"]["init"] = "sometimes"
    assert problems(plan_dir, document) == ["repositories.local.init: Input should be a valid boolean, unable to interpret input"]


def test_runbook_steps_and_scenarios_name_what_the_plan_defines(plan_dir):
    document = valid_document()
    document["sites"] = {"main": {}, "dr": {}}
    document["recovery"] = {"failover": [{"name": "switch", "steps": [
        {"type": "postgres_promote", "database": "crm", "site": "dr"},
        {"type": "ssh", "host": "app-dr", "command": ["true"]},
        {"type": "restore", "dataset": "recordings", "target": "/srv/recordings"},
        {"type": "dns_switch", "to": "moon"},
    ]}]}
    document["scenarios"] = {"crash": {
        "description": "main goes down", "fault": {"instructions": "pull the plug", "probe_site": "main"},
        "recovery": {"restore": {"dataset": "voicemail"}}, "sentinel": {"database": "crm"},
    }}
    steps = "recovery.failover.0.steps"
    assert problems(plan_dir, document) == [
        f"{steps}.0.database: no database named 'crm'",
        f"{steps}.1.host: no host named 'app-dr'",
        f"{steps}.3.to: no site named 'moon'",
        "scenarios.crash.recovery.restore.dataset: no dataset named 'voicemail'",
        "scenarios.crash.sentinel.database: no database named 'crm'",
    ]


@pytest.mark.parametrize("expression", ["99 99 99 99 99", "0 2 * *", "every night"])
def test_a_schedule_prefect_cannot_parse_is_refused_naming_its_field(plan_dir, expression):
    document = valid_document()
    document["schedules"] = {"backup": expression, "drill": "30 3 * * mon"}
    assert problems(plan_dir, document) == [f"schedules.backup: not a cron expression: {expression!r}"]


def test_validate_refuses_a_bad_schedule_in_one_line(plan_dir):
    document = valid_document()
    document["schedules"] = {"verify": "99 99 99 99 99"}
    result = run_cli("validate", "--plan", str(write_plan(plan_dir, document)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"{plan_dir / 'plan.yaml'}: schedules.verify: not a cron expression: '99 99 99 99 99'"]


def test_no_plan_at_all_is_bad_input():
    result = run_cli("backup")
    assert result.returncode == 2 and "LIFELINE_PLAN" in result.stderr


def test_a_plan_for_a_network_namespace_runs_only_inside_it(plan_dir, tmp_path, monkeypatch):
    from lifeline.configs import loading

    namespaces = tmp_path / "netns"
    namespaces.mkdir()
    monkeypatch.setattr(loading, "NAMED_NETWORK_NAMESPACES", namespaces)
    document = {**valid_document(), "network_namespace": "ops"}
    assert problems(plan_dir, document) == [
        "network_namespace: there is no network namespace 'ops' here (is the lab up?); "
        "run Lifeline inside it: ip netns exec ops lifeline ..."
    ]
    (namespaces / "ops").write_text("")  # some other namespace than this process's
    assert problems(plan_dir, document) == [
        "network_namespace: Lifeline runs outside network namespace 'ops': run Lifeline inside it: ip netns exec ops lifeline ..."
    ]
    (namespaces / "ops").unlink()
    (namespaces / "ops").symlink_to("/proc/self/ns/net")  # what `ip netns exec ops` makes of this process
    assert load_plan(write_plan(plan_dir, document)).plan.network_namespace == "ops"


def test_lifeline_outside_the_plans_network_namespace_says_where_to_run_it(plan_dir):
    document = {**valid_document(), "network_namespace": "lifeline-test-elsewhere"}
    result = run_cli("validate", "--plan", str(write_plan(plan_dir, document)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.endswith("ip netns exec lifeline-test-elsewhere lifeline ...")


def test_pitr_names_a_postgres_dataset_existing_credentials_and_folders_on_the_hosts(plan_dir):
    document = valid_document()
    document["sites"] = {"main": {}}
    document["hosts"] = {"db": {"site": "main", "address": "10.0.0.5", "user": "postgres", "key_file": "./key",
                                "known_hosts_file": "./known_hosts"}}
    instance = {"host": "db", "dsn": "postgresql://lifeline@10.0.0.5/crm", "data_dir": "/srv/pgdata"}
    document["databases"] = {"crm": {"primary": "main", "instances": {"main": instance}, "pitr": {
        "stanza": "crm", "dataset": "recordings", "work_dir": "/var/lib/lifeline/pgbackrest",
        "repositories": [{"path": "/backup/pgbackrest"},
                         {"s3": {"bucket": "cc-pitr", "credentials_file": "./aws.env"}}]}}}
    document["scenarios"] = {"bad-release": {
        "description": "a buggy UPDATE", "fault": {"instructions": "run the bad release"},
        "recovery": {"point_in_time": {"database": "billing", "tables": ["customers"], "check": "SELECT 0"}}}}
    assert problems(plan_dir, document) == [
        "databases.crm.pitr.dataset: dataset 'recordings' is not a postgres dataset",
        "databases.crm.pitr.repositories.1.s3.credentials_file: file not found: " + str(plan_dir / "aws.env"),
        "scenarios.bad-release.recovery.point_in_time.database: no database named 'billing' with a `pitr` section",
    ]
    document["databases"]["crm"]["pitr"]["repositories"] = [{"path": "backup", "s3": {"bucket": "cc-b",
                                                                                      "credentials_file": "./pw"}}]
    found = problems(plan_dir, document)
    assert "databases.crm.pitr.repositories.0: give one of path and s3" in found, found
