"""Who is told what, on which channel: the roster, on-call rotations, channels, audiences, escalation.

The plan's top-level keys `contacts`, `hotline`, `oncall`, `channels`, `audiences`, `escalation`,
`templates` and `notifications`, and the references among them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from dateutil.rrule import DAILY, WEEKLY, rrule
from lifeline.configs.base import Name, PlanModel, PlanPath, Problem
from lifeline.configs.messages import EVENTS, Event, Language, Localized, template_problems
from pydantic import Field, model_validator

E164 = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="A phone number in E.164: +8613800000042.")]
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]

AUDIENCE_NAMES = ("liaison", "leadership", "oncall", "staff", "partners", "customers")
"""The audiences an emergency plan names; a plan may define others."""


class Contact(PlanModel):
    name: str = Field(min_length=1)
    role: Name = Field(description="emergency-liaison, leader, oncall-engineer, agent-supervisor, partner, security, ...")
    department: str = ""
    phones: list[E164] = Field(default_factory=list, description="The first is called and texted first.")
    email: Email | None = None
    addresses: dict[Name, str] = Field(
        default_factory=dict, description="Channel name → this person's address there (e.g. a personal chat webhook)."
    )
    language: Language = "en"
    timezone: str | None = Field(None, description="Times in this person's messages are shown in this zone.")
    deputy: Name | None = Field(None, description="Contact id told too when this person is on leave (overrides).")


class Override(PlanModel):
    """Somebody else holds the role for a while (leave, swap)."""

    contact: Name
    start: datetime
    end: datetime


class Rotation(PlanModel):
    members: list[Name] = Field(min_length=1, description="Contact ids, in turn order.")
    start: datetime = Field(description="The first hand-over (the first member's turn begins); naive = plan time zone.")
    every: Literal["day", "week"] = "week"
    interval: int = Field(1, ge=1, description="Turns last this many days or weeks.")
    overrides: list[Override] = Field(default_factory=list)

    def holder(self, at: datetime, timezone: str) -> str:
        """The contact id on call at `at`: an override if one covers it, else the rotation's turn."""
        zone = ZoneInfo(timezone)
        at = at if at.tzinfo else at.replace(tzinfo=zone)
        for override in self.overrides:
            if _aware(override.start, zone) <= at < _aware(override.end, zone):
                return override.contact
        start = _aware(self.start, zone)
        if at < start:
            return self.members[-1]  # the turn before the first hand-over
        turns = rrule(DAILY if self.every == "day" else WEEKLY, interval=self.interval, dtstart=start)
        handed_over = len(turns.between(start, at, inc=True))
        return self.members[(handed_over - 1) % len(self.members)]


