"""After-action and trend reports: every section there (parsed from the HTML), with its charts and content."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from lifeline.configs.plan import Plan
from lifeline.tasks.report.after_action import (
    load_history,
    load_trend_records,
    render_html,
    render_markdown,
    render_trend_html,
    render_trend_markdown,
)
from lifeline.tasks.report.trend import drills_due
from lifeline.tasks.run.ledger import Ledger

from tests.report_records import (
    DNS_WARNING,
    DRILL_MILESTONES,
    DRILL_STEPS,
    FORCED_REASON,
    PLAN,
    SHA,
    START,
    backup_record,
    fake_plan,
    simple_drill,
    site_loss_drill,
    site_loss_history,
)

SECTIONS = ["objective", "scenario", "plan-version", "trigger", "step-log", "waterfall", "targets", "evidence",
            "impact", "deviations", "corrective-actions", "history"]


@dataclass
class Element:
    tag: str
    attributes: dict[str, str]


@dataclass
class ParsedSection:
    text: str = ""
    elements: list[Element] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # every table row's cells, header rows included
    items: list[str] = field(default_factory=list)  # every <li>'s text

    def having(self, tag: str, css_class: str | None = None) -> list[Element]:
        return [e for e in self.elements if e.tag == tag
                and (css_class is None or css_class in e.attributes.get("class", "").split())]


class SectionParser(HTMLParser):
    """Each <section id=...>: its text, elements (SVG ones included), table rows and list items."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, ParsedSection] = {}
        self.current: ParsedSection | None = None
        self.cell: list[str] | None = None
        self.row: list[str] | None = None
        self.item: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "section":
            assert self.current is None, "sections must not nest"
            self.current = self.sections.setdefault(attributes["id"], ParsedSection())
            return
        if self.current is None:
            return
        self.current.elements.append(Element(tag, attributes))
        if tag in ("dt", "dd", "td", "th", "li", "p", "tr"):
            self.current.text += "\n"
        if tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "li":
            self.item = []

    def handle_endtag(self, tag: str) -> None:
        if self.current is None:
            return
        if tag == "section":
            self.current = None
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.current.rows.append(self.row)
            self.row = None
        elif tag == "li" and self.item is not None:
            self.current.items.append("".join(self.item).strip())
            self.item = None

    def handle_data(self, data: str) -> None:
        if self.current is None:
            return
        self.current.text += data
        for collecting in (self.cell, self.item):
            if collecting is not None:
                collecting.append(data)


def parse(page: str) -> dict[str, ParsedSection]:
    parser = SectionParser()
    parser.feed(page)
    parser.close()
    return parser.sections


@pytest.fixture(scope="module")
def drill_report() -> dict[str, ParsedSection]:
    return parse(render_html(site_loss_drill(), fake_plan(), site_loss_history()))


