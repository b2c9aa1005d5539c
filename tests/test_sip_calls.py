"""Lifeline's SIP user agent against a user agent server on loopback: what a caller sees (answered,
failed, abandoned), what it hears, and the plan's telephony checks. No lab: runs in a second."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from lifeline.configs.loading import PlanInvalid, load_plan
from lifeline.infra.lab.pbx import Call, SipServer
from lifeline.tasks.adapters.sip import SipEndpoint, messages, place_call
from lifeline.tasks.adapters.sip.rtp import listen
from lifeline.tasks.adapters.speech import speak

from tests.helpers import write_plan


class Answering(SipServer):
    """Answers with `status`; a caller who listens hears `audio`; `ring_only` never answers."""

    def __init__(self, status: int = 200, audio: bytes = b"", ring_only: bool = False) -> None:
        super().__init__("127.0.0.1", 0)
        self.port = self.signalling.getsockname()[1]
        self.status, self.audio, self.ring_only = status, audio, ring_only
        threading.Thread(target=self.serve, daemon=True).start()

    def _answer(self, call: Call) -> None:
        if self.ring_only:
            return
        if self.status != 200:
            self._send_final(call, messages.response_to(call.invite, self.status, "Busy Here", to_tag=call.to_tag))
            return
        answer = messages.sdp(self.address, self.media.getsockname()[1], 1)
        self._send_final(call, messages.response_to(call.invite, 200, "OK", to_tag=call.to_tag, body=answer,
                                                    content_type="application/sdp",
                                                    extra=[("contact", f"<sip:pbx@{self.address}:{self.port}>")]))

    def _acknowledged(self, call: Call) -> None:
        offer = messages.media_of(call.invite.body)
        if self.audio and offer is not None and offer.wants_audio:
            from lifeline.tasks.adapters.sip import rtp

            rtp.stream(self.media, (offer.address, offer.port), self.audio, call.hung_up)
            self._hang_up(call)


@pytest.fixture
def server_factory():
    started: list[SipServer] = []

    def start(**options) -> SipEndpoint:
        server = Answering(**options)
        started.append(server)
        return SipEndpoint("127.0.0.1", server.port)

    yield start
    for server in started:
        server.stopped.set()


def test_an_answered_call_names_who_answered_and_a_listener_hears_the_audio(server_factory) -> None:
    audio = speak([("en", "Testing one two three.")]).audio
    endpoint = server_factory(audio=audio)
    quick = place_call(endpoint, "4008001234", "+8613800000001")
    assert quick.outcome == "answered" and quick.answered_by == endpoint.label and quick.audio == b""
    heard = place_call(endpoint, "4008001234", "+8613800000001", record_seconds=10)
    assert heard.outcome == "answered"
    assert heard.listening.seconds == pytest.approx(len(audio) / 8000, abs=0.05)
    assert heard.listening.level_dbfs == pytest.approx(listen(audio).level_dbfs, abs=0.5)
    assert not heard.listening.silent


def test_a_refused_call_fails_and_an_unanswered_one_is_abandoned(server_factory) -> None:
    busy = place_call(server_factory(status=486), "4008001234", "+8613800000001")
    assert (busy.outcome, busy.status) == ("failed", 486)
    ringing = place_call(server_factory(ring_only=True), "4008001234", "+8613800000001", answer_timeout=0.5)
    assert ringing.outcome == "abandoned" and "ringing" in ringing.reason
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:  # a port nobody answers on
        closed.bind(("127.0.0.1", 0))
        nobody = SipEndpoint("127.0.0.1", closed.getsockname()[1])
    silent = place_call(nobody, "4008001234", "+8613800000001", answer_timeout=0.7)
    assert silent.outcome == "failed" and "no response from the SBC" in silent.reason


def test_silence_is_told_from_speech() -> None:
    assert listen(b"\xff" * 16000).silent and listen(b"").seconds == 0
    spoken = listen(speak([("zh", "各位客户您好。")]).audio)
    assert not spoken.silent and spoken.seconds > 0.5


def test_messages_parse_compact_headers_and_responses_copy_the_dialog(tmp_path: Path) -> None:
    invite = messages.parse(b"INVITE sip:4008001234@10.0.0.5 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK1\r\n"
                            b"f: <sip:+8613800000001@10.0.0.9>;tag=abc\r\nt: <sip:4008001234@10.0.0.5>\r\n"
                            b"i: call-1\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n")
    assert invite is not None and invite.method == "INVITE" and invite.call_id == "call-1"
    assert messages.user_of(invite.header("from") or "") == "+8613800000001"
    answer = messages.parse(messages.response_to(invite, 200, "OK", to_tag="xyz").encode())
    assert answer is not None and answer.status == 200 and messages.tag_of(answer.header("to") or "") == "xyz"
    assert answer.header("via") == invite.header("via") and answer.cseq_method == "INVITE"
    assert messages.parse(b"\x00\x01 not sip") is None


def test_telephony_steps_and_a_voice_channel_need_the_telephony_section(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("x")
    document = {
        "name": "cc", "repositories": {"local": {"url": str(tmp_path / "repo"), "password_file": str(password)}},
        "datasets": {"files": {"repository": "local", "paths": [str(tmp_path)]}},
        "sites": {"main": {}, "dr": {}},
        "recovery": {"failover": [{"name": "switch", "steps": [{"type": "sip_route"}]}]},
        "contacts": {"li": {"name": "Li", "role": "leader", "phones": ["+8613800000042"]}},
        "hotline": "+861012345678",
        "channels": {"voice": {"type": "voice"}},
        "audiences": {"leadership": {"members": ["li"], "channels": ["voice"]}},
    }
    with pytest.raises(PlanInvalid) as refused:
        load_plan(write_plan(tmp_path, document))
    fields = {problem.field for problem in refused.value.problems}
    assert {"recovery.failover.0.steps.0", "channels.voice"} <= fields
    document["telephony"] = {"sbc": {"address": "127.0.0.1", "rpc_url": "http://127.0.0.1:5061/RPC"},
                             "service_number": "4008001234",
                             "sites": {"main": {"destination": "sip:127.0.0.1:5062"},
                                       "elsewhere": {"destination": "sip:127.0.0.1:5063", "ivr_host": "nowhere"}},
                             "announcement": {"zh": {"body": "{{ plan }}"}, "en": {"body": "{{ missing_field }}"}}}
    document["services"] = {"crm-main": {"site": "main", "checks": [{"type": "http", "url": "http://127.0.0.1:1/health"}]}}
    with pytest.raises(PlanInvalid) as refused:
        load_plan(write_plan(tmp_path, document))
    messages_by_field = {problem.field: problem.message for problem in refused.value.problems}
    assert "telephony.sites.elsewhere" in messages_by_field and "telephony.sites.elsewhere.ivr_host" in messages_by_field
    assert "missing_field" in messages_by_field["telephony.announcement.en.body"]
    # main's services have no test call: its RTO could end with the phones dead
    assert "`sip` check" in messages_by_field["telephony.sites.main"]


def test_the_answering_site_is_found_by_its_destination() -> None:
    from lifeline.configs.telephony import Telephony

    telephony = Telephony(sbc={"address": "10.0.0.5", "rpc_url": "http://10.0.0.5:5061/RPC"}, service_number="400",
                          sites={"main": {"destination": "sip:10.0.1.20:5062"},
                                 "dr": {"destination": "sip:pbx.dr.example;transport=udp"}})
    assert telephony.site_answering("10.0.1.20:5062") == "main"
    assert telephony.site_answering("pbx.dr.example:5060") == "dr"
    assert telephony.site_answering("10.0.1.20:5063") is None and telephony.site_answering(None) is None
