"""`lifeline intake` over real HTTP, against the session's Prefect server and the lab's plan.

The alert deployment is registered without a worker: a started run stays Scheduled, so what is counted is
exactly the runs intake started (the preparedness itself is run by the severe-weather benchmark and drill).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from lifeline.configs.loading import load_plan
from lifeline.flows.alert import alert_flow
from lifeline.flows.serve import deployment_name

from tests.helpers import wait_for
from tests.lab_fixtures import Lab
from tests.servers import free_port
from tests.test_alerts import DATA, TYPHOON, cap_variant

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]


class Intake:
    def __init__(self, url: str, token: str, api: str, deployment_id: str) -> None:
        self.url, self.token, self.api, self.deployment_id = url, token, api, deployment_id

    def post(self, path: str, body: str | bytes, token: str | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", content=body, timeout=30,
                          headers={"Authorization": f"Bearer {token or self.token}"})

    def runs(self) -> list[dict]:
        answer = httpx.post(f"{self.api}/flow_runs/filter", timeout=10,
                            json={"deployments": {"id": {"any_": [self.deployment_id]}}})
        answer.raise_for_status()
        return answer.json()


@pytest.fixture(scope="module")
def intake(lab: Lab, prefect_server: str, tmp_path_factory) -> Intake:
    loaded = load_plan(lab.plan)
    deployment = alert_flow.to_deployment(name=deployment_name(loaded.plan.name, "alert"),
                                          parameters={"plan_path": str(lab.plan), "approval": "ui"})
    deployment_id = str(deployment.apply())
    port = free_port()
    log = tmp_path_factory.mktemp("intake") / "intake.log"
    process = subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", "intake", "--plan", str(lab.plan),
                                "--host", "127.0.0.1", "--port", str(port)], stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None

    wait_for(healthy, 90, f"intake to listen ({log})")
    assert process.poll() is None, log.read_text()
    intake = Intake(url, loaded.plan.intake.token_file.read_text().strip(), prefect_server.rstrip("/"), deployment_id)
    yield intake
    process.terminate()
    process.wait(10)
    for run in intake.runs():  # nobody ran them: a later `lifeline serve` of the plan must not
        httpx.delete(f"{intake.api}/flow_runs/{run['id']}", timeout=10)
    httpx.delete(f"{intake.api}/deployments/{deployment_id}", timeout=10)


def test_a_cap_warning_its_update_cancel_and_an_exercise_each_start_one_run(intake: Intake) -> None:
    before = len(intake.runs())
    first = intake.post("/v1/alerts/cap", TYPHOON)
    assert first.status_code == 202, first.text
    run_id = first.json()["run_id"]
    again = intake.post("/v1/alerts/cap", TYPHOON)
    assert (again.status_code, again.json()["run_id"], again.json()["duplicate"]) == (200, run_id, True)
    reference = "warning@sh-meteorological.example,CN-SH-MET-20261204-0042,2026-12-04T10:00:00+08:00"
    update = intake.post("/v1/alerts/cap", cap_variant("CN-SH-MET-20261204-0060", message_type="Update",
                                                       references=reference))
    cancel = intake.post("/v1/alerts/cap", cap_variant("CN-SH-MET-20261204-0061", message_type="Cancel",
                                                       references=reference))
    exercise = intake.post("/v1/alerts/cap", cap_variant("CN-SH-MET-EXERCISE-7", status="Exercise"))
    assert [update.status_code, cancel.status_code, exercise.status_code] == [202, 202, 202]
    runs = {run["id"]: run for run in intake.runs()}
    assert len(runs) == before + 4
    started = {answer.json()["flow_run_id"]: answer.json() for answer in (first, update, cancel, exercise)}
    assert set(started) <= set(runs)
    parameters = {run["parameters"]["record_id"]: run["parameters"]["alert"] for run in runs.values()
                  if run["id"] in started}
    assert parameters[update.json()["run_id"]]["references"] == [first.json()["key"]]
    assert parameters[cancel.json()["run_id"]]["message_type"] == "cancel"
    assert parameters[exercise.json()["run_id"]]["status"] == "exercise"
    assert "exercise" in runs[exercise.json()["flow_run_id"]]["tags"]


def test_an_alertmanager_notification_and_its_retries_start_one_run(intake: Intake) -> None:
    payload = (DATA / "alertmanager-dr-link.json").read_text()
    answers = [intake.post("/v1/alerts/alertmanager", payload) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [202, 200, 200]
    assert len({answer.json()["run_id"] for answer in answers}) == 1


def test_twenty_concurrent_duplicates_start_exactly_one_run(intake: Intake) -> None:
    before = len(intake.runs())
    body = cap_variant("CN-SH-MET-CONCURRENT-1")
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: intake.post("/v1/alerts/cap", body), range(20)))
    assert sorted(answer.status_code for answer in answers) == [200] * 19 + [202]
    assert len({answer.json()["run_id"] for answer in answers}) == 1
    assert len(intake.runs()) == before + 1


def test_a_bad_token_gets_401_malformed_xml_400_and_neither_runs_anything(intake: Intake) -> None:
    before = len(intake.runs())
    refused = intake.post("/v1/alerts/cap", cap_variant("CN-SH-MET-NOT-AUTHORISED"), token="wrong-token-0123456789")
    assert refused.status_code == 401
    broken = intake.post("/v1/alerts/cap", TYPHOON.replace("<severity>Severe", "<severity>Bad", 1))
    assert broken.status_code == 400 and "severity" in broken.json()["error"]
    truncated = intake.post("/v1/alerts/cap", TYPHOON[:300])
    assert truncated.status_code == 400 and "not well-formed" in truncated.json()["error"]
    not_json = intake.post("/v1/alerts/alertmanager", "{")
    assert not_json.status_code == 400
    assert len(intake.runs()) == before
    # the refused warning was not taken: with the right token it starts its run now
    assert intake.post("/v1/alerts/cap", cap_variant("CN-SH-MET-NOT-AUTHORISED")).status_code == 202


def test_a_warning_for_no_site_or_below_the_threshold_is_kept_and_starts_nothing(intake: Intake) -> None:
    before = len(intake.runs())
    elsewhere = json.dumps({"id": "far-1", "kind": "weather", "severity": "severe", "headline": "Storm", "sites": ["x"]})
    minor = json.dumps({"id": "minor-1", "kind": "weather", "severity": "minor", "headline": "Breeze"})
    answers = [intake.post("/v1/alerts", elsewhere), intake.post("/v1/alerts", minor)]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert "none of the plan's sites" in answers[0].json()["ignored"]
    assert "below preparedness.weather.min_severity" in answers[1].json()["ignored"]
    assert len(intake.runs()) == before


def test_intake_refuses_to_start_without_its_token_file(lab: Lab, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(lab.plan.read_text().replace(str(load_plan(lab.plan).plan.intake.token_file),
                                                 str(tmp_path / "missing.token")))
    result = subprocess.run([sys.executable, "-m", "lifeline.flows.cli", "intake", "--plan", str(plan)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "intake.token_file" in result.stderr and "Traceback" not in result.stderr


ATOM = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <id>urn:test:feed</id><title>Weather warnings</title><updated>2026-12-04T10:00:00+08:00</updated>
  <entry><id>urn:test:linked</id><title>linked</title><updated>2026-12-04T10:00:00+08:00</updated>
    <link type="application/cap+xml" href="{base}/linked.xml"/></entry>
  <entry><id>urn:test:inline</id><title>inline</title><updated>2026-12-04T10:00:00+08:00</updated>
    <content type="text/xml">{inline}</content></entry>
</feed>"""