def _aware(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


class ChannelBase(PlanModel):
    attempts: int = Field(3, ge=1, le=10, description="Tries on a transient failure before falling back.")
    backoff_seconds: float = Field(0.5, ge=0, le=60, description="Wait before the second try; doubles each time.")
    timeout_seconds: float = Field(10, gt=0, le=120)


class SmsChannel(ChannelBase):
    """SMS through AWS SNS (the plan's `aws` section); to each recipient's first phone."""

    type: Literal["sms"]
    sender_id: str | None = Field(None, max_length=11)


class EmailChannel(ChannelBase):
    type: Literal["email"]
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    sender: Email = Field(description="The From address.")
    credentials_file: PlanPath | None = Field(None, description="KEY=VALUE file with SMTP_USERNAME and SMTP_PASSWORD.")


class ChatChannel(ChannelBase):
    """Any Apprise URL (json://, slack://, dingtalk://, wecombot://, ...) or a plain http(s) JSON webhook."""

    type: Literal["chat"]
    url: str | None = Field(None, description="Without secrets in it; otherwise use url_file.")
    url_file: PlanPath | None = Field(None, description="File holding the URL (it carries a token): kept out of logs.")

    @model_validator(mode="after")
    def one_url(self) -> ChatChannel:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of url and url_file")
        return self


class VoiceChannel(ChannelBase):
    """A phone call through the plan's telephony SBC that speaks the message (espeak-ng, in the contact's
    language); delivered only when answered. To each recipient's first phone."""

    type: Literal["voice"]
    caller_id: str = Field("lifeline", pattern=r"^[A-Za-z0-9+_.-]+$", description="The number the call shows.")
    ring_seconds: float = Field(30, gt=0, le=120, description="How long the phone rings before it counts as unanswered.")
    timeout_seconds: float = Field(120, gt=0, le=600)


class ManualChannel(PlanModel):
    """A backup phone line, a radio, a satellite phone: a person says the message and confirms it."""

    type: Literal["manual"]
    medium: str = Field("backup phone line", description="What the person uses, shown with the script.")


Channel = Annotated[SmsChannel | EmailChannel | ChatChannel | VoiceChannel | ManualChannel, Field(discriminator="type")]


class Audience(PlanModel):
    members: list[str] = Field(
        min_length=1, description="Contact ids, `role:ROLE` (everyone with that role) or `oncall:ROTATION` (who holds it now)."
    )
    channels: list[Name] = Field(min_length=1, description="In order: when one fails for a person, the next is tried.")


class EscalationLevel(PlanModel):
    notify: list[Name] = Field(min_length=1, description="Audiences told at this level.")
    after_minutes: float = Field(0, ge=0, description="Minutes after the event without an acknowledgement.")
    repeat_every_minutes: float | None = Field(None, gt=0)
    repeats: int = Field(0, ge=0, le=20, description="How many times the level repeats while nobody acknowledges.")


class Escalation(PlanModel):
    events: list[Event] = Field(
        default_factory=lambda: ["incident_declared", "failed", "backup_failed"],
        description="Events that need a person's acknowledgement (`lifeline ack`).",
    )
    levels: list[EscalationLevel] = Field(default_factory=list)

    def level_times(self) -> list[tuple[float, int]]:
        """(minutes after the event, level index) of every notification, in order."""
        times = []
        for index, level in enumerate(self.levels):
            for repeat in range(level.repeats + 1 if level.repeat_every_minutes else 1):
                times.append((level.after_minutes + repeat * (level.repeat_every_minutes or 0), index))
        return sorted(times)


DEFAULT_NOTIFICATIONS: dict[str, tuple[str, ...]] = {
    "incident_declared": ("liaison", "leadership", "oncall"),
    "approval_needed": ("liaison", "leadership"),
    "failover_started": ("liaison", "leadership", "staff", "partners"),
    "recovered": ("liaison", "leadership", "staff", "partners", "customers"),
    "failed": ("liaison", "leadership", "oncall"),
    "cancelled": ("liaison", "leadership"),
    "failback_done": ("liaison", "leadership", "staff", "partners"),
    "drill_started": ("liaison", "staff"),
    "drill_result": ("liaison", "leadership"),
    "backup_failed": ("oncall", "liaison"),
    "alert_received": ("liaison", "leadership"),
    "test": (),
}


class Communications(PlanModel):
    """The communication keys of the plan; `Plan` extends it."""

    contacts: dict[Name, Contact] = Field(default_factory=dict, description="The roster, by contact id.")
    hotline: str | None = Field(None, description="The emergency hotline every message shows.")
    oncall: dict[Name, Rotation] = Field(default_factory=dict, description="Rotating roles, by name.")
    channels: dict[Name, Channel] = Field(default_factory=dict)
    audiences: dict[Name, Audience] = Field(default_factory=dict)
    escalation: Escalation = Escalation()
    templates: dict[Event, dict[Name, Localized]] = Field(
        default_factory=dict, description="Event → audience (or `all`) → {zh, en}; Lifeline ships a default for each event."
    )
    notifications: dict[Event, list[Name]] = Field(
        default_factory=dict, description="Event → the audiences told; an event not listed goes to its default audiences."
    )

    def audiences_for(self, event: Event) -> list[str]:
        wanted = self.notifications.get(event, DEFAULT_NOTIFICATIONS[event])
        return [name for name in wanted if name in self.audiences]

    def members_of(self, audience: str, at: datetime, timezone: str) -> list[str]:
        """Contact ids, each once, in the order the audience lists them."""
        found: list[str] = []
        for member in self.audiences[audience].members:
            if member.startswith("role:"):
                found += [cid for cid, contact in self.contacts.items() if contact.role == member.removeprefix("role:")]
            elif member.startswith("oncall:"):
                found.append(self.oncall[member.removeprefix("oncall:")].holder(at, timezone))
            else:
                found.append(member)
        return list(dict.fromkeys(found))


def communication_problems(plan: Communications, defined: Mapping[str, Collection[str]] | None = None) -> list[Problem]:
    """References among the communication keys, and templates that do not render. `defined`: the names each
    section defines, also entries that failed validation (a reference to one does not dangle)."""
    problems: list[Problem] = []
    defined = defined or {}
    contacts = set(defined.get("contacts", plan.contacts))
    rotations = set(defined.get("oncall", plan.oncall))
    channels = set(defined.get("channels", plan.channels))
    audiences = set(defined.get("audiences", plan.audiences))

    def contact(where: str, name: str | None) -> None:
        if name is not None and name not in contacts:
            problems.append(Problem(where, f"no contact named {name!r}"))

    for name, person in plan.contacts.items():
        contact(f"contacts.{name}.deputy", person.deputy)
        if person.deputy == name:
            problems.append(Problem(f"contacts.{name}.deputy", "a contact cannot be their own deputy"))
        for channel in person.addresses:
            if channel not in channels:
                problems.append(Problem(f"contacts.{name}.addresses.{channel}", f"no channel named {channel!r}"))
        if person.timezone is not None:
            try:
                ZoneInfo(person.timezone)
            except (ValueError, KeyError, OSError):
                problems.append(Problem(f"contacts.{name}.timezone", f"unknown time zone {person.timezone!r}"))
    for name, rotation in plan.oncall.items():
        for index, member in enumerate(rotation.members):
            contact(f"oncall.{name}.members.{index}", member)
        for index, override in enumerate(rotation.overrides):
            contact(f"oncall.{name}.overrides.{index}.contact", override.contact)
            if override.end <= override.start:
                problems.append(Problem(f"oncall.{name}.overrides.{index}.end", "must be after start"))
    roles = {person.role for person in plan.contacts.values()}
    for name, audience in plan.audiences.items():
        for index, member in enumerate(audience.members):
            where = f"audiences.{name}.members.{index}"
            if member.startswith("role:"):
                if member.removeprefix("role:") not in roles:
                    problems.append(Problem(where, f"no contact has role {member.removeprefix('role:')!r}"))
            elif member.startswith("oncall:"):
                if member.removeprefix("oncall:") not in rotations:
                    problems.append(Problem(where, f"no on-call rotation named {member.removeprefix('oncall:')!r}"))
            else:
                contact(where, member)
        for index, channel in enumerate(audience.channels):
            if channel not in channels:
                problems.append(Problem(f"audiences.{name}.channels.{index}", f"no channel named {channel!r}"))
    if plan.channels and plan.contacts and not plan.hotline:
        problems.append(Problem("hotline", "required once the plan has contacts and channels: every message shows it"))
    for index, level in enumerate(plan.escalation.levels):
        for position, audience in enumerate(level.notify):
            if audience not in audiences:
                problems.append(Problem(f"escalation.levels.{index}.notify.{position}", f"no audience named {audience!r}"))
    for event, audiences in plan.notifications.items():
        for position, audience in enumerate(audiences):
            if audience not in audiences:
                problems.append(Problem(f"notifications.{event}.{position}", f"no audience named {audience!r}"))
    for event, by_audience in plan.templates.items():
        for audience, localized in by_audience.items():
            where = f"templates.{event}.{audience}"
            if audience != "all" and audience not in audiences:
                problems.append(Problem(where, f"no audience named {audience!r} (or use `all`)"))
            problems += [Problem(f"{where}.{field}", message) for field, message in template_problems(event, localized)]
    return problems


__all__ = ["AUDIENCE_NAMES", "EVENTS", "Audience", "Channel", "Communications", "Contact", "Escalation",
           "communication_problems"]
