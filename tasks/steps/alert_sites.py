"""Which of the plan's sites a warning concerns: by CAP area (geocode, polygon, circle), Alertmanager labels,
or the sites a plain alert names."""

from __future__ import annotations

from lifeline.configs.alerts import SiteArea
from lifeline.configs.plan import Plan
from lifeline.tasks.adapters.alerts import Alert
from lifeline.tasks.adapters.alerts.areas import covers


def matching_sites(plan: Plan, alert: Alert) -> dict[str, str]:
    """Site → why the alert concerns it."""
    if alert.source == "json" and not alert.sites:
        return dict.fromkeys(plan.sites, "a plain alert naming no site concerns every site")
    found: dict[str, str] = {}
    for name, site in plan.sites.items():
        if alert.sites:
            if name in alert.sites:
                found[name] = "named by the alert"
        elif site.area is not None and (why := _covered(site.area, alert)):
            found[name] = why
    return found


def _covered(area: SiteArea, alert: Alert) -> str | None:
    if area.labels and all(alert.labels.get(key) == value for key, value in area.labels.items()):
        return "labels " + ", ".join(f"{key}={value}" for key, value in area.labels.items())
    for alert_area in alert.areas:
        if why := covers(alert_area, location=area.location, geocodes=area.geocode_pairs()):
            return why
    return None
