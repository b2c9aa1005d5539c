"""Sending one message on one channel: SMS (SNS), email (SMTP), chat (Apprise or a JSON webhook), voice (SIP).

Each sender returns what the provider answered, or raises ChannelFailed saying whether a retry
could help (`transient`). Knows neither Prefect nor the plan; secrets stay out of every message.
"""

from __future__ import annotations

import json
import re
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Literal

from lifeline.tasks.adapters.aws import AwsError, AwsSession
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.sip import SipEndpoint, place_call


class ChannelFailed(LifelineError):
    """The message did not go out on this channel; `transient`: a retry may succeed."""

    def __init__(self, answer: str, *, transient: bool) -> None:
        super().__init__(answer)
        self.answer = answer
        self.transient = transient


@dataclass(frozen=True)
class Sent:
    """The provider took the message: its id for it, and what it said."""

    message_id: str
    answer: str


def send_sms(aws: AwsSession, phone_number: str, text: str, sender_id: str | None = None) -> Sent:
    try:
        message_id = aws.publish_sms(phone_number, text, sender_id=sender_id)
    except AwsError as error:
        raise ChannelFailed(str(error), transient=bool(error.transient)) from None
    return Sent(message_id, f"SNS accepted: MessageId {message_id}")


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    security: Literal["starttls", "ssl", "none"]
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 10


def send_email(server: SmtpServer, to: str, subject: str, body: str) -> Sent:
    message = EmailMessage()
    # one line: a newline from a message's fields (a reason typed into a form) would end the header there
    message["From"], message["To"], message["Subject"] = server.sender, to, " ".join(subject.splitlines())
    message["Message-ID"] = make_msgid(domain=server.sender.rsplit("@", 1)[-1])
    message.set_content(body)
    where = f"SMTP {server.host}:{server.port}"
    try:
        connection: smtplib.SMTP
        if server.security == "ssl":
            connection = smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout_seconds,
                                          context=ssl.create_default_context())
        else:
            connection = smtplib.SMTP(server.host, server.port, timeout=server.timeout_seconds)
        with connection:
            if server.security == "starttls":
                connection.starttls(context=ssl.create_default_context())
            if server.username:
                connection.login(server.username, server.password or "")
            refused = connection.send_message(message)
            code, said = connection.noop()
    except smtplib.SMTPAuthenticationError as error:
        raise ChannelFailed(f"{where}: login as {server.username!r} refused ({error.smtp_code})", transient=False) from None
    except smtplib.SMTPResponseException as error:
        text = error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes) else str(error.smtp_error)
        raise ChannelFailed(f"{where}: {error.smtp_code} {' '.join(text.split())[:200]}",
                            transient=400 <= error.smtp_code < 500) from None
    except smtplib.SMTPRecipientsRefused as error:
        raise ChannelFailed(f"{where}: recipient refused ({_first_refusal(error.recipients)})", transient=False) from None
    except (OSError, smtplib.SMTPException) as error:
        raise ChannelFailed(f"{where}: {_connection_problem(error)}", transient=True) from None
    if refused:
        raise ChannelFailed(f"{where}: recipient refused ({_first_refusal(refused)})", transient=False)
    return Sent(str(message["Message-ID"]), f"{where} accepted ({code})")


def _first_refusal(refused: dict) -> str:
    code, said = next(iter(refused.values()))
    return f"{code} {said.decode(errors='replace') if isinstance(said, bytes) else said}"[:200]


def _connection_problem(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    return " ".join(str(error).split())[:200] or type(error).__name__


def send_chat(url: str, title: str, body: str, timeout_seconds: float = 10, *, shown_as: str = "chat") -> Sent:
    """`url`: an http(s) address gets {"title", "message"} as JSON; anything else is an Apprise URL.
    `shown_as` names the target in answers (the URL may carry a token)."""
    if url.startswith(("http://", "https://")):
        return _post_json(url, {"title": title, "message": body}, timeout_seconds, shown_as)
    return _apprise(url, title, body, timeout_seconds, shown_as)


def _post_json(url: str, payload: dict, timeout_seconds: float, shown_as: str) -> Sent:
    request = urllib.request.Request(url, data=json.dumps(payload, ensure_ascii=False).encode(), method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:  # noqa: S310 - the plan's URL
            said = response.read(300).decode(errors="replace")
            status = response.status
    except urllib.error.HTTPError as error:
        raise ChannelFailed(f"{shown_as}: HTTP {error.code}", transient=error.code >= 500 or error.code == 429) from None
    except (OSError, urllib.error.URLError) as error:
        reason = getattr(error, "reason", error)
        raise ChannelFailed(f"{shown_as}: {_connection_problem(reason if isinstance(reason, BaseException) else error)}",
                            transient=True) from None
    return Sent(f"{shown_as}:{status}", f"{shown_as}: HTTP {status} {' '.join(said.split())[:100]}".strip())


def _refusal_status(result: object) -> int | None:
    """The HTTP status a provider refused with, from the `error=500.` Apprise's plugins log for each service
    (its result keeps every service's log of this call). Only the number is read: the log may carry a token."""
    for service in result if isinstance(result, Iterable) else ():
        logs = getattr(service, "logs", ())
        for entry in logs() if callable(logs) else logs:
            found = re.search(r"error=(\d{3})\b", str(getattr(entry, "message", "")))
            if found:
                return int(found.group(1))
    return None


def _apprise(url: str, title: str, body: str, timeout_seconds: float, shown_as: str) -> Sent:
    import apprise

    notifier = apprise.Apprise()
    if not notifier.add(url):
        raise ChannelFailed(f"{shown_as}: not a URL Apprise knows", transient=False)
    result = notifier.notify(body=body, title=title, timeout=timeout_seconds)
    if not result:  # its logs name the URL, which may carry a token: only the provider's HTTP status is repeated
        status = _refusal_status(result)
        if status is None:
            raise ChannelFailed(f"{shown_as}: Apprise could not deliver", transient=True)
        # a refusal (a 4xx but 429) is the same on every retry: only a server error or throttling is retried
        raise ChannelFailed(f"{shown_as}: HTTP {status} (Apprise could not deliver)",
                            transient=status >= 500 or status == 429)
    return Sent(f"{shown_as}:apprise", f"{shown_as}: Apprise delivered")


NOT_REACHABLE_STATUSES = (404, 484, 604)  # no such number: calling again does not help


def send_voice(sbc: SipEndpoint, number: str, caller_id: str, audio: bytes, ring_seconds: float) -> Sent:
    """Call `number` through the SBC and play `audio` (µ-law); delivered only when somebody answers."""
    result = place_call(sbc, number, caller_id, answer_timeout=ring_seconds, play=audio)
    if result.outcome != "answered":
        raise ChannelFailed(f"voice {number}: {result.summary}",
                            transient=result.status not in NOT_REACHABLE_STATUSES) from None
    played, length = result.packets * 0.02, len(audio) / 8000
    answer = f"voice: answered by {result.answered_by} after {result.setup_seconds:.1f} s; played {played:.1f} of {length:.1f} s"
    return Sent(f"voice:{result.headers.get('call-id', number)}", answer)
