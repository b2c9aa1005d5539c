"""SIP messages (RFC 3261) as Lifeline needs them: built as text, parsed from datagrams.

Only what a UAC placing a call and a simple UAS answering one use: INVITE, ACK, BYE,
CANCEL, OPTIONS and their responses, one SDP offer/answer with G.711 (PCMU).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

SIP_VERSION = "SIP/2.0"
COMPACT_NAMES = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
                 "c": "content-type"}


@dataclass
class SipMessage:
    start_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith(SIP_VERSION)

    @property
    def status(self) -> int:
        return int(self.start_line.split(" ", 2)[1]) if self.is_response else 0

    @property
    def reason(self) -> str:
        parts = self.start_line.split(" ", 2)
        return parts[2] if self.is_response and len(parts) > 2 else ""

    @property
    def method(self) -> str:
        return self.cseq_method if self.is_response else self.start_line.split(" ", 1)[0]

    @property
    def request_uri(self) -> str:
        return "" if self.is_response else self.start_line.split(" ")[1]

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    @property
    def cseq_method(self) -> str:
        return (self.header("cseq") or "0 NONE").split()[-1].upper()

    def encode(self) -> bytes:
        lines = [self.start_line, *(f"{canonical(name)}: {value}" for name, value in self.headers
                                    if name != "content-length"),
                 f"Content-Length: {len(self.body)}", "", ""]
        return "\r\n".join(lines).encode("utf-8") + self.body


def canonical(name: str) -> str:
    special = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate"}
    return special.get(name, "-".join(part.capitalize() for part in name.split("-")))


def parse(datagram: bytes) -> SipMessage | None:
    """A SIP message, or None for anything else (keep-alives, garbage)."""
    head, _, body = datagram.partition(b"\r\n\r\n")
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        return None
    if not lines or not (lines[0].startswith(SIP_VERSION) or lines[0].endswith(SIP_VERSION)):
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, separator, value = line.partition(":")
        if separator:
            key = name.strip().lower()
            headers.append((COMPACT_NAMES.get(key, key), value.strip()))
    return SipMessage(lines[0], headers, body)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def tag_of(address: str) -> str | None:
    found = re.search(r";\s*tag=([^;>\s]+)", address)
    return found.group(1) if found else None


def uri_of(address: str) -> str:
    """The URI inside a name-addr (`"x" <sip:a@b>;tag=1` -> `sip:a@b`)."""
    found = re.search(r"<([^>]+)>", address)
    return found.group(1) if found else address.split(";")[0].strip()


def user_of(address: str) -> str:
    uri = uri_of(address)
    return uri.split(":", 1)[-1].split("@", 1)[0] if "@" in uri else ""


def host_port_of(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """Host and port of a SIP URI (`sip:user@127.0.0.1:5062;transport=udp`)."""
    rest = uri.split(":", 1)[-1].split(";", 1)[0].split("@")[-1]
    host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else default_port


def response_to(request: SipMessage, status: int, reason: str, *, to_tag: str | None = None,
                extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                content_type: str | None = None) -> SipMessage:
    """A response copying the request's Via, From, To (tagged), Call-ID, CSeq and Record-Route."""
    headers = [("via", value) for value in request.all("via")]
    if status > 100:
        headers += [("record-route", value) for value in request.all("record-route")]
    headers.append(("from", request.header("from") or ""))
    to = request.header("to") or ""
    if to_tag and tag_of(to) is None:
        to = f"{to};tag={to_tag}"
    headers += [("to", to), ("call-id", request.call_id), ("cseq", request.header("cseq") or "")]
    headers += extra or []
    if content_type:
        headers.append(("content-type", content_type))
    return SipMessage(f"{SIP_VERSION} {status} {reason}", headers, body)


def sdp(address: str, rtp_port: int, session_id: int, *, direction: str = "sendrecv") -> bytes:
    """An audio offer or answer of G.711 µ-law (payload type 0) at address:rtp_port."""
    lines = ["v=0", f"o=lifeline {session_id} {session_id} IN IP4 {address}", "s=lifeline", f"c=IN IP4 {address}",
             "t=0 0", f"m=audio {rtp_port} RTP/AVP 0", "a=rtpmap:0 PCMU/8000", f"a={direction}", ""]
    return "\r\n".join(lines).encode("ascii")


@dataclass(frozen=True)
class MediaOffer:
    address: str
    port: int
    direction: str

    @property
    def wants_audio(self) -> bool:
        return self.port > 0 and self.direction in ("sendrecv", "recvonly")


def media_of(body: bytes) -> MediaOffer | None:
    """Where the other side wants its audio, from an SDP body."""
    text = body.decode("ascii", errors="replace")
    connection = re.search(r"^c=IN IP4 (\S+)", text, re.MULTILINE)
    media = re.search(r"^m=audio (\d+) ", text, re.MULTILINE)
    if connection is None or media is None:
        return None
    direction = re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", text, re.MULTILINE)
    return MediaOffer(connection.group(1), int(media.group(1)), direction.group(1) if direction else "sendrecv")
