"""A site's PBX: the ACD that answers the calls the carrier routes here, and its IVR.

Listens for SIP on UDP (``ports.pbx_<site>``). An INVITE is answered only when the site's
call-centre service records the call in its CRM (``POST /calls``): the 200 OK carries the CRM's
call id in ``X-Lifeline-Call-Id`` and the site in ``X-Lifeline-Site``; when the CRM cannot take
the call the caller gets 503. A caller who offers to receive audio hears the IVR: the emergency
announcement if one is deployed (``ivr/emergency.ulaw``, raw 8 kHz G.711 µ-law), else the
greeting (``ivr/greeting.ulaw``), as RTP; then the IVR hangs up. OPTIONS is answered 200.

Runs as ``python -m lifeline.infra.lab.pbx --lab-dir DIR --site main``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lifeline.tasks.adapters.sip import messages, rtp
from lifeline.tasks.adapters.sip.messages import SipMessage

from .netns import TRUNK_ADDRESSES
from .state import LabPaths, LabState, load_state

EMERGENCY_ANNOUNCEMENT = "emergency.ulaw"
GREETING = "greeting.ulaw"
FORGET_CALLS_AFTER_SECONDS = 120.0


@dataclass
class Call:
    invite: SipMessage
    source: tuple[str, int]
    to_tag: str = field(default_factory=messages.new_tag)
    final: bytes | None = None
    acknowledged: bool = False
    hung_up: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)


class SipServer:
    """A user agent server on one UDP port: keeps its calls by Call-ID and answers what every UAS must
    (OPTIONS, retransmitted INVITEs, BYE, CANCEL). Subclasses answer INVITEs and take ACKs."""

    name = "sip"

    def __init__(self, address: str, port: int) -> None:
        self.address, self.port = address, port
        self.signalling = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.signalling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.signalling.bind((address, port))
        self.media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.media.bind((address, 0))
        self.calls: dict[str, Call] = {}
        self.lock = threading.Lock()
        self.workers = ThreadPoolExecutor(max_workers=32, thread_name_prefix=self.name)
        self.stopped = threading.Event()

    def send(self, message: SipMessage | bytes, destination: tuple[str, int]) -> None:
        try:
            self.signalling.sendto(message if isinstance(message, bytes) else message.encode(), destination)
        except OSError as error:
            print(f"send to {destination} failed: {error}", file=sys.stderr, flush=True)

    def serve(self) -> None:
        print(f"{self.name} on udp {self.address}:{self.port}", flush=True)
        self.signalling.settimeout(1.0)
        while not self.stopped.is_set():
            self.tick()
            try:
                datagram, source = self.signalling.recvfrom(65535)
            except TimeoutError:
                self._forget_old_calls()
                continue
            except OSError:
                continue
            message = messages.parse(datagram)
            if message is not None and not message.is_response:
                self._handle(message, source)

    def tick(self) -> None:
        """Called about once a second."""

    def _handle(self, request: SipMessage, source: tuple[str, int]) -> None:
        method = request.method
        with self.lock:
            call = self.calls.get(request.call_id)
        if method == "OPTIONS":
            self.send(messages.response_to(request, 200, "OK", to_tag=messages.new_tag(),
                                           extra=[("allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")]), source)
        elif method == "INVITE" and call is not None:
            if call.final is not None:
                self.send(call.final, source)  # a retransmitted INVITE gets the same answer
        elif method == "INVITE":
            call = Call(request, source)
            with self.lock:
                self.calls[request.call_id] = call
            self.send(messages.response_to(request, 100, "Trying"), source)
            self.send(messages.response_to(request, 180, "Ringing", to_tag=call.to_tag), source)
            self.workers.submit(self._answer, call)
        elif method == "ACK" and call is not None:
            if not call.acknowledged:
                call.acknowledged = True
                self._acknowledged(call)
        elif method == "BYE":
            self.send(messages.response_to(request, 200, "OK"), source)
            if call is not None:
                call.hung_up.set()
                self._forget(request.call_id)
                self._ended(call)
        elif method == "CANCEL":
            self.send(messages.response_to(request, 200, "OK"), source)
            if call is not None and call.final is None:
                call.hung_up.set()
                call.final = messages.response_to(call.invite, 487, "Request Terminated", to_tag=call.to_tag).encode()
                self.send(call.final, call.source)
        elif method != "ACK":
            self.send(messages.response_to(request, 405, "Method Not Allowed"), source)

    def _answer(self, call: Call) -> None:
        raise NotImplementedError

    def _acknowledged(self, call: Call) -> None:
        pass

    def _ended(self, call: Call) -> None:
        pass

    def _send_final(self, call: Call, response: SipMessage) -> None:
        """The final answer; a 200 OK again until its ACK arrives (RFC 3261 13.3.1.4)."""
        if call.hung_up.is_set():
            return
        call.final = response.encode()
        self.send(call.final, call.source)
        interval = 0.5
        while response.status == 200 and not call.acknowledged and not call.hung_up.wait(interval) and interval < 4:
            self.send(call.final, call.source)
            interval *= 2

    def _hang_up(self, call: Call) -> None:
        """BYE to the caller along the INVITE's route (as the UAS of the dialog)."""
        invite = call.invite
        contact = messages.uri_of(invite.header("contact") or invite.header("from") or "")
        routes = [("route", value) for value in invite.all("record-route")]
        headers = [("via", f"SIP/2.0/UDP {self.address}:{self.port};branch={messages.new_branch()};rport"),
                   ("max-forwards", "70"), *routes,
                   ("from", f"{invite.header('to')};tag={call.to_tag}"), ("to", invite.header("from") or ""),
                   ("call-id", invite.call_id), ("cseq", "1 BYE")]
        self.send(SipMessage(f"BYE {contact} SIP/2.0", headers), call.source)
        self._forget(invite.call_id)

    def _forget(self, call_id: str) -> None:
        with self.lock:
            self.calls.pop(call_id, None)

    def _forget_old_calls(self) -> None:
        now = time.monotonic()
        with self.lock:
            for call_id in [key for key, call in self.calls.items() if now - call.started > FORGET_CALLS_AFTER_SECONDS]:
                self.calls.pop(call_id).hung_up.set()


