"""`lifeline intake`: the HTTP service warnings are posted to, and the feeds it polls.

POST /v1/alerts/cap (CAP 1.2 XML), /v1/alerts/alertmanager (webhook v4) and /v1/alerts (the plain JSON form),
each with `Authorization: Bearer <the plan's intake.token_file>`. A new warning that the plan prepares for
starts a run of the `<plan>-alert` deployment: 202 {"run_id", "flow_run_id"}; the same warning again gets
200 with the same run id, however many times and however concurrently it comes. A warning the plan does not
prepare for (no matching site, a kind without preparedness, below its severity) is kept in the ledger: 200
with `run_id` null and the reason.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass

from lifeline.configs.loading import LoadedPlan
from lifeline.configs.settings import load_settings
from lifeline.flows.serve import deployment_name
from lifeline.tasks.adapters.alerts import MAX_BYTES, Alert, MalformedAlert
from lifeline.tasks.adapters.alerts.alertmanager import parse_alertmanager
from lifeline.tasks.adapters.alerts.cap import parse_cap
from lifeline.tasks.adapters.alerts.feeds import read_feed
from lifeline.tasks.adapters.alerts.plain import parse_plain
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.public import Alerts, TakenAlert
from lifeline.tasks.steps.alert_sites import matching_sites
from lifeline.tasks.steps.preparedness import original_run

ALERT_FLOW = "alert"


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict


def read_token(loaded: LoadedPlan) -> str:
    token = loaded.plan.intake.token_file.read_text().strip()
    if len(token) < 16:
        raise MalformedAlert(f"intake.token_file: {loaded.plan.intake.token_file} holds fewer than 16 characters")
    return token


class Intake:
    """Takes warnings for one plan: decides, records once per key, starts the run."""

    def __init__(self, loaded: LoadedPlan, token: str) -> None:
        self.loaded, self.plan = loaded, loaded.plan
        self._token = token.encode()
        self.ledger = Ledger(load_settings().ledger)
        self.alerts = Alerts(self.ledger)

    def authorised(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    def why_not(self, alert: Alert, sites: dict[str, str]) -> str | None:
        """Why this warning starts no run (None: it starts one)."""
        if alert.message_type == "cancel":
            return None if original_run(self.ledger, alert) else "it cancels a warning that started no run"
        if not sites:
            return "it concerns none of the plan's sites"
        preparation = self.plan.preparedness.get(alert.kind)  # type: ignore[call-overload]
        if preparation is None:
            return f"the plan has no preparedness for {alert.kind} warnings"
        if not alert.severity_at_least(preparation.min_severity):
            return f"severity {alert.severity} is below preparedness.{alert.kind}.min_severity {preparation.min_severity}"
        return None

    def take(self, alert: Alert) -> Answer:
        sites = matching_sites(self.plan, alert)
        reason = self.why_not(alert, sites)
        taken = TakenAlert(key=alert.key, plan=self.plan.name, outcome="ignored" if reason else "started",
                           run_id=None if reason else uuid.uuid4().hex[:12], reason=reason or "",
                           refers_to=alert.references, alert=alert.model_dump(mode="json"))
        new, taken = self.alerts.take(taken)
        if not new:
            return Answer(200, self._body(taken, duplicate=True))
        if taken.outcome == "started":
            try:
                taken.flow_run_id = self._start_run(alert, taken.run_id)
            except Exception as error:  # noqa: BLE001 - the sender retries; the key must not stay taken
                self.alerts.release(alert.key)
                return Answer(503, {"error": f"could not start the alert run: {type(error).__name__}: {error}"})
            self.alerts.update(taken)
        return Answer(202 if taken.outcome == "started" else 200, self._body(taken, duplicate=False))

    def _body(self, taken: TakenAlert, duplicate: bool) -> dict:
        return {"run_id": taken.run_id, "flow_run_id": taken.flow_run_id, "key": taken.key,
                "duplicate": duplicate, **({"ignored": taken.reason} if taken.outcome == "ignored" else {})}

    def _start_run(self, alert: Alert, record_id: str) -> str:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"{ALERT_FLOW}/{deployment_name(self.plan.name, ALERT_FLOW)}")
            created = client.create_flow_run_from_deployment(
                deployment.id, parameters={"alert": alert.model_dump(mode="json"), "record_id": record_id},
                name=f"alert-{record_id}", tags=["lifeline", f"plan:{self.plan.name}", f"run:{record_id}",
                                                *(["exercise"] if alert.exercise else [])])
        return str(created.id)


def asgi_app(intake: Intake):
    """The Starlette application: three routes, a bearer token, a size limit, 400 with the reason."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def parser(kind: str):
        async def endpoint(request: Request) -> JSONResponse:
            if not intake.authorised(request.headers.get("authorization")):
                return JSONResponse({"error": "a valid bearer token is required"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            too_large = JSONResponse({"error": f"the body is larger than {MAX_BYTES} bytes"}, status_code=413)
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_BYTES:
                return too_large  # said up front: refused before it is read
            body = await request.body()
            if len(body) > MAX_BYTES:
                return too_large
            try:
                alert = await run_in_threadpool(parse, kind, body)
            except MalformedAlert as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            answer = await run_in_threadpool(intake.take, alert)
            return JSONResponse(answer.body, status_code=answer.status_code)
        return endpoint

    async def health(request: Request) -> JSONResponse:  # for a load balancer: no token, and nothing to learn
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/v1/alerts/cap", parser("cap"), methods=["POST"]),
        Route("/v1/alerts/alertmanager", parser("alertmanager"), methods=["POST"]),
        Route("/v1/alerts", parser("json"), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])


def parse(kind: str, body: bytes) -> Alert:
    if kind == "cap":
        return parse_cap(body)
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise MalformedAlert(f"the body is not JSON: {error}") from None
    return parse_alertmanager(payload) if kind == "alertmanager" else parse_plain(payload)


def poll_feeds(intake: Intake, stop: threading.Event, log) -> list[threading.Thread]:
    """One thread per feed of the plan: every entry taken like a posted alert (the key keeps it to one run)."""
    threads = []
    for feed in intake.plan.intake.feeds:
        def poll(url: str = feed.url, every: float = feed.every_seconds) -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    for entry in read_feed(url):
                        if entry.alert is None:
                            log(f"feed {url}: entry {entry.entry_id}: {entry.problem}")
                        else:
                            intake.take(entry.alert)
                except Exception as error:  # noqa: BLE001 - the next poll tries again
                    log(f"feed {url}: {type(error).__name__}: {error}")
                stop.wait(max(0.0, every - (time.monotonic() - started)))
        thread = threading.Thread(target=poll, name=f"feed-{feed.url}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads
