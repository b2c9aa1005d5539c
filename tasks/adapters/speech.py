"""Spoken messages: text to 8 kHz G.711 µ-law audio with espeak-ng and sox.

The IVR's emergency announcement and the voice channel's message are made the same way:
each (voice, text) part is spoken by espeak-ng into a WAV file, then sox joins the parts and
converts them to raw µ-law at 8 kHz, the format IVRs play (Asterisk's `.ulaw`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lifeline.tasks.adapters.commands import run_command
from lifeline.tasks.adapters.errors import LifelineError

SAMPLE_RATE = 8000
VOICES = {"zh": "cmn", "en": "en-us"}  # the languages of the communications templates
WORDS_PER_MINUTE = 150
PAUSE_SECONDS = 0.6  # between the parts (languages)


class SpeechFailed(LifelineError):
    pass


@dataclass(frozen=True)
class SpokenMessage:
    audio: bytes  # raw µ-law, 8 kHz, mono

    @property
    def seconds(self) -> float:
        return round(len(self.audio) / SAMPLE_RATE, 3)


def speech_arguments(voice: str, text_file: Path, wav_file: Path) -> tuple[str, ...]:
    return ("espeak-ng", "-v", voice, "-s", str(WORDS_PER_MINUTE), "-f", str(text_file), "-w", str(wav_file))


def conversion_arguments(parts: Sequence[Path], target: Path) -> tuple[str, ...]:
    return ("sox", *map(str, parts), "-r", str(SAMPLE_RATE), "-c", "1", "-e", "u-law", "-t", "raw", str(target))


def speak(parts: Sequence[tuple[str, str]], timeout: float = 60) -> SpokenMessage:
    """Render (language, text) parts, in order, into one µ-law recording."""
    spoken = [(language, text.strip()) for language, text in parts if text.strip()]
    if not spoken:
        raise SpeechFailed("nothing to say: every part of the message is empty")
    with tempfile.TemporaryDirectory(prefix="lifeline-speech-") as folder:
        work = Path(folder)
        wav_files: list[Path] = []
        for number, (language, text) in enumerate(spoken):
            voice = VOICES.get(language, language)
            text_file, wav_file = work / f"{number}.txt", work / f"{number}.wav"
            text_file.write_text(text, encoding="utf-8")
            _run(speech_arguments(voice, text_file, wav_file), f"espeak-ng ({language})", timeout)
            wav_files.append(wav_file)
            if number < len(spoken) - 1:
                pause = work / f"{number}-pause.wav"
                _run(("sox", "-n", "-r", "22050", "-c", "1", "-b", "16", str(pause), "trim", "0",
                      str(PAUSE_SECONDS)), "sox (pause)", timeout)
                wav_files.append(pause)
        target = work / "message.ulaw"
        _run(conversion_arguments(wav_files, target), "sox", timeout)
        return SpokenMessage(target.read_bytes())


def _run(argv: Sequence[str], what: str, timeout: float) -> None:
    result = run_command(argv, timeout=timeout)
    if not result.succeeded:
        raise SpeechFailed(f"{what} exited {result.returncode}: {result.stderr_tail(2) or 'no message'}")
