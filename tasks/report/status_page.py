"""The public status page, as Statuspage or Cachet show one: components with their status, and every
incident's updates in Chinese and English; static HTML and the same facts as JSON."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from lifeline.configs.alerts import StatusPage
from lifeline.tasks.report.document import render_template
from lifeline.tasks.run.public import StatusUpdate

STATUS_NAMES = {
    "operational": {"zh": "正常运行", "en": "Operational"},
    "degraded": {"zh": "性能下降", "en": "Degraded performance"},
    "partial_outage": {"zh": "部分中断", "en": "Partial outage"},
    "major_outage": {"zh": "严重中断", "en": "Major outage"},
    "maintenance": {"zh": "维护中", "en": "Under maintenance"},
}


def page_facts(page: StatusPage, updates: list[StatusUpdate], timezone: str, now: datetime) -> dict:
    """What the page shows, as JSON-ready data: the latest status of each component, and the incidents,
    newest first, each with its updates newest first. A resolved incident stays resolved: an update posted
    after it (a warning's preparation finishing after its sender cancelled it) is listed, and changes nothing."""
    zone = ZoneInfo(timezone)
    current = {name: "operational" for name in page.components}
    incidents: dict[str, dict] = {}
    for update in updates:
        incident = incidents.setdefault(update.incident, {"id": update.incident, "title": update.title,
                                                          "exercise": update.exercise, "updates": []})
        if not incident.get("resolved"):
            current.update({name: status for name, status in update.components.items() if name in current})
            incident.update(title=update.title, resolved=update.resolved)
        incident["updates"].insert(0, {"at": update.at.astimezone(zone).isoformat(timespec="seconds"),
                                       "text": update.text, "components": update.components})
    ordered = sorted(incidents.values(), key=lambda incident: incident["updates"][0]["at"], reverse=True)
    return {
        "title": page.title,
        "updated_at": now.astimezone(zone).isoformat(timespec="seconds"),
        "timezone": timezone,
        "components": [{"id": name, "name": component.name, "status": current[name],
                        "status_name": STATUS_NAMES[current[name]]} for name, component in page.components.items()],
        "incidents": ordered,
    }


def render_html(facts: dict) -> str:
    return render_template("status_page.html", page=facts, status_names=STATUS_NAMES)


def render_json(facts: dict) -> str:
    return json.dumps(facts, ensure_ascii=False, indent=2)
