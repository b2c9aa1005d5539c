"""Out-of-range arguments: exit 2 and one line naming the option, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli, write_password, write_plan


@pytest.fixture
def plan(tmp_path) -> Path:
    write_password(tmp_path / "pw")
    (tmp_path / "recordings").mkdir()
    return write_plan(tmp_path, {
        "name": "cc",
        "repositories": {"local": {"url": "./repo", "password_file": "./pw", "init": True}},
        "datasets": {"recordings": {"repository": "local", "paths": [str(tmp_path / "recordings")]}},
    })


@pytest.mark.parametrize("arguments, complaint", [
    (["runs", "--last", "-5"], "lifeline: Invalid value for '--last': Input should be greater than or equal to 1"),
    (["runs", "--last", "0"], "lifeline: Invalid value for '--last': Input should be greater than or equal to 1"),
    (["runs", "--kind", "backups"], "lifeline: Invalid value for '--kind': 'backups' is not one of 'backup', 'restore', "
                                    "'failover', 'failback', 'verify', 'drill', 'alert'."),
    (["runs", "--last"], "lifeline: Option '--last' requires an argument."),
    (["snapshots", "--datasets", "x"], "lifeline: No such option: --datasets (Possible options: --dataset)"),
    (["serve", "--query-seconds", "0"], "lifeline: --query-seconds: must be more than 0, not 0.0"),
])
def test_an_argument_out_of_range_is_one_line_and_exit_2(arguments, complaint):
    result = run_cli(*arguments)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", complaint + "\n")


@pytest.mark.parametrize("arguments, complaint", [
    (["restore", "recordings", "--target", "{tmp}/out", "--as-of", "yesterday"],
     "lifeline: --as-of: not an ISO 8601 time: 'yesterday'"),
    (["restore", "recordings", "--target", "{tmp}/out", "--as-of", "2999-01-01T00:00:00+00:00"],
     "lifeline: --as-of: 2999-01-01T00:00:00+00:00 is in the future"),
    (["restore", "recordings", "--target", "{tmp}/out", "--incident-at", "2999-01-01"],
     "lifeline: --incident-at: 2999-01-01 is in the future"),
])
def test_a_time_that_cannot_be_meant_is_refused_before_the_run(plan, arguments, complaint):
    result = run_cli(*[argument.format(tmp=plan.parent) for argument in arguments], "--plan", str(plan))
    assert (result.returncode, result.stdout, result.stderr) == (2, "", complaint + "\n")
    assert not (plan.parent / "out").exists() and not (plan.parent / "repo").exists()