def test_report_holds_every_section_in_order():
    page = render_html(site_loss_drill(), fake_plan(), site_loss_history())
    assert re.findall(r'<section id="([^"]+)"', page) == SECTIONS
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_report_is_self_contained():
    page = render_html(site_loss_drill(), fake_plan(), site_loss_history())
    assert "<style>" in page and "<svg" in page
    for external in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url("):
        assert external not in page
    assert set(re.findall(r'href="([^"]*)"', page)) == {f"#{section}" for section in SECTIONS}


def test_objective_scenario_plan_version_and_trigger(drill_report):
    assert "Natural disaster: the main site loses power" in drill_report["objective"].text
    assert "15 min" in drill_report["objective"].text and "5 min" in drill_report["objective"].text
    scenario = drill_report["scenario"].text
    assert "site-loss" in scenario and "power off main" in scenario and "failover" in scenario and "30" in scenario
    version = drill_report["plan-version"].text
    assert SHA in version and "since the previous run\nunchanged" in version
    assert "4 drill run(s)" in version  # the three earlier runs with this sha, and this one
    trigger = drill_report["trigger"].text
    assert "the plan's schedule" in trigger and "0 3 * * 1" in trigger
    assert "approved by duty-manager after 5 min: quarterly drill" in trigger


def test_step_log_lists_every_step_with_attempts_and_result(drill_report):
    rows = drill_report["step-log"].rows
    steps = {row[0]: row for row in rows if len(row) == 7 and row[0] != "step"}
    assert list(steps) == [name for name, *_ in DRILL_STEPS]
    for name, _, _, attempts, status, _ in DRILL_STEPS:
        assert steps[name][4] == str(attempts)
        assert steps[name][5].startswith(status)
    assert steps["clean up"][5] == "failed: could not remove the sentinel file: Permission denied"
    assert steps["preflight"][1] == "10:00:00"  # times in the plan's zone, Asia/Shanghai
    assert steps["approval"][2] == "+1 min 5 s" and steps["approval"][3] == "5 min"
    milestones = {row[0]: row for row in rows if len(row) == 4 and row[0] != "milestone"}
    assert set(milestones) == set(DRILL_MILESTONES)
    assert milestones["recovered"][3] == "+16 min 40 s"  # since the incident: the RTO
    row_classes = [e.attributes.get("class", "") for e in drill_report["step-log"].having("tr")]
    assert "failed" in row_classes and "retried" in row_classes


def test_waterfall_has_one_bar_per_step_on_a_time_axis(drill_report):
    bars = drill_report["waterfall"].having("rect", "bar")
    assert [bar.attributes["data-step"] for bar in bars] == [name for name, *_ in DRILL_STEPS]
    by_step = {bar.attributes["data-step"]: bar.attributes for bar in bars}
    assert "bar-failed" in by_step["clean up"]["class"] and "bar-retried" in by_step["probe main"]["class"]
    assert "bar-completed" in by_step["verify dr"]["class"]
    assert len({bar.attributes["fill"] for bar in bars}) == 3  # completed, retried, failed
    starts = [float(bar.attributes["x"]) for bar in bars]
    assert starts == sorted(starts)
    width = {name: float(attributes["width"]) for name, attributes in by_step.items()}
    assert width["approval"] / width["verify dr"] == pytest.approx(300 / 445, rel=0.01)
    markers = [e.attributes["data-milestone"] for e in drill_report["waterfall"].having("g", "marker")]
    assert sorted(markers) == sorted(DRILL_MILESTONES)


def test_targets_show_measures_against_targets(drill_report):
    targets = drill_report["targets"]
    rows = {row[0]: row for row in targets.rows}
    assert rows["RTO"][1:] == ["16 min 40 s", "15 min", "missed by 1 min 40 s"]
    assert rows["RPO"][1:] == ["4 min", "5 min", "met (1 min to spare)"]
    lines = {e.attributes["data-measure"]: float(e.attributes["data-seconds"]) for e in targets.having("line", "target")}
    assert lines == {"RTO": 900.0, "RPO": 300.0}
    measured = {e.attributes["data-measure"]: e.attributes for e in targets.having("rect", "measured")}
    assert float(measured["RTO"]["data-seconds"]) == 1000.0
    assert measured["RTO"]["fill"] != measured["RPO"]["fill"]  # missed red, met green


def test_evidence_lists_every_detail_key_that_looks_like_evidence(drill_report):
    rows = drill_report["evidence"].rows[1:]
    keys = {(step, key) for step, key, _ in rows}
    assert keys == {
        ("verify dr", "healthy_in_a_row"), ("promote crm-db at dr", "fork_lsn"),
("write sentinel", "sentinel_id"), ("verify sentinel", "sentinel_row_survived"), ("verify sentinel", "sentinel_file_survived"),
        ("verify sentinel", "rows_verified"), ("verify sentinel", "files_verified"),
        ("measure", "lsn_gap_bytes"), ("measure", "lost_calls_crm-db"), ("measure", "lost_call_ids_crm-db"),
    }
    values = {key: value for _, key, value in rows}
    assert values["sentinel_file_survived"] == "no" and values["lost_call_ids_crm-db"] == "c-1001, c-1002"
    assert values["rows_verified"] == "120345" and values["lsn_gap_bytes"] == "crm-db=8192"


def test_impact_shows_customers_and_cost(drill_report):
    impact = drill_report["impact"].text
    assert "57 (counted in the call log)" in impact
    assert "1,916.67 CNY" in impact and "16 min 40 s" in impact


def test_deviations_name_every_problem(drill_report):
    deviations = drill_report["deviations"].items
    expected = [
        "Step clean up failed after 2 attempts: could not remove the sentinel file",
        "Step probe main needed 3 attempts before it completed.",
        f"Step switch dns to dr warned: {DNS_WARNING}",
        f"preflight was forced past: {FORCED_REASON}",
        "RTO 16 min 40 s missed the target 15 min by 1 min 40 s.",
        "2 call(s) acknowledged by the old primary are missing at the new primary of crm-db.",
        "The old primary of crm-db had written 8,192 bytes of WAL",
        "Evidence sentinel_file_survived of step verify sentinel is negative: no.",
        "RTO 16 min 40 s is 2.3× the median of the previous 5 runs (7 min 20 s).",
    ]
    for text in expected:
        assert any(text in item for item in deviations), (text, deviations)
    assert not any("RPO" in item and "missed" in item for item in deviations)


def test_corrective_actions_are_concrete_and_name_the_step(drill_report):
    actions = drill_report["corrective-actions"].items
    expected = [
        "Fix clean up: could not remove the sentinel file: Permission denied. It also failed in 1 of the previous 5 "
        "runs. Then rerun the drill site-loss to prove the fix.",
        "Investigate why probe main needed 3 attempts",
        "Review the warning of switch dns to dr",
        "Resolve what preflight found before the next run",
        "Shorten the recovery by at least 1 min 40 s: the longest steps were verify dr (7 min 25 s) and approval "
        "(5 min)",
        "Waiting for approval took 5 min of it",
        "Call back or re-enter the 2 lost call(s) of crm-db: their ids are in step measure (lost_call_ids_crm-db).",
        "Find out why sentinel_file_survived failed in verify sentinel",
        "Compare this step log with run earlier00000",
    ]
    for text in expected:
        assert any(text in item for item in actions), (text, actions)
    assert len(actions) == len(set(actions))


def test_history_lists_earlier_runs_of_the_scenario(drill_report):
    rows = drill_report["history"].rows[1:]
    assert [row[1] for row in rows] == [f"earlier{index:05d}" for index in range(5)]  # newest first
    assert rows[2][2] == "completed" and rows[0][3] == "6 min 40 s"


def test_a_backup_report_without_plan_or_history():
    sections = parse(render_html(backup_record()))
    assert set(sections) == set(SECTIONS)
    assert "Keep a recent, verified copy of every dataset" in sections["objective"].text
    assert "No scenario" in sections["scenario"].text
    evidence = {(step, key) for step, key, _ in sections["evidence"].rows[1:]}
    assert {("backup crm-db", "row_counts"), ("backup crm-db", "snapshot_id"), ("backup recordings", "files")} <= evidence
    assert any("Back up crm-db more often: its last two snapshots were 1 d 2 h apart, the target is 1 d 1 h"
               in item for item in sections["corrective-actions"].items)
    assert len(sections["waterfall"].having("rect", "bar")) == 4
    assert sections["targets"].rows[1][1:] == ["—", "—", "not measured"]  # a backup has no RTO
    assert "(UTC)" in render_html(backup_record()) and "02:00:01" in sections["step-log"].text


def test_the_plan_model_without_scenarios_works():
    plan = Plan.model_validate({
        "name": PLAN, "timezone": "Asia/Shanghai", "targets": {"rto_minutes": 10, "rpo_minutes": 2},
        "repositories": {"local": {"url": "/srv/repo", "password_file": "/etc/lifeline/pw"}},
        "datasets": {"recordings": {"repository": "local", "paths": ["/srv/recordings"]}},
        "schedules": {"drill": "0 3 * * 1"},
    })
    failed = simple_drill("site-loss", START, None, None, status="failed", failed_step="promote crm-db")
    failed.rto_target_seconds = failed.rpo_target_seconds = None
    sections = parse(render_html(failed, plan, []))
    assert "not define it" in sections["scenario"].text
    assert "10 min" in sections["objective"].text  # the plan's own targets
    assert any("Fix promote crm-db" in item for item in sections["corrective-actions"].items)
    assert "No earlier run" in sections["history"].text
    assert "10:00:00" in sections["step-log"].text


def test_untrusted_text_is_escaped():
    record = site_loss_drill()
    record.steps[-1].detail["error"] = '<script>alert("x")</script> & <b>'
    page = render_html(record, fake_plan())
    assert "<script" not in page and "&lt;script&gt;" in page


def test_markdown_has_the_same_content():
    text = render_markdown(site_loss_drill(), fake_plan(), site_loss_history())
    for title in ("Objective", "Scenario", "Plan version", "Trigger", "Step log", "Waterfall",
                  "RTO and RPO against targets", "Data-integrity evidence", "Affected customers and cost",
                  "Deviations", "Corrective actions", "Earlier runs"):
        assert f"\n## {title}\n" in text
    assert "<svg" not in text and "<" not in text.replace("&lt;", "")
    for name, _, _, attempts, status, _ in DRILL_STEPS:
        assert re.search(rf"\| `{re.escape(name)}` \| [^|]+ \| [^|]+ \| [^|]+ \| {attempts} \| {status}", text), name
    assert "- Fix `clean up`: could not remove the sentinel file" in text
    assert "| RTO | 16 min 40 s | 15 min | missed by 1 min 40 s |" in text
    assert f"`{SHA}`" in text


# --- the trend report ---------------------------------------------------------------------------

NOW = START + timedelta(days=1)


def trend_records() -> list:
    records = [site_loss_drill(), *site_loss_history()]
    records += [simple_drill("system-crash", START - timedelta(days=10 * (index + 1)), 30.0 + index, 0.0) for index in range(4)]
    records.append(simple_drill("system-crash", START - timedelta(days=5), None, None, status="failed",
                                failed_step="promote crm-db"))
    records.append(simple_drill("data-corruption", START - timedelta(days=100), 1200.0, 95_000.0))
    failover = simple_drill("ignored", START - timedelta(days=3), 300.0, 0.0)
    failover.kind, failover.scenario = "failover", None
    return records + [failover, backup_record()]


def test_trend_has_one_series_per_scenario_with_its_target():
    sections = parse(render_trend_html(trend_records(), fake_plan(), NOW))
    assert list(sections) == ["trend", "summary", "overdue"]
    series = {e.attributes["data-series"]: int(e.attributes["data-points"]) for e in sections["trend"].having("g", "series")}
    assert series == {
        "site-loss rto": 6, "site-loss rpo": 6, "system-crash rto": 5, "system-crash rpo": 5,
        "data-corruption rto": 1, "data-corruption rpo": 1, "failover (no scenario) rto": 1,
        "failover (no scenario) rpo": 1,
    }
    figures = [e.attributes["data-scenario"] for e in sections["trend"].having("div", "figures")]
    assert figures == ["data-corruption", "system-crash", "site-loss", "failover (no scenario)"]  # by first run
    targets = [float(e.attributes["data-seconds"]) for e in sections["trend"].having("line", "target")]
    assert targets == [1800.0, 90000.0, 300.0, 60.0, 900.0, 300.0, 900.0, 300.0]  # the plan's scenario targets
    assert len(sections["trend"].having("path", "point-failed")) == 2  # the failed system-crash drill, RTO and RPO
    assert len(sections["trend"].having("circle", "point-missed")) == 3  # the site-loss RTO, data-corruption RPO...
    summary = {row[0]: row for row in sections["summary"].rows[1:]}
    assert summary["site-loss"][1] == "6" and summary["site-loss"][9] == "5 of 6"


def test_drills_overdue_by_cadence():
    due = {item.scenario: item for item in drills_due(trend_records(), fake_plan(), NOW)}
    assert list(due) == ["site-loss", "system-crash", "data-corruption", "data-leak"]
    assert not due["site-loss"].overdue and due["site-loss"].due_at == START + timedelta(days=30)
    assert not due["system-crash"].overdue  # the failed drill 5 days ago counts as the last drill
    assert due["system-crash"].last_drill.status == "failed"
    assert due["data-corruption"].overdue and due["data-corruption"].due_at == START - timedelta(days=10)
    assert due["data-leak"].cadence_days is None and not due["data-leak"].overdue
    never = drills_due([], fake_plan(), NOW)
    assert all(item.overdue for item in never if item.cadence_days) and all(item.last_drill is None for item in never)

    rows = {row[0]: row for row in parse(render_trend_html(trend_records(), fake_plan(), NOW))["overdue"].rows[1:]}
    assert rows["data-corruption"][5] == "yes, by 11 d" and rows["site-loss"][5] == "no: due in 29 d"
    assert rows["data-leak"][5] == "no cadence set" and rows["system-crash"][3] == "failed"


def test_trend_markdown_and_an_empty_ledger():
    text = render_trend_markdown(trend_records(), fake_plan(), NOW)
    assert "## RTO and RPO per scenario" in text and "## Drills overdue" in text
    assert "| `data-corruption` | 90 d |" in text and "<svg" not in text
    assert text.count("| started | run | status | RTO | RPO | targets |") == 4
    empty = parse(render_trend_html([], fake_plan(), NOW))
    assert "No recovery run" in empty["trend"].text
    assert [row[5] for row in empty["overdue"].rows[1:]] == ["yes: never drilled"] * 3 + ["no cadence set"]


def test_history_and_trend_load_from_the_ledger(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    record = site_loss_drill()
    for run in [record, *site_loss_history(), *trend_records()[6:]]:
        ledger.save_run(run)
    history = load_history(ledger, record)
    assert record.id not in {r.id for r in history} and {r.kind for r in history} == {"drill"}
    assert len(history) == len(trend_records()) - 3  # every drill but this one; not the failover, not the backup
    assert {r.kind for r in load_trend_records(ledger, PLAN)} == {"drill", "failover"}


def test_a_cancelled_failover_without_failed_steps():
    record = simple_drill("ignored", START, None, None, status="cancelled")
    record.kind, record.scenario, record.error = "failover", None, "not approved: no reason given; nothing was changed"
    sections = parse(render_html(record, fake_plan(), []))
    assert sections["deviations"].items == ["The run was cancelled: not approved: no reason given; nothing was changed"]
    assert sections["corrective-actions"].items == ["None needed."]
    assert "Move the call centre's service to the standby site" in sections["objective"].text


def test_a_cancelled_warning_stays_resolved_when_its_preparation_posts_after_the_cancel():
    """A sender may cancel a warning while its preparation still runs: the preparation's own post arrives
    after the cancel, and must neither reopen the incident nor change a component's status."""
    from lifeline.configs.alerts import StatusComponent, StatusPage
    from lifeline.tasks.report.status_page import page_facts
    from lifeline.tasks.run.public import StatusUpdate
    from lifeline.tasks.run.record import utc_now

    page = StatusPage(bucket="status-page", components={"hotline": StatusComponent(name={"zh": "热线", "en": "Hotline"})})
    now = utc_now()

    def update(seconds: int, incident: str, resolved: bool, components: dict) -> StatusUpdate:
        return StatusUpdate(plan="p", incident=incident, title={"en": incident, "zh": incident},
                            text={"en": f"+{seconds}", "zh": f"+{seconds}"}, components=components,
                            resolved=resolved, exercise=True, at=now + timedelta(seconds=seconds))

    facts = page_facts(page, [update(0, "typhoon", True, {}),  # the cancel, first
                              update(5, "typhoon", False, {"hotline": "degraded"}),  # the preparation, late
                              update(9, "flood", False, {})], "UTC", now)

    incidents = {incident["id"]: incident for incident in facts["incidents"]}
    assert incidents["typhoon"]["resolved"] is True and len(incidents["typhoon"]["updates"]) == 2
    assert incidents["flood"]["resolved"] is False
    assert [component["status"] for component in facts["components"]] == ["operational"]
