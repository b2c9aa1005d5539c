"""The call generator (ops side): simulated customers calling the call centre.

It places calls over HTTP at a steady rate to whichever site the Route 53 record names. Like a
real client it resolves the record (through moto's Route 53 API, which serves no DNS) and keeps
the answer for the record's TTL; if the lookup fails it keeps using the stale answer. The
record's value is mapped to a site by the plan's ``dns.values`` (kept in the lab state).

Every call is logged to ``calls_log`` in the call log database: placed_at, caller_id, site,
outcome (``answered``: HTTP 200; ``failed``: an error or refusal; ``abandoned``: no answer
within the answer timeout), the call id the site acknowledged, and the latency.

Runs as ``python -m lifeline.infra.lab.callgen --lab-dir DIR [--rate 10] [--answer-timeout 2]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .state import LabPaths, LabState, load_state

KNOWN_CUSTOMERS = 2000
UNKNOWN_CALLER_SHARE = 0.08
INSERT_SQL = """INSERT INTO calls_log (placed_at, caller_id, site, outcome, call_id, latency_ms, detail)
VALUES (%s, %s, %s, %s, %s, %s, %s)"""


def customer_phone(number: int) -> str:
    """The phone of customer ``number`` (1..2000) in the CRM seed (crm.sql uses the same rule)."""
    return f"+86138{10_000_000 + number}"


def random_caller(generator: random.Random) -> str:
    if generator.random() < UNKNOWN_CALLER_SHARE:
        return f"+86139{generator.randrange(10_000_000, 99_999_999)}"
    return customer_phone(generator.randint(1, KNOWN_CUSTOMERS))


@dataclass
class CallRecord:
    placed_at: datetime
    caller_id: str
    site: str | None
    outcome: str
    call_id: int | None
    latency_ms: int
    detail: str | None

    def row(self) -> tuple[Any, ...]:
        return (self.placed_at, self.caller_id, self.site, self.outcome, self.call_id, self.latency_ms, self.detail)


class RecordResolver:
    """Looks the service record up and caches the answer for its TTL."""

    def __init__(self, paths: LabPaths, state: LabState) -> None:
        self.paths = paths
        self.state = state
        self.sites_by_value = {value: site for site, value in state.dns_values.items()}
        self.lock = threading.Lock()
        self.value: str | None = None
        self.expires = 0.0
        self.error: str | None = None
        self.route53: Any = None
        self.zone_id: str | None = None

    def _lookup(self) -> tuple[str | None, int]:
        from . import aws

        if self.route53 is None:
            self.route53 = aws.client(self.paths, self.state, "route53")
        if self.zone_id is None:
            self.zone_id = aws.hosted_zone_id(self.route53)
        return aws.record_value(self.route53, self.zone_id)

    def current(self) -> tuple[str | None, str | None]:
        """(site, problem): the site the cached answer names, or None and why."""
        with self.lock:
            if time.monotonic() >= self.expires:
                try:
                    self.value, ttl = self._lookup()
                    self.expires = time.monotonic() + ttl
                    self.error = None
                except Exception as lookup_error:  # noqa: BLE001 - keep the stale answer, retry soon
                    self.route53 = None  # the key may have changed (moto restarted)
                    self.zone_id = None
                    self.error = f"dns lookup failed: {str(lookup_error)[:120]}"
                    self.expires = time.monotonic() + 1.0
            value, problem = self.value, self.error
        if value is None:
            return None, problem or "the record has no value"
        site = self.sites_by_value.get(value)
        return (site, None) if site else (None, f"the record names unknown address {value}")


class CallLogWriter:
    """Batches call records into the call log; keeps them while the call log is unreachable."""

    def __init__(self, paths: LabPaths, state: LabState) -> None:
        self.parameters: dict[str, Any] = {
            "host": state.addresses.ops, "port": state.ports.postgres_calllog, "user": state.user,
            "dbname": "calls", "passfile": str(paths.postgres_passfile), "connect_timeout": 3,
            "application_name": "callgen",
        }
        self.records: queue.Queue[CallRecord] = queue.Queue()
        self.pending: list[CallRecord] = []
        self.connection: Any = None

    def add(self, record: CallRecord) -> None:
        self.records.put(record)

    def flush(self) -> bool:
        import psycopg

        while True:
            try:
                self.pending.append(self.records.get_nowait())
            except queue.Empty:
                break
        if not self.pending:
            return True
        try:
            if self.connection is None or self.connection.closed:
                self.connection = psycopg.connect(**self.parameters)
            with self.connection.transaction(), self.connection.cursor() as cursor:
                cursor.executemany(INSERT_SQL, [record.row() for record in self.pending])
            self.pending.clear()
            return True
        except psycopg.Error as error:
            print(f"call log unavailable ({len(self.pending)} records kept): {error}", file=sys.stderr, flush=True)
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            del self.pending[:-100_000]
            return False

    def run(self, stop: threading.Event, interval: float = 0.25) -> None:
        while not stop.is_set():
            stop.wait(interval if self.flush() else 1.0)
        self.flush()


class CallGenerator:
    def __init__(self, paths: LabPaths, state: LabState, rate: float, answer_timeout: float) -> None:
        self.state = state
        self.rate = rate
        self.answer_timeout = answer_timeout
        self.resolver = RecordResolver(paths, state)
        self.writer = CallLogWriter(paths, state)
        self.random = random.Random()
        self.counts: dict[str, int] = {"answered": 0, "failed": 0, "abandoned": 0}
        self.counts_lock = threading.Lock()

    def place_call(self, caller_id: str) -> None:
        placed_at = datetime.now(UTC)
        started = time.monotonic()
        site, problem = self.resolver.current()
        outcome, call_id, detail = "failed", None, problem
        if site is not None:
            outcome, call_id, detail = self._dial(site, caller_id)
        latency = int((time.monotonic() - started) * 1000)
        with self.counts_lock:
            self.counts[outcome] += 1
        self.writer.add(CallRecord(placed_at, caller_id, site, outcome, call_id, latency, detail))

    def _dial(self, site: str, caller_id: str) -> tuple[str, int | None, str | None]:
        address = self.state.addresses.of(site)
        port = self.state.ports.for_component(f"service-{site}")
        body = json.dumps({"caller_id": caller_id})
        connection = http.client.HTTPConnection(address, port, timeout=self.answer_timeout)
        try:
            connection.request("POST", "/calls", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
        except TimeoutError:
            return "abandoned", None, f"no answer within {self.answer_timeout:g}s"
        except OSError as error:
            return "failed", None, str(error)[:200]
        except http.client.HTTPException as error:
            return "failed", None, f"{type(error).__name__}: {error}"[:200]
        finally:
            connection.close()
        if response.status != 200:
            return "failed", None, f"HTTP {response.status}"
        try:
            return "answered", int(json.loads(payload)["call_id"]), None
        except (ValueError, KeyError, TypeError):
            return "failed", None, "unreadable answer"

    def run(self, stop: threading.Event) -> None:
        """Place calls until ``stop`` is set; then log what has been placed (calls still ringing
        are dropped: the generator is being switched off, not the customers)."""
        writer = threading.Thread(target=self.writer.run, args=(stop,), name="call-log-writer")
        writer.start()
        interval = 1.0 / self.rate if self.rate > 0 else 1.0
        next_call = time.monotonic()
        last_report = next_call
        callers = ThreadPoolExecutor(max_workers=64, thread_name_prefix="caller")
        while not stop.is_set():
            if self.rate > 0:
                callers.submit(self.place_call, random_caller(self.random))
            next_call = max(next_call + interval, time.monotonic() - interval)
            stop.wait(max(0.0, next_call - time.monotonic()))
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                print(f"calls so far: {self.counts}", flush=True)
        callers.shutdown(wait=False, cancel_futures=True)
        writer.join(timeout=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the lab's call generator")
    parser.add_argument("--lab-dir", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=None, help="calls per second (default: the lab's)")
    parser.add_argument("--answer-timeout", type=float, default=2.0, help="seconds before a call is abandoned")
    arguments = parser.parse_args(argv)
    paths = LabPaths(arguments.lab_dir)
    state = load_state(paths)
    if state is None:
        raise SystemExit(f"no lab state in {arguments.lab_dir}")
    rate = arguments.rate if arguments.rate is not None else state.call_rate
    generator = CallGenerator(paths, state, rate, arguments.answer_timeout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"placing {rate:g} calls/s to the site {state.dns_values} names", flush=True)
    generator.run(stop)
    os._exit(0)  # do not wait for calls still ringing (the executor's threads would be joined)


if __name__ == "__main__":
    main(sys.argv[1:])
