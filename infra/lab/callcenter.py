"""The call-centre service of one site: a small HTTP server in front of its site's CRM database.

``GET /health``  -> 200 only after a heartbeat write of its own commits (a read-only standby
                    answers 503), with JSON ``{"site", "healthy", "detail"}``.
``POST /calls``  -> body ``{"caller_id": "+8613810000042"}``; writes the call into ``calls`` and
                    answers 200 ``{"call_id": N, "site": ...}``, or 503 if the write fails.

Runs as ``python -m lifeline.infra.lab.callcenter --lab-dir DIR --site main``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

from .state import LabPaths, load_state

HEARTBEAT_SQL = """
INSERT INTO health (site, beat, at) VALUES (%(site)s, 1, now())
ON CONFLICT (site) DO UPDATE SET beat = health.beat + 1, at = now()
RETURNING beat
"""

CALL_SQL = """
INSERT INTO calls (customer_id, agent_id, caller_id, site, started_at, disposition)
VALUES ((SELECT id FROM customers WHERE phone = %(caller_id)s),
        1 + floor(random() * 50)::int, %(caller_id)s, %(site)s, now(), 'answered')
RETURNING id
"""


class ConnectionPool:
    """A few reusable connections; a broken one is thrown away."""

    def __init__(self, parameters: dict[str, Any], keep: int = 8) -> None:
        self.parameters = parameters
        self.keep = keep
        self.idle: list[psycopg.Connection[Any]] = []
        self.lock = threading.Lock()

    def execute(self, sql: str, values: dict[str, Any], *, idempotent: bool = False) -> Any:
        """Run one statement. A connection survives SQL errors (a standby's read-only refusal)
        and is dropped when it is broken; ``idempotent`` statements are then retried once on a
        fresh connection (the database may have restarted since the pooled one was opened)."""
        with self.lock:
            connection = self.idle.pop() if self.idle else None
        pooled = connection is not None
        if connection is None:
            connection = psycopg.connect(autocommit=True, **self.parameters)
        try:
            row = connection.execute(sql, values).fetchone()
        except psycopg.Error:
            if connection.closed or connection.broken:
                connection.close()
                if pooled and idempotent:
                    return self.execute(sql, values, idempotent=True)
            else:
                self._give_back(connection)
            raise
        except BaseException:
            connection.close()
            raise
        self._give_back(connection)
        return row[0] if row else None

    def _give_back(self, connection: psycopg.Connection[Any]) -> None:
        with self.lock:
            if len(self.idle) < self.keep:
                self.idle.append(connection)
                return
        connection.close()


class CallCentreHandler(BaseHTTPRequestHandler):
    server: CallCentreServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: without this, +40 ms per answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one line per call at 10 calls/s is noise; failures are logged below

    def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.split("?")[0] != "/health":
            self._answer(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        site = self.server.site
        try:
            beat = self.server.pool.execute(HEARTBEAT_SQL, {"site": site}, idempotent=True)
        except psycopg.Error as error:
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE,
                         {"site": site, "healthy": False, "detail": _short(error)})
            return
        self._answer(HTTPStatus.OK, {"site": site, "healthy": True, "detail": f"heartbeat {beat} committed"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if self.path.split("?")[0] != "/calls":
            self._answer(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            caller_id = str(body["caller_id"])
        except (ValueError, KeyError, TypeError):
            self._answer(HTTPStatus.BAD_REQUEST, {"error": "expected JSON {\"caller_id\": ...}"})
            return
        site = self.server.site
        try:
            call_id = self.server.pool.execute(CALL_SQL, {"caller_id": caller_id, "site": site})
        except psycopg.Error as error:
            print(f"call from {caller_id} failed: {_short(error)}", file=sys.stderr, flush=True)
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE, {"site": site, "error": _short(error)})
            return
        self._answer(HTTPStatus.OK, {"call_id": call_id, "site": site})


class CallCentreServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], site: str, pool: ConnectionPool) -> None:
        self.site = site
        self.pool = pool
        super().__init__(address, CallCentreHandler)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def serve(lab_dir: Path, site: str) -> None:
    paths = LabPaths(lab_dir)
    state = load_state(paths)
    if state is None:
        raise SystemExit(f"no lab state in {lab_dir}")
    address = state.addresses.of(site)
    parameters = {
        "host": address,
        "port": state.ports.for_component(f"postgres-{site}"),
        "user": state.user,
        "dbname": "crm",
        "passfile": str(paths.postgres_passfile),
        "connect_timeout": 2,
        "application_name": f"service-{site}",
        "options": "-c statement_timeout=2000",
    }
    server = CallCentreServer((address, state.ports.for_component(f"service-{site}")), site, ConnectionPool(parameters))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"call-centre service {site} on http://{address}:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the call-centre service of one lab site")
    parser.add_argument("--lab-dir", type=Path, required=True)
    parser.add_argument("--site", choices=["main", "dr"], required=True)
    arguments = parser.parse_args(argv)
    serve(arguments.lab_dir, arguments.site)


if __name__ == "__main__":
    main(sys.argv[1:])
