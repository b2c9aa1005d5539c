"""Bad input: 1,000 malformed plans and every out-of-range option give exit 2 and one named complaint, no traceback.

`lifeline validate` is called in-process through `lifeline.flows.cli.main` (what the console script runs), with
sys.argv set and stdout/stderr captured; one real subprocess proves both paths print the same.
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import sys
import time
import typing
from pathlib import Path

import pytest
import typer.main
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lifeline.flows.cli import app, main

from tests.helpers import files_plan, run_cli, write_password, write_plan

EXAMPLES = 1000
TRIED: list[str] = []  # one entry per example actually run: its kind of breakage


def run_in_process(*arguments: str) -> tuple[int, str, str]:
    """What `lifeline ARGUMENTS` does, in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["lifeline", *arguments]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def base_document(directory: Path) -> dict:
    """A valid plan of the kind tests/helpers.py builds, with the numbers, retention and schedules to break."""
    return {
        "name": "cc",
        "timezone": "UTC",
        "targets": {"rto_minutes": 15, "rpo_minutes": 5},
        "repositories": {"local": {"url": "./repo", "password_file": "./pw", "init": True, "concurrency": 2}},
        "datasets": {"recordings": {"repository": "local", "paths": [str(directory / "recordings")],
                                    "retention": {"last": 3}, "rpo_minutes": 1500, "copy_to": []}},
        "checks": {"read_data_subset": "10%", "every_hours": 12},
        "schedules": {"backup": "0 2 * * *"},
    }


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("bad-input")
    write_password(directory / "pw")
    (directory / "recordings").mkdir()
    return directory


def test_the_base_plan_is_valid_so_each_failure_is_the_mutation(plan_dir):
    path = plan_dir / "base.yaml"
    path.write_text(yaml.safe_dump(base_document(plan_dir)))
    code, out, err = run_in_process("validate", "--plan", str(path))
    assert (code, err) == (0, "") and "valid" in out


def _set(document: dict, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        document = document[part]
    document[last] = value


def _delete(document: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        document = document[part]
    del document[last]


LEAVES = ["name", "timezone", "targets.rto_minutes", "targets.rpo_minutes", "repositories.local.url",
          "repositories.local.password_file", "repositories.local.init", "repositories.local.concurrency",
          "datasets.recordings.repository", "datasets.recordings.paths", "datasets.recordings.retention",
          "datasets.recordings.retention.last", "datasets.recordings.rpo_minutes", "datasets.recordings.copy_to",
          "checks.read_data_subset", "checks.every_hours", "schedules.backup", "targets", "checks", "datasets",
          "repositories", "schedules", "repositories.local", "datasets.recordings"]
MODELS = ["", "targets", "repositories.local", "datasets.recordings", "datasets.recordings.retention", "checks",
          "schedules"]
REQUIRED = ["name", "repositories.local.url", "repositories.local.password_file", "datasets.recordings.repository"]
# (field, a value out of its range): strategies that never draw an allowed value.
OUT_OF_RANGE = {
    "repositories.local.concurrency": st.one_of(st.integers(max_value=0), st.integers(min_value=65)),
    "targets.rto_minutes": st.one_of(st.integers(max_value=0), st.floats(max_value=0, allow_nan=False)),
    "checks.every_hours": st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-9, allow_nan=False)),
    "repositories.local.prune_every_hours": st.integers(max_value=-1),
    "datasets.recordings.rpo_minutes": st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=True),
    "datasets.recordings.retention.last": st.one_of(st.integers(max_value=0), st.integers(min_value=2**64)),
    "datasets.recordings.rto_minutes": st.integers(max_value=0),
}
BAD_CRON = st.one_of(st.sampled_from(["61 * * * *", "* * *", "0 25 * * *", "every night", "0 2 * * * * * *", ""]),
                     st.from_regex(r"\A[a-z]{1,12}\Z"))
