"""A SIP user agent client: place one call through an SBC, optionally record what is played to it.

Blocking and single-call (one UDP socket for signalling, one for RTP): the call generator runs
many at once in threads, a verification runs one. The outcome follows a caller's view:
``answered`` (2xx), ``failed`` (a final error, or nothing at all from the SBC), ``abandoned``
(ringing, but no answer within the answer timeout: the caller hangs up with CANCEL).
"""

from __future__ import annotations

import secrets
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from lifeline.tasks.adapters.sip import messages
from lifeline.tasks.adapters.sip.messages import SipMessage
from lifeline.tasks.adapters.sip.rtp import Listening, listen, payload_of, stream

Outcome = Literal["answered", "failed", "abandoned"]
T1_SECONDS = 0.5  # RFC 3261's retransmission interval
USER_AGENT = "lifeline"


@dataclass(frozen=True)
class SipEndpoint:
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CallResult:
    outcome: Outcome
    status: int | None
    reason: str
    answered_by: str | None  # host:port of the answering user agent's Contact
    headers: dict[str, str] = field(default_factory=dict)  # of the final response, lower-case names
    setup_seconds: float = 0.0
    audio: bytes = b""
    packets: int = 0

    @property
    def listening(self) -> Listening:
        return listen(self.audio, self.packets)

    @property
    def summary(self) -> str:
        if self.outcome == "answered":
            return f"answered by {self.answered_by} in {self.setup_seconds:.3f} s"
        return f"{self.outcome}: {self.status or 'no answer'} {self.reason}".strip()


class _Dialog:
    def __init__(self, sbc: SipEndpoint, number: str, caller_id: str, local: tuple[str, int]) -> None:
        self.sbc, self.number, self.caller_id, self.local = sbc, number, caller_id, local
        self.call_id = f"{secrets.token_hex(10)}@{local[0]}"
        self.from_tag = messages.new_tag()
        self.invite_branch = messages.new_branch()
        self.request_uri = f"sip:{number}@{sbc.host}:{sbc.port}"
        self.to = f"<sip:{number}@{sbc.host}>"
        self.remote_target = self.request_uri
        self.route_set: list[str] = []

    def _request(self, method: str, cseq: int, branch: str, uri: str, to: str,
                 extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> SipMessage:
        host, port = self.local
        headers = [("via", f"SIP/2.0/UDP {host}:{port};branch={branch};rport"), ("max-forwards", "70"),
                   ("from", f"<sip:{self.caller_id}@{host}>;tag={self.from_tag}"), ("to", to),
                   ("call-id", self.call_id), ("cseq", f"{cseq} {method}"), *(extra or [])]
        if body:
            headers.append(("content-type", "application/sdp"))
        return SipMessage(f"{method} {uri} SIP/2.0", headers, body)

    def invite(self, offer: bytes) -> SipMessage:
        host, port = self.local
        return self._request("INVITE", 1, self.invite_branch, self.request_uri, self.to,
                             [("contact", f"<sip:{self.caller_id}@{host}:{port}>"), ("user-agent", USER_AGENT)],
                             offer)

    def hop_by_hop(self, method: str, final_to: str | None = None) -> SipMessage:
        """ACK of a failure, or CANCEL: same branch and URI as the INVITE."""
        return self._request(method, 1, self.invite_branch, self.request_uri, final_to or self.to)

    def establish(self, answer: SipMessage) -> None:
        self.to = answer.header("to") or self.to
        contact = answer.header("contact")
        if contact:
            self.remote_target = messages.uri_of(contact)
        self.route_set = [messages.uri_of(value) for value in reversed(answer.all("record-route"))]

    def in_dialog(self, method: str, cseq: int) -> SipMessage:
        routes = [("route", f"<{uri}>") for uri in self.route_set]
        return self._request(method, cseq, messages.new_branch(), self.remote_target, self.to, routes)

    @property
    def next_hop(self) -> tuple[str, int]:
        return messages.host_port_of(self.route_set[0] if self.route_set else self.remote_target, self.sbc.port)


def place_call(sbc: SipEndpoint, number: str, caller_id: str, *, answer_timeout: float = 5.0,
               record_seconds: float = 0.0, hold_seconds: float = 0.0, play: bytes = b"",
               local_address: str | None = None) -> CallResult:
    """Call `number` through `sbc` as `caller_id`.

    With `record_seconds`, the call offers to receive audio and keeps what arrives until the far
    end hangs up or the time is over. With `play` (µ-law), it plays that once answered, then hangs
    up (`packets` counts what was sent). Otherwise it offers no media and hangs up after `hold_seconds`.
    `local_address`: where to take signalling and audio; default the address that routes to the SBC.
    """
    local_address = local_address or address_towards(sbc)
    signalling = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        signalling.bind((local_address, 0))
        media.bind((local_address, 0))
        dialog = _Dialog(sbc, number, caller_id, signalling.getsockname())
        session = secrets.randbelow(1 << 31)
        direction = "recvonly" if record_seconds > 0 else "sendonly" if play else "inactive"
        offer = messages.sdp(local_address, media.getsockname()[1], session, direction=direction)
        return _run_call(signalling, media, dialog, offer, answer_timeout, record_seconds, hold_seconds, play)
    finally:
        signalling.close()
        media.close()


def address_towards(sbc: SipEndpoint) -> str:
    """The local address the kernel would send from to reach the SBC (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((sbc.host, sbc.port))
        except OSError:
            return "127.0.0.1"
        return probe.getsockname()[0]


def _receive(sock: socket.socket, timeout: float) -> SipMessage | None:
    ready, _, _ = select.select([sock], [], [], max(timeout, 0.0))
    if not ready:
        return None
    try:
        datagram, _ = sock.recvfrom(65535)
    except OSError:  # an ICMP error from an earlier send
        return None
    return messages.parse(datagram)


def _run_call(signalling: socket.socket, media: socket.socket, dialog: _Dialog, offer: bytes, answer_timeout: float,
              record_seconds: float, hold_seconds: float, play: bytes) -> CallResult:
    sbc = (dialog.sbc.host, dialog.sbc.port)
    invite = dialog.invite(offer).encode()
    started = time.monotonic()
    deadline = started + answer_timeout
    retransmit_at, interval = started, T1_SECONDS
    provisional = ringing = False  # any 1xx stops retransmissions; 180/183 means a phone rings
    while True:
        now = time.monotonic()
        if now >= deadline:
            return _give_up(signalling, dialog, provisional, ringing, answer_timeout, started)
        if not provisional and now >= retransmit_at:
            signalling.sendto(invite, sbc)
            retransmit_at, interval = now + interval, min(interval * 2, 4.0)
        response = _receive(signalling, min(deadline, deadline if provisional else retransmit_at) - now)
        if response is None or not response.is_response or response.call_id != dialog.call_id or \
                response.cseq_method != "INVITE":
            continue
        if response.status < 200:
            provisional = True
            ringing = ringing or response.status in (180, 183)
            continue
        setup = round(time.monotonic() - started, 3)
        headers = {name: value for name, value in response.headers}
        if response.status >= 300:
            signalling.sendto(dialog.hop_by_hop("ACK", response.header("to")).encode(), sbc)
            return CallResult("failed", response.status, response.reason, None, headers, setup)
        dialog.establish(response)
        signalling.sendto(dialog.in_dialog("ACK", 1).encode(), dialog.next_hop)
        contact = response.header("contact")
        answered_by = "{}:{}".format(*messages.host_port_of(messages.uri_of(contact))) if contact else None
        if play:
            answer = messages.media_of(response.body)
            packets = _play(signalling, media, dialog, (answer.address, answer.port), play) if answer else 0
            return CallResult("answered", response.status, response.reason, answered_by, headers, setup, b"", packets)
        audio, packets = _converse(signalling, media, dialog, record_seconds if record_seconds > 0 else hold_seconds,
                                   record=record_seconds > 0)
        return CallResult("answered", response.status, response.reason, answered_by, headers, setup, audio, packets)


def _give_up(signalling: socket.socket, dialog: _Dialog, provisional: bool, ringing: bool, answer_timeout: float,
             started: float) -> CallResult:
    """No final answer in time: hang up (CANCEL once the SBC has the call). Ringing unanswered is abandoned."""
    waited = round(time.monotonic() - started, 3)
    if not provisional:
        return CallResult("failed", None, f"no response from the SBC {dialog.sbc.label} within {answer_timeout:g} s",
                          None, {}, waited)
    sbc = (dialog.sbc.host, dialog.sbc.port)
    signalling.sendto(dialog.hop_by_hop("CANCEL").encode(), sbc)
    give_up = time.monotonic() + 1.0
    while (left := give_up - time.monotonic()) > 0:
        response = _receive(signalling, left)
        if response is not None and response.is_response and response.cseq_method == "INVITE" and response.status >= 300:
            signalling.sendto(dialog.hop_by_hop("ACK", response.header("to")).encode(), sbc)
            break
    if ringing:
        return CallResult("abandoned", None, f"no answer within {answer_timeout:g} s of ringing", None, {}, waited)
    return CallResult("failed", None, f"no answer within {answer_timeout:g} s (the SBC was still trying)", None, {},
                      waited)


def _play(signalling: socket.socket, media: socket.socket, dialog: _Dialog, destination: tuple[str, int],
          audio: bytes) -> int:
    """Play `audio` to the far end in real time while watching for its BYE; then hang up ourselves."""
    hung_up = threading.Event()

    def watch() -> None:
        while not hung_up.is_set():
            request = _receive(signalling, 0.2)
            if request is not None and not request.is_response and request.method == "BYE":
                signalling.sendto(messages.response_to(request, 200, "OK").encode(), dialog.next_hop)
                hung_up.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sent = stream(media, destination, audio, hung_up)
    if not hung_up.is_set():
        hung_up.set()
        watcher.join()
        _converse(signalling, media, dialog, 0.0, record=False)  # sends BYE
    return sent


def _converse(signalling: socket.socket, media: socket.socket, dialog: _Dialog, seconds: float,
              *, record: bool) -> tuple[bytes, int]:
    """Keep the call up for `seconds` (recording what arrives), or until the far end hangs up."""
    audio = bytearray()
    packets = 0
    ends = time.monotonic() + seconds
    while (left := ends - time.monotonic()) > 0:
        ready, _, _ = select.select([signalling, media], [], [], left)
        if media in ready:
            datagram, _ = media.recvfrom(2048)
            payload = payload_of(datagram) if record else None
            if payload is not None:
                audio += payload
                packets += 1
        if signalling in ready:
            request = _receive(signalling, 0)
            if request is None:
                continue
            if request.is_response and request.status >= 200 and request.cseq_method == "INVITE":
                signalling.sendto(dialog.in_dialog("ACK", 1).encode(), dialog.next_hop)  # our ACK was lost
            elif not request.is_response and request.method == "BYE" and request.call_id == dialog.call_id:
                signalling.sendto(messages.response_to(request, 200, "OK").encode(), dialog.next_hop)
                return bytes(audio), packets
    bye = dialog.in_dialog("BYE", 2).encode()
    for _ in range(3):
        signalling.sendto(bye, dialog.next_hop)
        response = _receive(signalling, T1_SECONDS)
        if response is not None and response.is_response and response.cseq_method == "BYE":
            break
    return bytes(audio), packets
