"""CAP 1.2 (OASIS Common Alerting Protocol): parsed with defusedxml, validated against the standard's schema."""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from lifeline.tasks.adapters.alerts import MAX_BYTES, SEVERITIES, Alert, Area, MalformedAlert

NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
SCHEMA_FILE = Path(__file__).with_name("cap-1.2.xsd")

KIND_OF_CATEGORY = {
    "Met": "weather", "Geo": "natural-disaster", "Fire": "natural-disaster", "Env": "natural-disaster",
    "Rescue": "natural-disaster", "Security": "security", "Health": "public-health", "Infra": "network",
}
"""CAP categories Lifeline prepares for; the rest (Safety, Transport, CBRNE, Other) are `other`."""

KIND_PRIORITY = ("natural-disaster", "weather", "security", "public-health", "network", "other")


@cache
def schema():
    """The CAP 1.2 schema, loaded once (~0.8 s): `lifeline intake` loads it at start, not at the first warning."""
    import xmlschema

    return xmlschema.XMLSchema(str(SCHEMA_FILE))


def key_of(sender: str, identifier: str) -> str:
    """CAP identifies an alert by its sender and identifier (section 3.2.1)."""
    return f"cap:{sender}:{identifier}"


def parse_element(text: bytes | str) -> Element:
    """Safely: no entities, no external references, no DTDs (defusedxml)."""
    if len(text) > MAX_BYTES:
        raise MalformedAlert(f"the CAP message is larger than {MAX_BYTES} bytes")
    try:
        return fromstring(text, forbid_dtd=True)
    except DefusedXmlException as refused:
        raise MalformedAlert(f"the XML is refused: {type(refused).__name__} (entities and DTDs are not allowed)") from None
    except ParseError as error:
        raise MalformedAlert(f"the body is not well-formed XML: {error}") from None


def parse_cap(text: bytes | str) -> Alert:
    return alert_from_element(parse_element(text))


def alert_from_element(root: Element) -> Alert:
    if root.tag != f"{{{NAMESPACE}}}alert":
        raise MalformedAlert(f"not a CAP 1.2 alert: the root element is {root.tag!r}, "
                             f"expected 'alert' in namespace {NAMESPACE}")
    error = next(iter(schema().iter_errors(root)), None)
    if error is not None:
        where = re.sub(r"\{[^}]*\}", "", error.path or "/alert")  # /alert/info/severity
        raise MalformedAlert(f"not valid CAP 1.2 at {where}: {error.reason}")
    sender, identifier = _text(root, "sender"), _text(root, "identifier")
    infos = root.findall(_tag("info"))
    first = _preferred_info(infos)
    categories = [c.text for info in infos for c in info.findall(_tag("category"))]
    kinds = {KIND_OF_CATEGORY.get(category, "other") for category in categories} or {"other"}
    severity = max((_text(info, "severity").lower() for info in infos), key=SEVERITIES.index, default="unknown")
    expires = [_text(info, "expires") for info in infos if _text(info, "expires")]
    return Alert(
        source="cap", key=key_of(sender, identifier), identifier=identifier, sender=sender,
        sent=datetime.fromisoformat(_text(root, "sent")),
        status=_text(root, "status").lower(),
        message_type=_text(root, "msgType").lower(),
        references=_references(_text(root, "references")),
        kind=next(kind for kind in KIND_PRIORITY if kind in kinds),
        severity=severity,
        event=_text(first, "event") if first is not None else "",
        headline=_text(first, "headline") if first is not None else "",
        description=_text(first, "description") if first is not None else "",
        instruction=_text(first, "instruction") if first is not None else "",
        areas=[_area(area) for info in infos for area in info.findall(_tag("area"))],
        expires=max(map(datetime.fromisoformat, expires)) if expires else None,
    )


def _tag(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def _text(element: Element | None, name: str) -> str:
    found = None if element is None else element.find(_tag(name))
    return (found.text or "").strip() if found is not None else ""


def _preferred_info(infos: list[Element]) -> Element | None:
    """The English block when there is one (a headline any recipient reads), else the first."""
    for info in infos:
        if (_text(info, "language") or "en-US").lower().startswith("en"):
            return info
    return infos[0] if infos else None


def _references(text: str) -> list[str]:
    """`sender,identifier,sent` triples separated by spaces (section 3.2.1, references)."""
    keys = []
    for triple in text.split():
        parts = triple.split(",")
        if len(parts) != 3:
            raise MalformedAlert(f"references: {triple!r} is not sender,identifier,sent")
        keys.append(key_of(parts[0], parts[1]))
    return keys


def _area(element: Element) -> Area:
    try:
        return Area(
            description=_text(element, "areaDesc"),
            geocodes=[(_text(code, "valueName"), _text(code, "value")) for code in element.findall(_tag("geocode"))],
            polygons=[_points(polygon.text or "") for polygon in element.findall(_tag("polygon"))],
            circles=[_circle(circle.text or "") for circle in element.findall(_tag("circle"))],
        )
    except (ValueError, IndexError):
        raise MalformedAlert(f"area {_text(element, 'areaDesc')!r}: a polygon or circle is not "
                             "'lat,lon lat,lon ...' / 'lat,lon radius'") from None


def _points(text: str) -> list[tuple[float, float]]:
    points = [tuple(float(value) for value in pair.split(",")) for pair in text.split()]
    if len(points) < 4 or any(len(point) != 2 for point in points):
        raise ValueError("a polygon needs four or more points")
    return points  # type: ignore[return-value]


def _circle(text: str) -> tuple[float, float, float]:
    centre, radius = text.split()
    latitude, longitude = (float(value) for value in centre.split(","))
    return latitude, longitude, float(radius)


CATEGORY_OF_KIND = {"weather": "Met", "natural-disaster": "Geo", "network": "Infra", "security": "Security",
                    "public-health": "Health", "other": "Other"}


def compose_cap(*, identifier: str, sender: str, sent: datetime, status: str = "Exercise", message_type: str = "Alert",
                kind: str = "weather", severity: str = "Severe", headline: str, area: str,
                geocodes: list[tuple[str, str]] = (), references: list[str] = ()) -> bytes:
    """A CAP 1.2 message (as the drills and the benchmark post it); `references` are sender,identifier,sent."""
    def child(parent: Element, name: str, text: str) -> Element:
        element = SubElement(parent, _tag(name))
        element.text = text
        return element

    alert = Element(_tag("alert"))
    for name, text in (("identifier", identifier), ("sender", sender), ("sent", cap_time(sent)), ("status", status),
                       ("msgType", message_type), ("scope", "Public")):
        child(alert, name, text)
    if references:
        child(alert, "references", " ".join(references))
    info = SubElement(alert, _tag("info"))
    for name, text in (("category", CATEGORY_OF_KIND[kind]), ("event", headline), ("urgency", "Expected"),
                       ("severity", severity.capitalize()), ("certainty", "Likely"), ("headline", headline)):
        child(info, name, text)
    where = SubElement(info, _tag("area"))
    child(where, "areaDesc", area)
    for name, value in geocodes:
        code = SubElement(where, _tag("geocode"))
        child(code, "valueName", name)
        child(code, "value", value)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(alert, encoding="utf-8", xml_declaration=False,
                                                                 default_namespace=NAMESPACE)


def cap_time(moment: datetime) -> str:
    """CAP's form: seconds, and an explicit offset (never "Z")."""
    text = moment.isoformat(timespec="seconds")
    return text.replace("+00:00", "-00:00") if text.endswith("+00:00") else text


def reference_to(sender: str, identifier: str, sent: datetime) -> str:
    return f"{sender},{identifier},{cap_time(sent)}"
