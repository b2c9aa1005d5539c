"""Who was told what: every delivery attempt of a run's messages, and who acknowledged the run.

Recipients are kept masked: a phone number or an address never reaches the ledger, a log or a report whole.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from lifeline.tasks.run.record import utc_now
from pydantic import BaseModel, Field

DeliveryStatus = Literal["delivered", "failed", "awaiting_confirmation", "confirmed", "sending"]
# "sending" is written just before the provider is asked and stands alone only when the process died mid-send:
# the next run counts that person as told (at most once), and the escalation reaches them if nobody acknowledges.


def mask_phone(number: str) -> str:
    """+8613800000042 → +86138****0042: enough to tell people apart, not enough to call them."""
    return f"{number[:6]}****{number[-4:]}" if len(number) > 10 else f"{number[:3]}****"


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_recipient(address: str) -> str:
    if address.startswith("+"):
        return mask_phone(address)
    if "@" in address and "://" not in address:
        return mask_email(address)
    return address.split("://", 1)[0] + "://…" if "://" in address else "…"


class Delivery(BaseModel):
    """One attempt to give one person one message on one channel."""

    message_id: str = Field(description="Lifeline's id of the message to this person (all attempts share it).")
    run_id: str
    event: str
    audience: str
    contact: str
    channel: str
    channel_type: str
    recipient: str = Field(description="Masked.")
    status: DeliveryStatus
    attempt: int
    at: datetime = Field(default_factory=utc_now)
    latency_seconds: float = 0
    answer: str = Field("", description="What the provider said (its message id, or why it refused).")
    level: int | None = Field(None, description="Escalation level (1-based) that sent it; None for the event itself.")
    fallback: bool = Field(False, description="Sent on a later channel because an earlier one failed.")
    language: str = "en"


class Acknowledgement(BaseModel):
    run_id: str
    contact: str
    at: datetime = Field(default_factory=utc_now)
    via: Literal["cli", "ui", "approval"] = "cli"
    note: str = ""


EscalationStatus = Literal["open", "acknowledged", "resolved", "exhausted"]


class EscalationState(BaseModel):
    """An escalation as the ledger keeps it, so that another process (a restarted `lifeline serve`) carries on."""

    run_id: str
    plan: str
    event: str
    fields: dict = Field(default_factory=dict, description="The event's message fields; no secrets, no addresses.")
    started_at: datetime
    already_told: list[str] = Field(default_factory=list, description="Contacts the event itself reached.")
    notices_sent: int = Field(0, description="How many of the plan's level notifications have gone out.")
    status: EscalationStatus = "open"
    flow_run_id: str | None = Field(None, description="The Prefect flow run carrying it, under `lifeline serve`.")
    ended_at: datetime | None = None


REACHED: tuple[DeliveryStatus, ...] = ("delivered", "awaiting_confirmation")
"""A manual delivery awaiting confirmation counts: a person has the script and the number."""


class Reach(BaseModel):
    """How far one sending got: the messages (one per recipient), those that reached their recipient, and
    those that went out on a fallback channel."""

    messages: set[str]
    reached: set[str]
    fallbacks: set[str]
    last_reached_at: datetime | None

    @property
    def everybody(self) -> bool:
        return bool(self.messages) and self.reached == self.messages

    @property
    def missed(self) -> str | None:
        """"2 of 5 recipients not reached", or None when nobody was missed."""
        left = len(self.messages) - len(self.reached)
        return f"{left} of {len(self.messages)} recipients not reached" if left else None

    @property
    def detail(self) -> dict:
        return {"recipients": len(self.messages), "reached": len(self.reached), "fallbacks": len(self.fallbacks)}


def reach_of(told: list[Delivery], counted: tuple[DeliveryStatus, ...] = REACHED) -> Reach:
    reached = [delivery for delivery in told if delivery.status in counted]
    return Reach(messages={delivery.message_id for delivery in told},
                 reached={delivery.message_id for delivery in reached},
                 fallbacks={delivery.message_id for delivery in told if delivery.fallback},
                 last_reached_at=max((delivery.at for delivery in reached), default=None))
