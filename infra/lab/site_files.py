"""Files the sites keep: call recordings (small WAV files) and the IVR configuration.

Generated once, when the lab is created; never regenerated (restoring lost data is Lifeline's
job, not the lab's). Names include spaces, non-ASCII characters and nested folders on purpose.
"""

from __future__ import annotations

import math
import os
import struct
import wave
from pathlib import Path

from lifeline.tasks.adapters.speech import speak

from .context import LabContext

SAMPLE_RATE = 8000  # telephone quality

RECORDING_NAMES: list[str] = [
    "2026/11/01/call-000101 +8613810000042.wav",
    "2026/11/01/call-000102 +8613810000777.wav",
    "2026/11/01/call-000103 +8613810001999.wav",
    "2026/11/02/call-000214 +8613810000005.wav",
    "2026/11/02/call-000215 +8613810001234.wav",
    "2026/11/03/call-000318 +8613810000420.wav",
    "2026/11/03/客户回访 张伟 (callback).wav",
    "2026/11/03/投诉 王芳 – billing dispute.wav",
    "voicemail/Rückruf Müller – Überweisung.wav",
    "voicemail/résumé de l'appel n°7.wav",
    "voicemail/after hours 23-59.wav",
    "quality/agent 4007 coaching session.wav",
    "quality/agent 4012 coaching session.wav",
    "quality/escalation – priority customer #50.wav",
    "greetings/welcome zh-CN 欢迎致电.wav",
    "greetings/welcome en-US.wav",
    "greetings/hold music (30s loop).wav",
    "top-level recording.wav",
]
TEMPORARY_NAMES: list[str] = ["2026/11/03/upload-in-progress.wav.tmp"]

IVR_FILES: dict[str, str] = {
    "menu.xml": """<?xml version="1.0" encoding="UTF-8"?>
<menu name="main" language="zh-CN">
  <option key="1" queue="billing">账单查询 / Billing</option>
  <option key="2" queue="technical">技术支持 / Technical support</option>
  <option key="3" queue="sales">新业务 / Sales</option>
  <option key="0" queue="priority">人工服务 / Operator</option>
</menu>
""",
    "queues.conf": """[billing]
strategy = longest-idle
timeout = 20
max_wait = 300

[technical]
strategy = round-robin
timeout = 25

[priority]
strategy = ring-all
timeout = 10
""",
    "hours.conf": "timezone = Asia/Shanghai\nmon-fri = 08:00-22:00\nsat-sun = 09:00-18:00\n",
    "prompts/closed message.txt": "您好，我们的营业时间为周一至周五 8:00-22:00。\n",
}


def tone(path: Path, frequency: float, seconds: float) -> None:
    """A short mono 16-bit telephone-quality tone."""
    count = int(SAMPLE_RATE * seconds)
    frames = b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * frequency * index / SAMPLE_RATE)))
        for index in range(count)
    )
    with wave.open(str(path), "wb") as output:
        output.setnchannels(1)
        output.setsampwidth(2)
        output.setframerate(SAMPLE_RATE)
        output.writeframes(frames)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for directory, folders, files in os.walk(root):
        os.chown(directory, uid, gid)
        for name in folders + files:
            os.chown(os.path.join(directory, name), uid, gid)


def seed_recordings(context: LabContext) -> int:
    """main's recordings (dr gets an empty folder: restores land there). Returns files written."""
    main = context.paths.recordings_dir("main")
    written = 0
    for index, name in enumerate(RECORDING_NAMES + TEMPORARY_NAMES):
        target = main / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tone(target, 300 + 40 * index, 0.25 + 0.05 * (index % 6))
        written += 1
    context.paths.recordings_dir("dr").mkdir(parents=True, exist_ok=True)
    if not context.user.is_current:
        for site in ("main", "dr"):
            _chown_tree(context.paths.recordings_dir(site), context.user.uid, context.user.gid)
    return written


GREETING = [("zh", "您好，欢迎致电客户服务中心。"), ("en", "Welcome to our customer service centre.")]


def seed_ivr(context: LabContext) -> None:
    """Main's IVR configuration (backed up as the dataset ivr-config), and both sites' spoken greeting."""
    folder = context.paths.ivr_dir("main")
    for name, content in IVR_FILES.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    ensure_greetings(context)


def ensure_greetings(context: LabContext) -> None:
    """Each site's IVR greeting, played when no emergency announcement is up. The lab user owns the folders:
    Lifeline puts the announcement there over SSH."""
    greeting: bytes | None = None
    for site in ("main", "dr"):
        site_folder = context.paths.ivr_dir(site)
        if (site_folder / "greeting.ulaw").exists():
            continue
        greeting = greeting or speak(GREETING).audio
        site_folder.mkdir(parents=True, exist_ok=True)
        (site_folder / "greeting.ulaw").write_bytes(greeting)
        if not context.user.is_current:
            _chown_tree(site_folder, context.user.uid, context.user.gid)
