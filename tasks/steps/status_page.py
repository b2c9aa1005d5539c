"""The public status page: what a run posts there, only once a person approved the text in the run's form.

A failover posts when it starts (components in partial outage) and when it has recovered; a failback when it is
done; an alert run when its warning came in; a drill's posts are marked as an exercise. Every post is kept in the
ledger; the page (index.html and status.json) is rendered from all of them and written to the plan's bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifeline.configs.messages import PUBLIC_TEMPLATES, Localized, render_text
from lifeline.configs.plan import Plan
from lifeline.tasks.adapters.aws import AwsError, AwsSession
from lifeline.tasks.report.status_page import page_facts, render_html, render_json
from lifeline.tasks.run.adapter_inputs import aws_session
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.public import ComponentStatus, StatusUpdate, StatusUpdates
from lifeline.tasks.run.record import Journal, utc_now

STATUS_OF_EVENT: dict[str, ComponentStatus | None] = {
    "failover_started": "partial_outage", "recovered": "operational", "failback_done": "operational",
    "alert_received": None,  # a warning changes no component's status
    "alert_cancelled": None,
}


@dataclass(frozen=True)
class Published:
    url: str
    json_url: str
    facts: dict


def _session(plan: Plan) -> AwsSession:
    aws = plan.aws
    if aws is None:
        raise AwsError("status_page: the plan has no `aws` section to reach its bucket with")
    return aws_session(aws)


def _key(plan: Plan, name: str) -> str:
    prefix = plan.status_page.prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def page_url(plan: Plan, name: str = "index.html") -> str:
    page = plan.status_page
    if page.public_url:
        return f"{page.public_url.rstrip('/')}/{name}"
    return _session(plan).object_url(page.bucket, _key(plan, name))


def public_text(plan: Plan, event: str, fields: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(title, text), each in zh and en: the plan's `templates.EVENT.customers`, else Lifeline's public default."""
    localized: Localized = plan.templates.get(event, {}).get("customers") or PUBLIC_TEMPLATES[event]
    values = {"plan": plan.name, "hotline": plan.hotline or "—", **fields}
    title = {language: render_text(getattr(localized, language).subject, values) for language in ("zh", "en")}
    text = {language: render_text(getattr(localized, language).body, values) for language in ("zh", "en")}
    return title, text


def publish(plan: Plan, ledger: Ledger) -> Published:
    """Render the page from every post in the ledger and write it to the bucket."""
    facts = page_facts(plan.status_page, StatusUpdates(ledger).of_plan(plan.name), plan.timezone, utc_now())
    session, bucket = _session(plan), plan.status_page.bucket
    session.put_object(bucket, _key(plan, "status.json"), render_json(facts).encode(), "application/json; charset=utf-8")
    session.put_object(bucket, _key(plan, "index.html"), render_html(facts).encode(), "text/html; charset=utf-8")
    return Published(page_url(plan), page_url(plan, "status.json"), facts)


@dataclass
class RunPosts:
    """A run's posts (`Journal.public`). Nothing goes out before a person approved the text in the run's form;
    a drill's posts are exercises, approved by whoever started the drill."""

    plan: Plan
    ledger: Ledger
    journal: Journal
    approved_by: str = ""

    @property
    def exercise(self) -> bool:
        record = self.journal.record
        return record.kind == "drill" or (record.kind == "alert" and bool(self.journal.message_fields.get("exercise")))

    @property
    def approver(self) -> str:
        if self.approved_by:
            return self.approved_by
        return f"drill ({self.journal.record.trigger})" if self.journal.record.kind == "drill" else ""

    def _values(self) -> dict:
        return self.journal.message_fields

    def preview(self, events: list[str]) -> str:
        lines = ["", "**Public status page** — this text goes out when you approve:", ""]
        for event in events:
            title, text = public_text(self.plan, event, self._values())
            lines += [f"- *{title['en']}* — {text['en']}", f"  *{title['zh']}* — {text['zh']}"]
        return "\n".join(lines)

    def approve(self, by: str) -> None:
        self.approved_by = by or "unnamed"

    def post(self, event: str, *, resolved: bool = False) -> None:
        name = f"status page: {event.replace('_', ' ')}"
        if not self.approver:
            self.journal.record_skipped(name, "nobody approved the public text")
            return
        record = self.journal.record
        with self.journal.step(name) as entry:
            title, text = public_text(self.plan, event, self._values())
            status = STATUS_OF_EVENT[event]
            components = {} if status is None else dict.fromkeys(self.plan.status_page.components, status)
            StatusUpdates(self.ledger).add(StatusUpdate(
                plan=self.plan.name, title=title, text=text, components=components, resolved=resolved,
                incident=str(self.journal.message_fields.get("incident") or record.parent_id or record.id),
                exercise=self.exercise, approved_by=self.approver, run_id=record.id))
            try:
                published = publish(self.plan, self.ledger)
            except AwsError as error:  # the post is kept: the next one publishes it too
                entry.status = "warning"
                entry.detail["error"] = str(error)
                return
            entry.detail.update(url=published.url, approved_by=self.approver, exercise=self.exercise,
                                title=title["en"])
