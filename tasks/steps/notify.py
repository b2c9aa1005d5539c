"""Telling people: each recipient gets the event's message in their language, on their audience's channels
in order, with bounded retries on a transient failure and a fallback to the next channel on any failure.

Sending is concurrent, one pool per channel, so one slow channel does not hold up the others. Every
attempt is recorded in the ledger, with the recipient masked.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from lifeline.configs.communications import (
    ChatChannel,
    Contact,
    EmailChannel,
    ManualChannel,
    SmsChannel,
    VoiceChannel,
)
from lifeline.configs.messages import DEFAULT_TEMPLATES, Localized, Message, render_text
from lifeline.configs.plan import Plan
from lifeline.tasks.adapters.aws import AwsSession
from lifeline.tasks.adapters.channels import (
    ChannelFailed,
    Sent,
    SmtpServer,
    send_chat,
    send_email,
    send_sms,
    send_voice,
)
from lifeline.tasks.adapters.environment_file import read_environment_file
from lifeline.tasks.adapters.sip import SipEndpoint
from lifeline.tasks.adapters.speech import SpeechFailed, speak
from lifeline.tasks.run.adapter_inputs import aws_session
from lifeline.tasks.run.deliveries import Delivery, mask_recipient
from lifeline.tasks.run.ledger import Deliveries
from lifeline.tasks.run.record import utc_now

WORKERS_PER_CHANNEL = 16


@dataclass(frozen=True)
class Recipient:
    contact_id: str
    contact: Contact
    audience: str


@dataclass(frozen=True)
class Announcement:
    """One event told to some audiences: its fields, and the escalation level (None: the event itself)."""

    event: str
    fields: dict
    level: int | None = None
    text: Localized | None = None  # a message given by hand instead of the event's template


def message_for(plan: Plan, event: str, audience: str, language: str, text: Localized | None = None) -> Message:
    localized = text or plan.templates.get(event, {}).get(audience) or plan.templates.get(event, {}).get("all") \
        or DEFAULT_TEMPLATES[event]
    return getattr(localized, language)


class Notifier:
    """Sends a run's messages; `wait()` returns once every delivery chain has ended."""

    def __init__(self, plan: Plan, run_id: str, deliveries: Deliveries | None, *,
                 on_delivered: Callable[[Delivery], None] | None = None) -> None:
        self.plan, self.run_id, self.deliveries = plan, run_id, deliveries
        self.on_delivered = on_delivered
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self.sent: list[Delivery] = []
        self._secrets: dict[str, object] = {}

    # who

    def recipients(self, audiences: list[str], at: datetime, exclude: frozenset[str] = frozenset()) -> list[Recipient]:
        """Each contact once, in the first audience that lists them."""
        found: dict[str, Recipient] = {}
        for audience in audiences:
            for contact_id in self.plan.members_of(audience, at, self.plan.timezone):
                if contact_id not in found and contact_id not in exclude:
                    found[contact_id] = Recipient(contact_id, self.plan.contacts[contact_id], audience)
        return list(found.values())

    # what

    def announce(self, announcement: Announcement, audiences: list[str] | None = None,
                 exclude: frozenset[str] = frozenset()) -> list[Recipient]:
        """Start delivering to every recipient; returns them at once (see `wait`)."""
        wanted = self.plan.audiences_for(announcement.event) if audiences is None else audiences
        recipients = self.recipients(wanted, utc_now(), exclude)
        for recipient in recipients:
            self._submit(recipient, announcement, 0, uuid.uuid4().hex[:16])
        return recipients

    def announce_to(self, announcement: Announcement, contact_ids: list[str], channels_of: str) -> list[Recipient]:
        """Start delivering to these contacts, on the channels of audience `channels_of` (they need not be in it)."""
        recipients = [Recipient(contact_id, self.plan.contacts[contact_id], channels_of) for contact_id in contact_ids]
        for recipient in recipients:
            self._submit(recipient, announcement, 0, uuid.uuid4().hex[:16])
        return recipients

    def wait(self, timeout: float | None = None) -> list[Delivery]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [future for future in self._pending if not future.done()]
            if not pending or (deadline is not None and time.monotonic() > deadline):
                break
            pending[0].result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._lock:
            return list(self.sent)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=False)

    # how

    def _submit(self, recipient: Recipient, announcement: Announcement, position: int, message_id: str) -> None:
        channel = self.plan.audiences[recipient.audience].channels[position]
        with self._lock:
            pool = self._pools.setdefault(channel, ThreadPoolExecutor(WORKERS_PER_CHANNEL, f"notify-{channel}"))
            self._pending.append(pool.submit(self._deliver, recipient, announcement, position, message_id))

    def _deliver(self, recipient: Recipient, announcement: Announcement, position: int, message_id: str) -> None:
        chain = self.plan.audiences[recipient.audience].channels
        channel_name = chain[position]
        channel = self.plan.channels[channel_name]
        contact = recipient.contact
        message = message_for(self.plan, announcement.event, recipient.audience, contact.language, announcement.text)
        fields = {**announcement.fields, "recipient": contact.name, "at": _local_time(contact, self.plan.timezone)}
        subject, body = render_text(message.subject, fields), render_text(message.body, fields)
        if announcement.level is not None:
            prefix = f"[第{announcement.level}级升级] " if contact.language == "zh" else f"[Escalation {announcement.level}] "
            subject, body = prefix + subject, prefix + body
        address = self._address(channel_name, channel, contact)
        base = {"message_id": message_id, "run_id": self.run_id, "event": announcement.event,
                "audience": recipient.audience, "contact": recipient.contact_id, "channel": channel_name,
                "channel_type": channel.type, "recipient": mask_recipient(address) if address else "—",
                "level": announcement.level, "fallback": position > 0, "language": contact.language}
        if address is None:
            self._record(Delivery(**base, status="failed", attempt=0, answer=f"{contact.name} has no address for "
                                  f"{channel.type} channel {channel_name!r}"))
            return self._fall_back(recipient, announcement, position, message_id)
        if isinstance(channel, ManualChannel):
            self._record(Delivery(**base, status="awaiting_confirmation", attempt=1,
                                  answer=f"by {channel.medium}: call {contact.name} and say: {body} "
                                         f"(then `lifeline notify --confirm {message_id} --by YOU`)"))
            return None
        for attempt in range(1, channel.attempts + 1):
            started = time.monotonic()
            if self.deliveries is not None:
                self.deliveries.record(Delivery(**base, status="sending", attempt=attempt))
            try:
                sent = self._send(channel_name, channel, address, subject, body, contact.language)
            except ChannelFailed as failure:
                self._record(Delivery(**base, status="failed", attempt=attempt, answer=failure.answer,
                                      latency_seconds=round(time.monotonic() - started, 3)))
                if not failure.transient or attempt == channel.attempts:
                    break
                time.sleep(channel.backoff_seconds * 2 ** (attempt - 1))
                continue
            except Exception as error:  # noqa: BLE001 - a sender's bug must not stop the other channels
                self._record(Delivery(**base, status="failed", attempt=attempt, answer=f"{type(error).__name__}",
                                      latency_seconds=round(time.monotonic() - started, 3)))
                break
            self._record(Delivery(**base, status="delivered", attempt=attempt, answer=sent.answer,
                                  latency_seconds=round(time.monotonic() - started, 3)))
            return None
        return self._fall_back(recipient, announcement, position, message_id)

    def _fall_back(self, recipient: Recipient, announcement: Announcement, position: int, message_id: str) -> None:
        if position + 1 < len(self.plan.audiences[recipient.audience].channels):
            self._submit(recipient, announcement, position + 1, message_id)

    def _address(self, name: str, channel, contact: Contact) -> str | None:
        if name in contact.addresses:
            return contact.addresses[name]
        if isinstance(channel, SmsChannel | ManualChannel | VoiceChannel):
            return contact.phones[0] if contact.phones else None
        if isinstance(channel, EmailChannel):
            return contact.email
        return self._chat_url(name, channel)

    def _send(self, name: str, channel, address: str, subject: str, body: str, language: str) -> Sent:
        if isinstance(channel, SmsChannel):
            return send_sms(self._aws(), address, body, channel.sender_id)
        if isinstance(channel, EmailChannel):
            return send_email(self._smtp(name, channel), address, subject, body)
        if isinstance(channel, VoiceChannel):
            return self._call(channel, address, body, language)
        assert isinstance(channel, ChatChannel)
        return send_chat(address, subject, body, channel.timeout_seconds, shown_as=f"chat {name}")

    def _call(self, channel: VoiceChannel, number: str, body: str, language: str) -> Sent:
        telephony = self.plan.telephony
        if telephony is None:
            raise ChannelFailed("voice: the plan has no `telephony` section (its SBC places the calls)", transient=False)
        try:
            spoken = speak([(language, body)])
        except SpeechFailed as error:
            raise ChannelFailed(f"voice: {error}", transient=False) from None
        return send_voice(SipEndpoint(telephony.sbc.address, telephony.sbc.port), number, channel.caller_id,
                          spoken.audio, channel.ring_seconds)

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self.sent.append(delivery)
        if self.deliveries is not None:
            self.deliveries.record(delivery)
        if delivery.status == "delivered" and self.on_delivered is not None:
            self.on_delivered(delivery)

    # secrets, read once per run

    def _aws(self) -> AwsSession:
        aws = self.plan.aws
        if aws is None:
            raise ChannelFailed("sms: the plan has no `aws` section", transient=False)
        return aws_session(aws)

    def _smtp(self, name: str, channel: EmailChannel) -> SmtpServer:
        with self._lock:
            if name not in self._secrets:
                login = read_environment_file(channel.credentials_file)
                self._secrets[name] = SmtpServer(channel.host, channel.port, channel.security, channel.sender,
                                                 login.get("SMTP_USERNAME"), login.get("SMTP_PASSWORD"),
                                                 channel.timeout_seconds)
            return self._secrets[name]  # type: ignore[return-value]

    def _chat_url(self, name: str, channel: ChatChannel) -> str:
        with self._lock:
            if name not in self._secrets:
                self._secrets[name] = channel.url or (channel.url_file.read_text().strip() if channel.url_file else "")
            return str(self._secrets[name])


def _local_time(contact: Contact, plan_timezone: str) -> str:
    return utc_now().astimezone(ZoneInfo(contact.timezone or plan_timezone)).strftime("%Y-%m-%d %H:%M %Z")
