"""Where the lab's emergency communication channels are reached, for the plan's channel keys."""

from __future__ import annotations

from typing import Any

from .context import LabContext

CHAT_PATH = "lifeline"


def channel_endpoints(context: LabContext) -> dict[str, Any]:
    """``smtp_host``/``smtp_port``: the SMTP sink (plain, no TLS, no login); ``chat_url``: the chat
    receiver as an Apprise URL (``json://`` posts Apprise's JSON body)."""
    ops = context.address("ops")
    return {
        "smtp_host": ops,
        "smtp_port": context.state.ports.smtp,
        "chat_url": f"json://{ops}:{context.state.ports.chat}/{CHAT_PATH}",
    }