UNICODE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40)
WRONG_TYPE = st.one_of(st.just([[1]]), st.builds(lambda key: {key: [[1]]}, UNICODE), st.just([{"a": [[1]]}]))


@st.composite
def broken_plans(draw, directory: Path) -> tuple[str, str, str]:
    """(kind, the plan file's text, what the complaint must name: a dotted field, `line`, or `mapping`)."""
    document = base_document(directory)
    kind = draw(st.sampled_from(["wrong type", "deleted", "unknown key", "dangling", "out of range", "schedule",
                                 "yaml syntax", "not a mapping", "bad name", "control character"]))
    if kind == "wrong type":
        field = draw(st.sampled_from(LEAVES))
        _set(document, field, draw(WRONG_TYPE))
    elif kind == "deleted":
        field = draw(st.sampled_from(REQUIRED))
        _delete(document, field)
    elif kind == "unknown key":
        parent = draw(st.sampled_from(MODELS))
        key = "x-" + draw(UNICODE.filter(lambda text: ":" not in text and "." not in text))
        target = document
        for part in filter(None, parent.split(".")):
            target = target[part]
        target[key] = draw(st.one_of(st.integers(), UNICODE, st.none()))
        field = f"{parent}.{key}".lstrip(".")
    elif kind == "dangling":
        name = draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z").filter(lambda text: text != "local"))
        field = draw(st.sampled_from(["datasets.recordings.repository", "datasets.recordings.copy_to"]))
        _set(document, field, [name] if field.endswith("copy_to") else name)
    elif kind == "out of range":
        field = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        _set(document, field, draw(OUT_OF_RANGE[field]))
    elif kind == "schedule":
        field = "schedules." + draw(st.sampled_from(["backup", "verify", "drill"]))
        _set(document, field, draw(BAD_CRON))
    elif kind == "bad name":  # a name that is not a Name: unicode, spaces, shell characters, 10,000 characters
        field = draw(st.sampled_from(["name", "datasets.recordings.site"]))
        _set(document, field, draw(st.one_of(UNICODE.map(lambda text: "$(" + text), st.just("x" * 10_000),
                                             st.just("a; rm -rf /"), st.just("`id`"), st.just("a\nb"))))
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    if kind == "yaml syntax":
        lines = text.splitlines(keepends=True)
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(["broken: [unclosed\n", "broken: {a: 1\n", "  - : ]\n: :\n[\n"])))
        return kind, "".join(lines), "line"
    if kind == "control character":  # the YAML reader refuses these: the complaint still names the line
        lines = text.splitlines(keepends=True)
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] = lines[at].rstrip("\n") + draw(st.sampled_from(["\x00", "\x07", "\x1b[31m", "\ufffe"])) + "\n"
        return kind, "".join(lines), "line"
    if kind == "not a mapping":
        value = draw(st.one_of(st.lists(UNICODE, max_size=3), st.integers(), st.none(), UNICODE))
        return kind, yaml.safe_dump(value, allow_unicode=True), "mapping"
    return kind, text, field


@pytest.mark.xdist_group("malformed-plans")  # with the count below, on one worker
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_a_thousand_malformed_plans_exit_2_naming_a_field(plan_dir, data):
    kind, text, named = data.draw(broken_plans(plan_dir))
    path = plan_dir / "plan.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    TRIED.append(kind)
    code, out, err = run_in_process("validate", "--plan", str(path))
    assert code == 2 and out == "", (kind, text[:300], out, err)
    assert "Traceback" not in err and "validation error" not in err and "errors.pydantic.dev" not in err, err
    prefix = f"{path}: "
    lines = err.splitlines()
    assert lines and all(line.startswith(prefix) for line in lines), err
    problems = [line.removeprefix(prefix) for line in lines]
    if named == "line":
        assert any(problem.startswith("line ") for problem in problems), (kind, err)
    elif named == "mapping":
        assert problems == ["the plan must be a YAML mapping"], err
    else:  # the field itself, one inside it (an item of a list), or the entry that holds it
        assert any(problem.startswith(f"{named}: ") or problem.startswith(f"{named}.")
                   or (named.startswith(problem.split(": ", 1)[0] + ".") and problem.split(": ", 1)[0])
                   for problem in problems), (kind, named, err)


@pytest.mark.xdist_group("malformed-plans")
def test_the_examples_were_all_tried():
    """Runs after the property (file order): how many plans were tried, by kind (the count the README quotes)."""
    counts = {kind: TRIED.count(kind) for kind in sorted(set(TRIED))}
    print(f"\n{len(TRIED)} malformed plans tried: {counts}")
    assert len(TRIED) >= EXAMPLES and len(counts) == 10


def test_in_process_and_the_console_script_say_the_same(plan_dir):
    document = base_document(plan_dir)
    document["datasets"]["recordings"]["repository"] = "nowhere"
    document["checks"]["every_hours"] = -1
    path = plan_dir / "same.yaml"
    path.write_text(yaml.safe_dump(document))
    real = run_cli("validate", "--plan", str(path))
    assert (real.returncode, real.stdout, real.stderr) == run_in_process("validate", "--plan", str(path))
    assert real.returncode == 2 and "datasets.recordings.repository: no repository named 'nowhere'" in real.stderr


# -- out-of-range options, for every command the app has -------------------------------------------------------

ALREADY_COVERED = {("runs", "--last"), ("runs", "--kind"), ("serve", "--query-seconds")}  # tests/test_cli_arguments.py


def _commands(group, prefix: tuple[str, ...] = ()):
    """Every command under the app, sub-commands included (typer carries its own click: duck-typed)."""
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def _out_of_range(parameter) -> str | None:
    """A value the option must refuse: below its minimum, above its maximum, not one of its choices, not a number."""
    annotation = parameter.type_descriptor.annotation
    kinds = [kind for kind in (typing.get_args(annotation) or (annotation,)) if kind is not type(None)]
    if typing.get_origin(annotation) is typing.Literal or any(isinstance(kind, type) and issubclass(kind, enum.Enum)
                                                             for kind in kinds):
        return "not-one-of-them"
    if not any(kind in (int, float) for kind in kinds):
        return None
    if parameter.min is not None:
        return str(parameter.min - 1)
    if parameter.max is not None:
        return str(parameter.max + 1)
    return "many"


def out_of_range_cases():
    cases = []
    for path, command in _commands(typer.main.get_command(app)):
        for parameter in command.params:
            if type(parameter).__name__ not in ("Option", "TyperOption") or getattr(parameter, "is_flag", False):
                continue
            value = _out_of_range(parameter)
            option = max(parameter.opts, key=len)
            if value is not None and (" ".join(path), option) not in ALREADY_COVERED:
                cases.append(pytest.param(path, option, value, id=f"{' '.join(path)} {option}={value}"))
    return cases


CASES = out_of_range_cases()


def test_the_app_has_options_to_check():
    commands = {case.values[0] for case in CASES}
    print(f"\n{len(CASES)} out-of-range options over {len(commands)} commands")
    assert len(CASES) >= 5


