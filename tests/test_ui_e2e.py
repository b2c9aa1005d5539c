"""One-click failover from the Prefect UI (issue 5), in headless Chromium, checked through the API and the lab.

Debian's chromium package drives the session server's UI through Python Playwright; no browser is ever
downloaded. The UI's state badges lag the server by seconds, so the test acts in the browser as an
operator would and asserts through the REST API and the lab; it pins the page only where a person
would look (the paused run's form, the artifacts on the run page).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from lifeline.configs.loading import load_plan
from lifeline.configs.settings import load_settings
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.steps.recorded_run import artifact_key

from tests.lab_fixtures import Lab, back_to_normal
from tests.serve_fixtures import Api, ServedPlan

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SUBMIT = re.compile(r"^\s*(Submit|Resume)\s*$")  # the form's button: Submit from the page's Resume, Resume from the menu
NOT_LOOPBACK = re.compile(r"^https?://(?!127\.0\.0\.1[:/])")  # the UI's analytics: never leave the machine


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route(NOT_LOOPBACK, lambda route: route.abort())
    context.set_default_timeout(30_000)
    opened = context.new_page()
    yield opened
    context.close()


def test_one_click_failover_from_the_ui_approved_in_its_form(
    served_lab: ServedPlan, api: Api, normal_lab: Lab, no_run_left_behind, page, tmp_path: Path, capsys
) -> None:
    from playwright.sync_api import expect

    lab = normal_lab
    plan = load_plan(lab.plan).plan
    ui = api.url.removesuffix("/api")
    deployment_id = served_lab.deployment_id("failover")

    # Open the UI, find the failover deployment, Run -> Quick run.
    page.goto(ui + "/")
    page.get_by_role("link", name="Deployments", exact=True).click()
    page.locator(f'a[href*="/deployments/deployment/{deployment_id}"]').first.click()
    for _ in range(3):  # a SQLite-backed server may answer 503 under load: the UI says so, a person clicks again
        page.get_by_role("button", name="Run", exact=True).click()
        with page.expect_response(lambda response: response.request.method == "POST" and response.url.endswith(
                f"/deployments/{deployment_id}/create_flow_run")) as created:
            clicked = time.time()
            page.get_by_role("menuitem", name="Quick run").click()
        if created.value.status != 503:
            break
    assert created.value.ok, created.value.text()
    run_id = created.value.json()["id"]
    page.get_by_text("View run").click()  # the toast's link to the new run's page

    api.wait_for_state(run_id, {"RUNNING", "PAUSED"}, 30)
    click_to_running = api.first_state_at(run_id, "RUNNING") - clicked
    api.wait_for_state(run_id, {"PAUSED"}, 60)  # probe and preflight, then the form
    api.wait_for_input_form(run_id, 10)

    # Approve in the form on the paused run's page.
    for _ in range(3):  # as with Quick run: after a 503 a person closes the dialog and tries again
        page.reload()  # the page's badge lags the server; a person would refresh too
        page.get_by_role("button", name="Open menu").first.click()
        page.get_by_role("menuitem", name="Resume").click()
        form = page.get_by_role("dialog")
        expect(form.get_by_text("READY", exact=True)).to_be_visible()  # the preflight result above the form
        expect(form.get_by_role("switch")).to_have_count(0)  # READY: no Force to offer
        form.locator("textarea").nth(0).fill("Wang Fang")  # the plan's approver (recovery.approvers)
        form.locator("textarea").nth(1).fill("UI end-to-end test")
        choose(page, form, "Approve")
        with page.expect_response(lambda response: response.url.endswith(f"/flow_runs/{run_id}/resume")) as resumed:
            form.get_by_role("button", name=SUBMIT).click()
        if resumed.value.status != 503:
            break
    assert resumed.value.ok and resumed.value.json()["status"] == "ACCEPT", resumed.value.text()

    # Through the API and the lab: the failover completed and the call centre is served from dr.
    api.wait_for_state(run_id, {"COMPLETED"}, 120)
    status = lab.status()
    assert status.dns.points_at == "dr"
    assert status.databases["dr"] == "primary"
    record = Ledger(load_settings().ledger).run(api.record_id(run_id, "failover"))
    assert record is not None and (record.status, record.trigger) == ("completed", "ui")
    approval = next(step for step in record.steps if step.name == "approval")
    assert (approval.detail["approved"], approval.detail["operator"], approval.detail["reason"]) == \
        (True, "Wang Fang", "UI end-to-end test")
    assert record.milestones["approved"] <= record.milestones["recovered"]

    # The run record and its summary are artifacts of this run, and the run page shows them.
    keys = {artifact_key(plan.name, "failover", "record"), artifact_key(plan.name, "failover", "summary")}
    assert {artifact["key"] for artifact in api.artifacts(run_id)} >= keys
    page.reload()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible(timeout=20_000)
    page.get_by_role("tab", name="Artifacts").click()
    for key in sorted(keys):
        expect(page.get_by_text(key, exact=True)).to_be_visible()
    expect(page.get_by_text(f"Lifeline failover run {record.id}").first).to_be_visible()  # this run's record
    page.wait_for_load_state("networkidle")
    screenshot = tmp_path / "ui-failover.png"
    page.screenshot(path=str(screenshot), full_page=True)
    with capsys.disabled():
        print(f"\n[screenshot] {screenshot}\n[latency] Quick run click -> RUNNING: {click_to_running:.2f} s "
              f"({api.start_breakdown(run_id, clicked)})")

    back_to_normal(lab)  # fail back with Lifeline, heal the lab
    assert lab.status().normal


def test_the_form_refuses_an_unsigned_answer_shows_not_ready_with_force_and_a_rejection_ends_cancelled(
    served_lab: ServedPlan, api: Api, normal_lab: Lab, no_run_left_behind, page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    lab = normal_lab
    ui = api.url.removesuffix("/api")
    # The lab's plan wanting ivr-config backups 60 ms old, beside it: preflight says NOT READY naming them.
    document = yaml.safe_load(lab.plan.read_text())
    document["datasets"]["ivr-config"]["rpo_minutes"] = 0.001
    not_ready = lab.plan.with_name("plan-not-ready.yaml")
    not_ready.write_text(yaml.safe_dump(document, sort_keys=False))
    try:
        run = api.create_run(served_lab.deployment_id("failover"), {"plan_path": str(not_ready)})
        api.wait_for_state(run["id"], {"PAUSED"}, 60)
        api.wait_for_input_form(run["id"], 10)
        page.goto(f"{ui}/runs/flow-run/{run['id']}")
        page.get_by_role("button", name="Resume").click()  # beside Cancel at the top of a paused run's page
        form = page.get_by_role("dialog")
        expect(form.get_by_text("NOT READY", exact=True)).to_be_visible()
        expect(form.get_by_text("Awaiting approval until ")).to_be_visible()
        expect(form.get_by_text(re.compile(r"newest snapshot .* old \(target 0\.001 min"))).to_be_visible()
        # An empty form is refused: the run stays paused.
        form.get_by_role("button", name="Submit").click()
        for field in ("operator", "reason", "decision"):
            expect(form.get_by_text(f"'{field}' is a required property")).to_be_visible()
        operator, reason = form.locator("textarea").nth(0), form.locator("textarea").nth(1)
        operator.fill("Wang Fang")
        reason.fill("UI NOT READY test")
        choose(page, form, "Approve")
        submit(page, form, run["id"])

        # Approve without Force past NOT READY is refused in the form, which asks again saying why.
        refused = wait_for_form_saying(api, run["id"], "Refused: preflight says NOT READY")
        assert "tick Force to go past it" in refused
        page.reload()
        page.get_by_role("button", name="Resume").click()
        form = page.get_by_role("dialog")
        expect(form.get_by_text(re.compile("Refused: preflight says NOT READY"))).to_be_visible()
        expect(form.get_by_role("switch")).to_have_attribute("aria-checked", "false")  # Force, still off
        form.locator("textarea").nth(0).fill("Wang Fang")
        form.locator("textarea").nth(1).fill("not with stale backups")
        choose(page, form, "Reject")
        submit(page, form, run["id"])

        # Rejected: Cancelled (never Failed) with one line, no traceback in the run's logs, nothing changed.
        done = api.wait_for_state(run["id"], {"CANCELLED"}, 60)
        assert "not approved" in done["state"]["message"] and "\n" not in done["state"]["message"]
        assert not [line for line in api.logs(run["id"]) if "Traceback" in line]
        status = lab.status()
        assert (status.dns.points_at, status.databases["main"], status.databases["dr"]) == ("main", "primary", "standby")
        record = Ledger(load_settings().ledger).run(api.record_id(run["id"], "failover"))
        approval = next(step for step in record.steps if step.name == "approval")
        assert (approval.detail["approved"], approval.detail["operator"], approval.detail["reason"]) == \
            (False, "Wang Fang", "not with stale backups")
        assert api.flow_run(run["id"])["name"] == f"failover-{record.id}"  # the run's name carries the record's id
    finally:
        not_ready.unlink()


def choose(page, form, decision: str) -> None:  # noqa: ANN001 - Playwright's Page and Locator
    """Pick Approve or Reject in the form's Decision list (a click focuses it; the arrow key opens it)."""
    from playwright.sync_api import expect

    select, option = form.locator("fieldset button").first, page.get_by_role("option", name=decision, exact=True)
    select.click()
    for _ in range(3):
        if option.is_visible():
            break
        select.press("ArrowDown")
        page.wait_for_timeout(300)
    option.click()
    expect(select).to_contain_text(decision)


def submit(page, form, run_id: str) -> None:  # noqa: ANN001 - Playwright's Page and Locator
    """Submit; a SQLite-backed server may answer 503 under load: the form stays open, and a person submits again."""
    for _ in range(3):
        with page.expect_response(lambda response: response.url.endswith(f"/flow_runs/{run_id}/resume")) as resumed:
            form.get_by_role("button", name=SUBMIT).click()
        if resumed.value.status != 503:
            break
        page.wait_for_timeout(1000)
    assert resumed.value.ok and resumed.value.json()["status"] == "ACCEPT", resumed.value.text()


def wait_for_form_saying(api: Api, run_id: str, text: str, timeout: float = 30) -> str:
    """The description of the run's open form, once it says `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.flow_run(run_id)
        keyset = (run.get("state") or {}).get("state_details", {}).get("run_input_keyset")
        if run["state_type"] == "PAUSED" and keyset:
            try:
                description = api.get(f"/flow_runs/{run_id}/input/{keyset['description']}")
            except Exception:  # noqa: BLE001 - the new form's description is saved a moment after the pause
                description = ""
            if text in (description or ""):
                return description
        time.sleep(0.5)
    raise AssertionError(f"the run's form never said {text!r}")
