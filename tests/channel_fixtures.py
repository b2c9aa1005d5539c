"""Channels' far ends on loopback for the suite: a JSON webhook (what a chat room would show) and an SMTP sink."""

from __future__ import annotations

import json
import mailbox
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.servers import free_port


class Webhook:
    """A JSON webhook receiver on loopback: what a chat room would show. `answer_status` 500: a provider that is
    failing (it reads each post, then answers 500)."""

    def __init__(self, answer_status: int = 200) -> None:
        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                body = b'{"ok": true}' if answer_status == 200 else b""
                self.send_response(answer_status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.apprise_url = f"json://127.0.0.1:{self.server.server_port}/hook"  # as the lab's chat: Apprise's json://
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """(port, Maildir folder) of an SMTP server that keeps every message it is given."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    folder = tmp_path / "mail"
    mailbox.Maildir(str(folder), create=True)
    port = free_port()
    controller = Controller(Mailbox(folder), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, folder
    controller.stop()


def mails_in(folder: Path) -> list[mailbox.MaildirMessage]:
    return [mailbox.MaildirMessage(message) for message in mailbox.Maildir(str(folder))]
