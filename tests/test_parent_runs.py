"""Runs started by another run (a drill's failback): the ledger keeps the link, `lifeline report` reports the
run a person started and names the runs it started."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

import pytest
from lifeline.tasks.report.after_action import render_html, render_markdown
from lifeline.tasks.run.ledger import Ledger

from tests.helpers import run_cli, write_password, write_plan
from tests.report_records import PLAN, START, backup_record, drill_with_failback, fake_plan
from tests.test_reporting import SECTIONS, parse


def test_the_parent_is_saved_and_read_back(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    drill, failback = drill_with_failback()
    for record in (drill, failback, backup_record(START + timedelta(hours=1))):
        ledger.save_run(record)
    assert ledger.run(failback.id).parent_id == drill.id
    assert ledger.run(drill.id).parent_id is None
    assert [r.id for r in ledger.children(drill.id)] == [failback.id]
    assert ledger.children(failback.id) == []
    assert failback.id not in {r.id for r in ledger.runs(plan=PLAN, own_only=True)}
    assert {r.id for r in ledger.runs(plan=PLAN)} >= {drill.id, failback.id}


def test_a_ledger_made_before_runs_had_parents_keeps_working(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:  # the runs table as it was, with one run in it
        connection.executescript(
            "CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY, kind VARCHAR(16) NOT NULL, plan VARCHAR(64) NOT NULL, "
            "status VARCHAR(16) NOT NULL, started_at VARCHAR(40) NOT NULL, record TEXT NOT NULL);")
        old = backup_record()
        connection.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)", (
            old.id, old.kind, old.plan, old.status, old.started_at.isoformat(),
            old.model_dump_json(exclude={"parent_id"})))
    ledger = Ledger(f"sqlite:///{path}")
    assert [r.id for r in ledger.runs(plan=PLAN, own_only=True)] == [old.id]
    drill, failback = drill_with_failback()
    ledger.save_run(drill)
    ledger.save_run(failback)
    assert [r.id for r in ledger.children(drill.id)] == [failback.id]
    with sqlite3.connect(path) as connection:
        indexes = [row[1] for row in connection.execute("PRAGMA index_list(runs)")]
    assert any("parent_id" in name for name in indexes)


def test_the_parents_report_names_its_child_runs():
    drill, failback = drill_with_failback()
    sections = parse(render_html(drill, fake_plan(), [], [failback]))
    rows = sections["child-runs"].rows
    assert rows == [["kind", "run", "status", "started", "RTO"],
                    ["failback", failback.id, "completed", "2026-11-28 10:16:52", "12 s"]]
    assert "Runs this run started" in render_markdown(drill, fake_plan(), [], [failback])
    assert "child-runs" not in parse(render_html(drill, fake_plan(), []))  # no child: no section
    assert list(parse(render_html(failback, fake_plan(), []))) == SECTIONS


@pytest.fixture
def plan_and_ledger(tmp_path) -> tuple[str, dict[str, str]]:
    write_password(tmp_path / "pw")
    (tmp_path / "recordings").mkdir()
    plan = write_plan(tmp_path, {
        "name": PLAN,
        "repositories": {"local": {"url": "./repo", "password_file": "./pw", "init": True}},
        "datasets": {"recordings": {"repository": "local", "paths": [str(tmp_path / "recordings")]}},
    })
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = Ledger(ledger_url)
    for record in drill_with_failback():
        ledger.save_run(record)
    return str(plan), {"LIFELINE_LEDGER_URL": ledger_url, "LIFELINE_HOME": str(tmp_path / "home")}


def test_report_without_run_reports_the_drill_not_its_failback(plan_and_ledger):
    plan, environment = plan_and_ledger
    drill, failback = drill_with_failback()
    shown = run_cli("report", "--plan", plan, "--format", "json", env=environment)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == drill.id  # the failback started later, but the drill started it
    page = run_cli("report", "--plan", plan, env=environment)
    assert page.returncode == 0, page.stderr
    assert [failback.id] == [row[1] for row in parse(page.stdout)["child-runs"].rows[1:]]
    child = run_cli("report", "--plan", plan, "--run", failback.id, "--format", "json", env=environment)
    assert json.loads(child.stdout)["parent_id"] == drill.id