def listen_address(state: LabState, site: str) -> str:
    """Where a site's PBX takes calls: in a --netns lab the site's end of the carrier's trunk, else the site."""
    return TRUNK_ADDRESSES[site] if state.mode == "netns" else state.addresses.of(site)


class Pbx(SipServer):
    def __init__(self, paths: LabPaths, site: str) -> None:
        state = load_state(paths)
        if state is None:
            raise SystemExit(f"no lab state in {paths.root}")
        self.name = f"pbx-{site}"
        self.site = site
        self.ivr_dir = paths.ivr_dir(site)
        self.service = (state.addresses.of(site), state.ports.for_component(f"service-{site}"))
        super().__init__(listen_address(state, site), state.ports.for_component(f"pbx-{site}"))

    def _answer(self, call: Call) -> None:
        caller = messages.user_of(call.invite.header("from") or "")
        try:
            crm_call_id = self._record_in_crm(caller)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
            response = messages.response_to(call.invite, 503, "Service Unavailable", to_tag=call.to_tag,
                                            extra=[("x-lifeline-site", self.site),
                                                   ("warning", f'399 pbx-{self.site} "CRM: {str(error)[:80]}"')])
        else:
            answer = messages.sdp(self.address, self.media.getsockname()[1], int(time.time()))
            response = messages.response_to(
                call.invite, 200, "OK", to_tag=call.to_tag, body=answer, content_type="application/sdp",
                extra=[("contact", f"<sip:ivr@{self.address}:{self.port}>"), ("x-lifeline-site", self.site),
                       ("x-lifeline-call-id", str(crm_call_id))])
        self._send_final(call, response)

    def _record_in_crm(self, caller: str) -> int:
        connection = http.client.HTTPConnection(*self.service, timeout=3)
        try:
            connection.request("POST", "/calls", body=json.dumps({"caller_id": caller}),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        return int(json.loads(payload)["call_id"])

    def _acknowledged(self, call: Call) -> None:
        offer = messages.media_of(call.invite.body)
        audio = self._announcement()
        if offer is not None and offer.wants_audio and audio:
            self.workers.submit(self._play, call, (offer.address, offer.port), audio)

    def _announcement(self) -> bytes:
        for name in (EMERGENCY_ANNOUNCEMENT, GREETING):
            try:
                return (self.ivr_dir / name).read_bytes()
            except OSError:
                continue
        return b""

    def _play(self, call: Call, destination: tuple[str, int], audio: bytes) -> None:
        rtp.stream(self.media, destination, audio, call.hung_up)
        if not call.hung_up.is_set():
            self._hang_up(call)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the PBX (ACD and IVR) of one lab site")
    parser.add_argument("--lab-dir", type=Path, required=True)
    parser.add_argument("--site", choices=["main", "dr"], required=True)
    arguments = parser.parse_args(argv)
    pbx = Pbx(LabPaths(arguments.lab_dir), arguments.site)
    signal.signal(signal.SIGTERM, lambda *_: pbx.stopped.set())
    pbx.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
