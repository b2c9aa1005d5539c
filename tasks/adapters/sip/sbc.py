"""The carrier-side SBC's control interface: Kamailio's JSON-RPC over HTTP (jsonrpcs + xhttp).

Routing: the dispatcher module's destinations of one group, each ``A``ctive, ``I``nactive or
``D``isabled (``dispatcher.list``, ``dispatcher.set_state``). Agents: the registrar's location
table (``ul.dump``), whose address-of-record domains name the sites (``agent-3@dr.lab``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from lifeline.tasks.adapters.errors import LifelineError

DestinationState = Literal["active", "inactive", "disabled"]
STATE_LETTERS: dict[DestinationState, str] = {"active": "a", "inactive": "i", "disabled": "d"}


class SbcError(LifelineError):
    pass


@dataclass(frozen=True)
class Destination:
    uri: str
    flags: str  # Kamailio's: A/I/D, then P when probing
    attributes: str

    @property
    def state(self) -> DestinationState:
        return {"A": "active", "I": "inactive", "D": "disabled"}.get(self.flags[:1], "inactive")  # type: ignore[return-value]


class KamailioRpc:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    def call(self, method: str, *parameters: Any) -> Any:
        request = {"jsonrpc": "2.0", "method": method, "params": list(parameters), "id": 1}
        try:
            response = httpx.post(self.url, json=request, timeout=self.timeout)
        except httpx.TransportError as error:
            failure = SbcError(f"the SBC's RPC at {self.url} does not answer ({str(error) or type(error).__name__})")
            failure.transient = True
            raise failure from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("error"):  # Kamailio answers a refused command with HTTP 500
            error = answer["error"]
            raise SbcError(f"the SBC refused {method} {' '.join(map(str, parameters))}: "
                           f"{error.get('message', error) if isinstance(error, dict) else error}")
        if response.status_code != 200 or not isinstance(answer, dict):
            failure = SbcError(f"the SBC's RPC at {self.url} answered HTTP {response.status_code} to {method}"
                               + ("" if isinstance(answer, dict) else " without JSON"))
            failure.transient = response.status_code >= 500
            raise failure
        return answer.get("result")

    def destinations(self, group: int) -> list[Destination]:
        """The dispatcher's destinations of `group`, as the SBC holds them now."""
        return destinations_in(self.call("dispatcher.list"), group)

    def states(self, group: int) -> dict[str, DestinationState]:
        """URI → state of each destination of `group`."""
        return {destination.uri: destination.state for destination in self.destinations(group)}

    def set_state(self, group: int, uri: str, state: DestinationState) -> None:
        self.call("dispatcher.set_state", STATE_LETTERS[state], group, uri)

    def registered(self) -> dict[str, list[str]]:
        """Address of record → its contacts, from the registrar's location table."""
        return registered_in(self.call("ul.dump"))


def destinations_in(result: Any, group: int) -> list[Destination]:
    """The destinations of `group` in a `dispatcher.list` result (targets come in no fixed order)."""
    for record in (result or {}).get("RECORDS") or [] if isinstance(result, dict) else []:
        dispatcher_set = record.get("SET") or {}
        if int(dispatcher_set.get("ID", -1)) == group:
            return [_destination(target.get("DEST") or {}) for target in dispatcher_set.get("TARGETS") or []]
    return []


def _live_contacts(result: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(address of record, contact) for each contact not expired in a `ul.dump` result. Its `Domains` are
    usrloc's tables (`location`), not SIP domains."""
    for table in (result or {}).get("Domains") or [] if isinstance(result, dict) else []:
        for record in (table.get("Domain") or {}).get("AoRs") or []:
            info = record.get("Info") or {}
            for contact in info.get("Contacts") or []:
                details = contact.get("Contact") or {}
                if info.get("AoR") and details.get("Expires") not in ("expired", "deleted"):
                    yield str(info["AoR"]).removeprefix("sip:"), details


def registered_in(result: Any) -> dict[str, list[str]]:
    """Address of record (`agent-3@dr.lab`) → its live contacts, from a `ul.dump` result."""
    registered: dict[str, list[str]] = {}
    for address_of_record, contact in _live_contacts(result):
        registered.setdefault(address_of_record, []).append(str(contact.get("Address", "")))
    return registered


def seconds_left_in(result: Any) -> dict[str, float]:
    """Address of record → the longest time any of its live contacts has left, in seconds (infinite for a
    permanent one), from a `ul.dump` result (Kamailio gives each contact's `Expires` as seconds from now)."""
    left: dict[str, float] = {}
    for address_of_record, contact in _live_contacts(result):
        expires = contact.get("Expires")
        seconds = float(expires) if isinstance(expires, int | float) else float("inf")
        left[address_of_record] = max(left.get(address_of_record, 0.0), seconds)
    return left


def _destination(dest: dict[str, Any]) -> Destination:
    attributes = dest.get("ATTRS") or {}
    body = attributes.get("BODY", "") if isinstance(attributes, dict) else str(attributes)
    return Destination(uri=str(dest.get("URI", "")), flags=str(dest.get("FLAGS", "")), attributes=str(body))
