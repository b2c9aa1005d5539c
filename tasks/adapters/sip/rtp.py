"""RTP with G.711 µ-law: packets of 20 ms, and what a recording sounds like (duration, loudness)."""

from __future__ import annotations

import math
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass

SAMPLE_RATE = 8000
SAMPLES_PER_PACKET = 160  # 20 ms
PAYLOAD_TYPE_PCMU = 0
SILENCE_DBFS = -50.0  # quieter than this over a whole recording is silence (an open line hums at ~ -70)


def _ulaw_to_linear(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    return (0x84 - magnitude) if sign else (magnitude - 0x84)


ULAW_TO_LINEAR = tuple(_ulaw_to_linear(value) for value in range(256))


def packet(sequence: int, timestamp: int, ssrc: int, payload: bytes, *, marker: bool = False) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | PAYLOAD_TYPE_PCMU, sequence & 0xFFFF,
                         timestamp & 0xFFFFFFFF, ssrc)
    return header + payload


def payload_of(datagram: bytes) -> bytes | None:
    """The audio of an RTP packet of PCMU, or None for anything else."""
    if len(datagram) < 12 or datagram[0] >> 6 != 2 or datagram[1] & 0x7F != PAYLOAD_TYPE_PCMU:
        return None
    offset = 12 + 4 * (datagram[0] & 0x0F)
    if datagram[0] & 0x10 and len(datagram) >= offset + 4:  # header extension
        offset += 4 + 4 * struct.unpack("!H", datagram[offset + 2:offset + 4])[0]
    return datagram[offset:]


@dataclass(frozen=True)
class Listening:
    """What a recording of a call holds."""

    seconds: float
    level_dbfs: float  # RMS against full scale; -inf for digital silence
    packets: int

    @property
    def silent(self) -> bool:
        return self.level_dbfs < SILENCE_DBFS


def listen(audio: bytes, packets: int = 0) -> Listening:
    if not audio:
        return Listening(0.0, -math.inf, packets)
    total = sum(ULAW_TO_LINEAR[byte] ** 2 for byte in audio)
    rms = math.sqrt(total / len(audio))
    level = 20 * math.log10(rms / 32768) if rms > 0 else -math.inf
    return Listening(round(len(audio) / SAMPLE_RATE, 3), round(level, 1), packets)


def stream(sock: socket.socket, destination: tuple[str, int], audio: bytes, stop: threading.Event | None = None) -> int:
    """Send µ-law audio as RTP in real time, 20 ms a packet; returns the packets sent."""
    sequence, timestamp, ssrc = random.randrange(1 << 16), random.randrange(1 << 32), random.randrange(1 << 32)
    started = time.monotonic()
    sent = 0
    for offset in range(0, len(audio), SAMPLES_PER_PACKET):
        if stop is not None and stop.is_set():
            break
        chunk = audio[offset:offset + SAMPLES_PER_PACKET]
        try:
            sock.sendto(packet(sequence + sent, timestamp + offset, ssrc, chunk, marker=sent == 0), destination)
        except OSError:
            break
        sent += 1
        delay = started + sent * SAMPLES_PER_PACKET / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent
