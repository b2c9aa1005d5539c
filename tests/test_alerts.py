"""Warnings parsed as their senders publish them: CAP 1.2 (validated against the schema), Alertmanager's
webhook v4 and the plain form; and matched to the sites they concern."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lifeline.configs.alerts import SiteArea
from lifeline.configs.plan import Site
from lifeline.tasks.adapters.alerts import MalformedAlert
from lifeline.tasks.adapters.alerts.alertmanager import parse_alertmanager
from lifeline.tasks.adapters.alerts.cap import parse_cap
from lifeline.tasks.adapters.alerts.plain import parse_plain
from lifeline.tasks.steps.alert_sites import matching_sites

DATA = Path(__file__).parent / "data"
TYPHOON = (DATA / "cap-typhoon.xml").read_text(encoding="utf-8")


def cap_variant(identifier: str, *, status: str = "Actual", message_type: str = "Alert", references: str = "") -> str:
    text = TYPHOON.replace("CN-SH-MET-20261204-0042", identifier).replace("<status>Actual", f"<status>{status}")
    text = text.replace("<msgType>Alert", f"<msgType>{message_type}")
    if references:
        text = text.replace("<scope>Public</scope>", f"<scope>Public</scope>\n  <references>{references}</references>")
    return text


def test_a_cap_warning_is_read_as_published_and_its_update_and_cancel_refer_back_to_it() -> None:
    alert = parse_cap(TYPHOON)
    assert (alert.kind, alert.severity, alert.status, alert.message_type) == ("weather", "severe", "actual", "alert")
    assert alert.headline == "Orange typhoon warning for Pudong"  # the English block is preferred
    assert ("ADCODE", "310115") in alert.areas[0].geocodes and len(alert.areas[1].polygons[0]) == 5
    first = "warning@sh-meteorological.example,CN-SH-MET-20261204-0042,2026-12-04T10:00:00+08:00"
    update = parse_cap(cap_variant("CN-SH-MET-20261204-0050", message_type="Update", references=first))
    cancel = parse_cap(cap_variant("CN-SH-MET-20261204-0051", message_type="Cancel", references=first))
    assert update.references == cancel.references == [alert.key] and update.key != alert.key
    assert parse_cap(cap_variant("X-1", status="Exercise")).exercise


@pytest.mark.parametrize(("broken", "expected"), [
    (TYPHOON.replace("<severity>Severe</severity>", "<severity>Bad</severity>", 1), "severity"),
    (TYPHOON.replace("<msgType>Alert</msgType>\n", "", 1), "msgType"),
    (TYPHOON.replace("+08:00</sent>", "Z</sent>"), "sent"),
    (TYPHOON[:200], "not well-formed"),
    ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><alert/>', "DTD"),
    ("<alert/>", "not a CAP 1.2 alert"),
])
def test_malformed_cap_is_refused_naming_what_is_wrong(broken: str, expected: str) -> None:
    with pytest.raises(MalformedAlert, match=expected):
        parse_cap(broken)


def test_alertmanager_retries_are_one_alert_and_resolved_cancels_firing() -> None:
    payload = json.loads((DATA / "alertmanager-dr-link.json").read_text())
    firing, again = parse_alertmanager(payload), parse_alertmanager(json.loads(json.dumps(payload)))
    assert firing.key == again.key and (firing.kind, firing.severity) == ("network", "severe")
    resolved = parse_alertmanager({**payload, "status": "resolved"})
    assert resolved.message_type == "cancel" and resolved.references == [firing.key]
    with pytest.raises(MalformedAlert, match="groupKey"):
        parse_alertmanager({k: v for k, v in payload.items() if k != "groupKey"})


def test_sites_are_matched_by_geocode_polygon_labels_or_by_name() -> None:
    class Sites:  # the two fields matching reads
        sites = {"main": Site(area=SiteArea(location=(31.22, 121.54), geocodes=["ADCODE=310115"], labels={"site": "main"})),
                 "dr": Site(area=SiteArea(location=(30.27, 120.15), labels={"site": "dr"}))}

    typhoon = parse_cap(TYPHOON)
    assert matching_sites(Sites, typhoon) == {"main": "geocode ADCODE=310115"}  # type: ignore[arg-type]
    only_polygon = typhoon.model_copy(update={"areas": typhoon.areas[1:]})
    assert list(matching_sites(Sites, only_polygon)) == ["main"]  # type: ignore[arg-type]
    link = parse_alertmanager(json.loads((DATA / "alertmanager-dr-link.json").read_text()))
    assert matching_sites(Sites, link) == {"dr": "labels site=dr"}  # type: ignore[arg-type]
    named = parse_plain({"id": "p-1", "kind": "public-health", "headline": "Flu", "sites": ["dr"]})
    assert list(matching_sites(Sites, named)) == ["dr"]  # type: ignore[arg-type]
    with pytest.raises(MalformedAlert, match="kind"):
        parse_plain({"id": "p-2", "kind": "meteor", "headline": "x"})