@pytest.mark.parametrize("command, option, value", CASES)
def test_an_out_of_range_option_is_one_line_exit_2_and_touches_nothing(tmp_path, monkeypatch, command, option, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIFELINE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIFELINE_PLAN", raising=False)
    started = time.monotonic()
    code, out, err = run_in_process(*command, option, value)
    assert (code, out) == (2, ""), err
    [line] = err.splitlines()
    assert line.startswith("lifeline: ") and option in line and "Traceback" not in err
    assert os.listdir(tmp_path) == [] and time.monotonic() - started < 10


# Options checked by Lifeline itself (times, formats): typer sees only a string, so they are listed here.
CHECKED_STRINGS = [
    (("report",), "--format", "pdf"),
    (("failover",), "--incident-at", "last tuesday"),
    (("failover",), "--incident-at", "2999-01-01T00:00:00+00:00"),
    (("restore", "recordings", "--target", "out"), "--to-time", "soon"),
    (("restore", "recordings", "--target", "out"), "--as-of", "9999-12-31T23:59:59+00:00"),
]


@pytest.mark.parametrize("command, option, value", CHECKED_STRINGS, ids=lambda part: " ".join(part)
                         if isinstance(part, tuple) else part)
def test_a_time_or_format_that_cannot_be_meant_is_one_line_exit_2(plan_dir, tmp_path, monkeypatch, command, option,
                                                                  value):
    path = plan_dir / "valid.yaml"
    path.write_text(yaml.safe_dump(base_document(plan_dir)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIFELINE_HOME", str(tmp_path / "home"))
    code, out, err = run_in_process(*command, option, value, "--plan", str(path))
    assert (code, out) == (2, ""), err
    [line] = err.splitlines()
    assert line.startswith("lifeline: ") and option in line and "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("field", ["repositories.local.password_file", "datasets.crm.postgres.passfile"])
def test_a_missing_secret_file_is_exit_2_naming_the_file_and_the_field(plan_dir, field):
    document = base_document(plan_dir)
    document["datasets"]["crm"] = {"repository": "local", "postgres": {"dsn": "postgresql://u@127.0.0.1/crm",
                                                                      "passfile": "./pgpass"}}
    (plan_dir / "pgpass").write_text("*:*:*:*:x\n")
    (plan_dir / "pgpass").chmod(0o600)
    _set(document, field, str(plan_dir / "missing-secret"))
    path = plan_dir / "secrets.yaml"
    path.write_text(yaml.safe_dump(document))
    code, out, err = run_in_process("validate", "--plan", str(path))
    assert (code, out, err) == (2, "", f"{path}: {field}: file not found: {plan_dir / 'missing-secret'}\n")


HOSTILE = ["$(touch {marker})", "; touch {marker}", "`touch {marker}`", "a'b\"c", "line\nSubject: injected",
           "x" * 10_000, "<script>alert(1)</script>"]


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("section", ["repositories", "datasets"])
def test_a_hostile_name_is_refused_in_one_line_naming_its_section(plan_dir, tmp_path, section, hostile):
    marker = tmp_path / "pwned"
    name = hostile.format(marker=marker)
    document = base_document(plan_dir)
    document[section][name] = document[section].pop("local" if section == "repositories" else "recordings")
    if section == "repositories":
        document["datasets"]["recordings"]["repository"] = name
    path = plan_dir / "hostile.yaml"
    path.write_text(yaml.safe_dump(document))
    code, out, err = run_in_process("validate", "--plan", str(path))
    assert (code, out) == (2, "") and "Traceback" not in err
    [line] = err.splitlines()  # a newline in the name does not start a second, forged line
    assert line.startswith(f"{path}: {section}.") and not marker.exists()


def test_a_secret_file_others_may_read_is_a_warning_naming_it_and_the_plan_still_validates(tmp_path: Path) -> None:
    password = tmp_path / "restic.pw"
    write_password(password)
    (tmp_path / "recordings").mkdir()
    plan = write_plan(tmp_path, files_plan(tmp_path, tmp_path / "recordings"))
    quiet = run_cli("validate", "--plan", str(plan))
    assert (quiet.returncode, quiet.stderr) == (0, "")
    password.chmod(0o644)
    warned = run_cli("validate", "--plan", str(plan))
    assert warned.returncode == 0 and "Traceback" not in warned.stderr
    [line] = warned.stderr.splitlines()
    assert line == (f"lifeline: warning: {plan}: repositories.local.password_file: {password} is open to others "
                    "(mode 0644): chmod 600 it")
