"""Where the lab's emergency communication channels are reached, for the plan's channel keys."""

from __future__ import annotations

from typing import Any

from .context import LabContext

CHAT_PATH = "lifeline"


def channel_endpoints(context: LabContext) -> dict[str, Any]:
    """``smtp_host``/``smtp_port``/``smtp_credentials_file``: the SMTP sink (plain, no TLS, with a login);
    ``chat_url``: the chat receiver as an Apprise URL (``json://`` posts Apprise's JSON body)."""
    ops = context.address("ops")
    return {
        "smtp_host": ops,
        "smtp_port": context.state.ports.smtp,
        "smtp_credentials_file": str(context.paths.smtp_credentials_file),
        "chat_url": f"json://{ops}:{context.state.ports.chat}/{CHAT_PATH}",
    }


def lab_communication_values(context: LabContext) -> dict[str, Any]:
    """The lab's emergency roster and its real channels: SMS through moto's SNS, email through the sink,
    chat through the receiver. A liaison, two leaders, an on-call rotation, a partner unit, agents."""
    endpoints = channel_endpoints(context)

    def person(name: str, role: str, number: int, language: str, **more: Any) -> dict[str, Any]:
        login = name.lower().replace(" ", ".")
        return {"name": name, "role": role, "phones": [f"+86138000{number:05d}"], "email": f"{login}@callcenter.lab",
                "language": language, **more}

    return {
        "hotline": "+861012345678",
        "contacts": {
            "wang-fang": person("Wang Fang", "emergency-liaison", 42, "zh", department="operations", deputy="zhou-lin"),
            "zhou-lin": person("Zhou Lin", "leader", 43, "zh", department="management"),
            "olivia-grant": person("Olivia Grant", "leader", 44, "en", department="management"),
            "chen-jie": person("Chen Jie", "oncall-engineer", 45, "zh", department="it"),
            "sam-lee": person("Sam Lee", "oncall-engineer", 46, "en", department="it"),
            "telecom-noc": person("Telecom NOC", "partner", 47, "zh", department="partner: carrier"),
            **{f"agent-{index}": person(f"Agent {index}", "agent-supervisor", 50 + index, "zh", department="floor")
               for index in range(1, 5)},
        },
        "recovery": {"approvers": ["wang-fang"], "deputies_after_minutes": 5},  # her deputy: zhou-lin
        "oncall": {"engineer": {"members": ["chen-jie", "sam-lee"], "start": "2026-01-05T09:00:00", "every": "week"}},
        "channels": {
            "sms": {"type": "sms", "attempts": 2, "backoff_seconds": 0.2},
            "email": {"type": "email", "host": endpoints["smtp_host"], "port": endpoints["smtp_port"],
                      "security": "none", "sender": "lifeline@callcenter.lab", "attempts": 2, "backoff_seconds": 0.2,
                      "credentials_file": endpoints["smtp_credentials_file"]},
            "chat": {"type": "chat", "url": endpoints["chat_url"], "attempts": 2, "backoff_seconds": 0.2},
            "voice": {"type": "voice", "ring_seconds": 8, "attempts": 1},  # the phones answer through the lab's SBC
        },
        "audiences": {
            "liaison": {"members": ["wang-fang"], "channels": ["sms", "email"]},
            "liaison-phone": {"members": ["wang-fang"], "channels": ["voice", "sms"]},
            "leadership": {"members": ["role:leader"], "channels": ["sms", "email"]},
            "oncall": {"members": ["oncall:engineer"], "channels": ["chat", "sms"]},
            "partners": {"members": ["role:partner"], "channels": ["email", "sms"]},
            "staff": {"members": ["role:agent-supervisor"], "channels": ["chat", "email"]},
        },
    }
