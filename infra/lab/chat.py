"""The lab's chat webhook receiver: a small HTTP server on the ops side that keeps every message.

Runs as ``python -m lifeline.infra.lab.chat --lab-dir DIR``. Every ``POST`` with a JSON body (a
plain webhook, or Apprise's ``json://host:port/path``, which posts ``{"version", "title",
"message", "type", ...}``) is appended as one line to ``ops/chat.jsonl``:
``{"at": ISO time, "path": request path, "body": the parsed JSON}``, and answered 200
``{"ok": true}``; a body that is not JSON gets 400. Tests and flows read what arrived with
:func:`sent_chat`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .state import LabPaths, load_state, now_iso

MAX_BODY_BYTES = 1024 * 1024


def sent_chat(paths: LabPaths) -> list[dict[str, Any]]:
    """Every message the receiver got, oldest first (at, path, body)."""
    if not paths.chat_file.exists():
        return []
    return [json.loads(line) for line in paths.chat_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _handler(chat_file: Path) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class ChatHandler(BaseHTTPRequestHandler):
        server_version = "lifeline-lab-chat"

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            encoded = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, {"ok": False, "error": f"body larger than {MAX_BODY_BYTES} bytes"})
                return
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                self._answer(400, {"ok": False, "error": f"the body is not JSON: {error}"})
                return
            line = json.dumps({"at": now_iso(), "path": self.path, "body": body}, ensure_ascii=False)
            with lock, open(chat_file, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
            self._answer(200, {"ok": True})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            print(f"{self.address_string()} {format % args}", flush=True)

    return ChatHandler


def serve(lab_dir: Path) -> None:
    paths = LabPaths(lab_dir)
    state = load_state(paths)
    if state is None:
        raise SystemExit(f"no lab state in {lab_dir}")
    paths.chat_file.parent.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((state.addresses.ops, state.ports.chat), _handler(paths.chat_file))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="chat", daemon=True)
    thread.start()
    print(f"chat receiver on {state.addresses.ops}:{state.ports.chat} -> {paths.chat_file}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the lab's chat webhook receiver")
    parser.add_argument("--lab-dir", type=Path, required=True)
    serve(parser.parse_args(argv).lab_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
