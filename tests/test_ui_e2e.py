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
        form.get_by_label("Operator").fill("Wang Fang")  # the plan's approver (recovery.approvers)
        form.get_by_label("Reason").fill("UI end-to-end test")
        form.get_by_label("Approve").click()
        expect(form.get_by_role("switch")).to_have_attribute("aria-checked", "true")
        with page.expect_response(lambda response: response.url.endswith(f"/flow_runs/{run_id}/resume")) as resumed:
            form.get_by_role("button", name="Resume", exact=True).click()
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
