"""The emergency contacts' phones: one SIP user agent that registers every roster phone number at the
carrier's SBC and answers Lifeline's voice calls, keeping what it heard.

Each answered call ends as one JSON line in ``ops/voice.jsonl``: when, the number called, the caller id,
and the seconds and loudness of the audio heard. A number listed in ``ops/phones-unanswered`` rings
but is never answered (someone away from the phone).

Runs as ``python -m lifeline.infra.lab.phones --lab-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from pathlib import Path

from lifeline.tasks.adapters.sip import messages, rtp
from lifeline.tasks.adapters.sip.messages import SipMessage

from .context import LabContext
from .pbx import Call, SipServer
from .roster import lab_communication_values
from .state import LabPaths, LabState, load_state, now_iso

REGISTER_EVERY_SECONDS = 60.0  # and for twice as long: a restarted SBC learns the phones again within a minute
DOMAIN = "phones.lab"


def roster_numbers(paths: LabPaths, state: LabState) -> list[str]:
    context = LabContext(paths, state, None)  # type: ignore[arg-type] - the roster needs no lab user
    contacts = lab_communication_values(context)["contacts"]
    return sorted({phone for contact in contacts.values() for phone in contact["phones"]})


class Phones(SipServer):
    name = "phones"

    def __init__(self, paths: LabPaths) -> None:
        state = load_state(paths)
        if state is None:
            raise SystemExit(f"no lab state in {paths.root}")
        self.paths = paths
        self.numbers = roster_numbers(paths, state)
        self.sbc = (state.addresses.ops, state.ports.sip)
        self.registered_at = 0.0
        self.media_sockets: dict[str, socket.socket] = {}
        super().__init__(state.addresses.ops, state.ports.phones)

    def tick(self) -> None:
        if time.monotonic() - self.registered_at >= REGISTER_EVERY_SECONDS:
            self.registered_at = time.monotonic()
            for number in self.numbers:
                self.send(self._register(number), self.sbc)

    def _register(self, number: str) -> SipMessage:
        aor = f"sip:{number}@{DOMAIN}"
        headers = [("via", f"SIP/2.0/UDP {self.address}:{self.port};branch={messages.new_branch()};rport"),
                   ("max-forwards", "70"), ("from", f"<{aor}>;tag={messages.new_tag()}"), ("to", f"<{aor}>"),
                   ("call-id", f"register-{number}@{self.address}"), ("cseq", f"{int(time.time())} REGISTER"),
                   ("contact", f"<sip:{number}@{self.address}:{self.port}>"),
                   ("expires", str(int(REGISTER_EVERY_SECONDS * 2)))]
        return SipMessage(f"REGISTER sip:{DOMAIN} SIP/2.0", headers)

    def _answer(self, call: Call) -> None:
        number = messages.user_of(call.invite.request_uri) or messages.user_of(call.invite.header("to") or "")
        if number in self._unanswered():
            return  # it rings until the caller gives up (CANCEL)
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind((self.address, 0))
        self.media_sockets[call.invite.call_id] = listener
        self.workers.submit(self._listen, call, listener, number)
        answer = messages.sdp(self.address, listener.getsockname()[1], int(time.time()), direction="recvonly")
        self._send_final(call, messages.response_to(
            call.invite, 200, "OK", to_tag=call.to_tag, body=answer, content_type="application/sdp",
            extra=[("contact", f"<sip:{number}@{self.address}:{self.port}>")]))

    def _unanswered(self) -> set[str]:
        try:
            return set((self.paths.side_dir("ops") / "phones-unanswered").read_text().split())
        except OSError:
            return set()

    def _listen(self, call: Call, listener: socket.socket, number: str) -> None:
        audio = bytearray()
        packets = 0
        listener.settimeout(0.2)
        while not call.hung_up.is_set():
            try:
                datagram = listener.recv(2048)
            except TimeoutError:
                continue
            payload = rtp.payload_of(datagram)
            if payload is not None:
                audio += payload
                packets += 1
        listener.close()
        self.media_sockets.pop(call.invite.call_id, None)
        heard = rtp.listen(bytes(audio), packets)
        record = {"at": now_iso(), "number": number, "caller": messages.user_of(call.invite.header("from") or ""),
                  "seconds": heard.seconds, "level_dbfs": heard.level_dbfs if heard.packets else None}
        with (self.paths.side_dir("ops") / "voice.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the lab's emergency contacts' phones")
    parser.add_argument("--lab-dir", type=Path, required=True)
    arguments = parser.parse_args(argv)
    phones = Phones(LabPaths(arguments.lab_dir))
    signal.signal(signal.SIGTERM, lambda *_: phones.stopped.set())
    phones.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