def test_intake_polls_an_atom_feed_and_starts_one_run_per_warning_however_often_it_polls(
    intake: Intake, lab: Lab, tmp_path: Path
) -> None:
    import http.server
    import threading

    linked = cap_variant("CN-SH-MET-FEED-LINKED").encode()
    inline = cap_variant("CN-SH-MET-FEED-INLINE").split("?>", 1)[1].strip()
    polled: list[str] = []

    class Feed(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            polled.append(self.path)
            body = linked if self.path == "/linked.xml" else ATOM.format(base=base, inline=inline).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Feed)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    document = yaml.safe_load(lab.plan.read_text())
    document["intake"] = {**document["intake"], "feeds": [{"url": f"{base}/feed.atom", "every_seconds": 5}]}
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(document, allow_unicode=True))
    before = len(intake.runs())
    log = tmp_path / "intake.log"
    process = subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", "intake", "--plan", str(plan),
                                "--host", "127.0.0.1", "--port", str(free_port())], env=os.environ.copy(),
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        # each poll starts its runs through the session's Prefect server, which a loaded machine slows: be patient
        try:
            wait_for(lambda: polled.count("/feed.atom") >= 2 or process.poll() is not None, 240, "two polls")
        except AssertionError:
            raise AssertionError(f"the feed was polled {polled}; intake said: {log.read_text(errors='replace')[-2000:]}") from None
        assert process.poll() is None, f"intake ended: {log.read_text(errors='replace')}"
    finally:
        process.terminate()
        process.wait(10)
        server.shutdown()
    runs = intake.runs()
    started = [run for run in runs if run["parameters"]["alert"]["identifier"].startswith("CN-SH-MET-FEED-")]
    assert sorted(run["parameters"]["alert"]["identifier"] for run in started) == \
        ["CN-SH-MET-FEED-INLINE", "CN-SH-MET-FEED-LINKED"]
    assert len(runs) == before + 2
