"""The lab's SMTP sink: aiosmtpd on the ops side, every message kept in a Maildir.

Runs as ``python -m lifeline.infra.lab.smtp --lab-dir DIR``. Tests and flows read what arrived
with :func:`received_messages`.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import mailbox
import signal
import sys
import threading
from email.message import EmailMessage
from pathlib import Path

from .state import LabPaths, load_state


def received_messages(paths: LabPaths) -> list[EmailMessage]:
    """Every message the sink received, oldest first (headers decoded: ``message["Subject"]``
    is the text as written, even when it was sent RFC 2047-encoded)."""
    files = [path for folder in ("new", "cur") for path in (paths.maildir / folder).glob("*") if path.is_file()]
    files.sort(key=lambda path: path.stat().st_mtime_ns)
    messages: list[EmailMessage] = []
    for path in files:
        with open(path, "rb") as handle:
            parsed = email.message_from_binary_file(handle, policy=email.policy.default)
        if isinstance(parsed, EmailMessage):
            messages.append(parsed)
    return messages


def login(paths: LabPaths) -> tuple[str, str]:
    """The sink's one login (user, password), from the lab's 0600 credentials file."""
    from dotenv import dotenv_values

    values = dotenv_values(paths.smtp_credentials_file)
    return str(values["SMTP_USERNAME"]), str(values["SMTP_PASSWORD"])


def _login_of(paths: LabPaths):  # noqa: ANN202 - aiosmtpd's authenticator callable
    from aiosmtpd.smtp import AuthResult, LoginPassword

    user, password = login(paths)

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:  # noqa: ANN001
        given = auth_data if isinstance(auth_data, LoginPassword) else None
        return AuthResult(success=given is not None and given.login.decode() == user
                          and given.password.decode() == password)

    return authenticate


def serve(lab_dir: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    paths = LabPaths(lab_dir)
    state = load_state(paths)
    if state is None:
        raise SystemExit(f"no lab state in {lab_dir}")
    paths.maildir.parent.mkdir(parents=True, exist_ok=True)
    mailbox.Maildir(str(paths.maildir), create=True)
    controller = Controller(Mailbox(paths.maildir), hostname=state.addresses.ops, port=state.ports.smtp,
                            authenticator=_login_of(paths), auth_required=True, auth_require_tls=False)
    controller.start()
    print(f"smtp sink on {state.addresses.ops}:{state.ports.smtp} -> {paths.maildir}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the lab's SMTP sink")
    parser.add_argument("--lab-dir", type=Path, required=True)
    serve(parser.parse_args(argv).lab_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
