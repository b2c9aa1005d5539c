"""Atom feeds of CAP alerts, as national weather services publish them: each entry links to (or holds) a CAP message."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from lifeline.tasks.adapters.alerts import Alert, MalformedAlert
from lifeline.tasks.adapters.alerts.cap import NAMESPACE, alert_from_element, parse_cap, parse_element

ATOM = "{http://www.w3.org/2005/Atom}"


@dataclass(frozen=True)
class FeedEntry:
    entry_id: str
    alert: Alert | None
    problem: str | None = None


def read_feed(url: str, timeout: float = 10.0) -> list[FeedEntry]:
    """Every entry of the feed as a parsed alert, or with the problem that kept it from being one."""
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        response = client.get(url)
        response.raise_for_status()
        feed = parse_element(response.content)
        if feed.tag != f"{ATOM}feed":
            raise MalformedAlert(f"{url}: not an Atom feed (root {feed.tag!r})")
        entries = []
        for entry in feed.findall(f"{ATOM}entry"):
            entry_id = (entry.findtext(f"{ATOM}id") or "").strip()
            try:
                entries.append(FeedEntry(entry_id, _entry_alert(client, entry)))
            except (MalformedAlert, httpx.HTTPError) as problem:
                entries.append(FeedEntry(entry_id, None, str(problem)))
        return entries


def _entry_alert(client: httpx.Client, entry) -> Alert:
    inline = entry.find(f"{ATOM}content/{{{NAMESPACE}}}alert")
    if inline is not None:
        return alert_from_element(inline)
    links = [link.get("href") for link in entry.findall(f"{ATOM}link")
             if link.get("href") and link.get("type", "").endswith(("cap+xml", "/xml"))]
    links = links or [link.get("href") for link in entry.findall(f"{ATOM}link") if link.get("href")]
    if not links:
        raise MalformedAlert("the entry has neither a CAP message nor a link to one")
    response = client.get(links[0])
    response.raise_for_status()
    return parse_cap(response.content)
