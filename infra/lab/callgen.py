"""The call generator (ops side): simulated customers calling the call centre's service number.

It places real SIP calls at a steady rate through the carrier's SBC (the lab's Kamailio), which
routes them to the site its dispatcher names; that site's PBX answers once its CRM has recorded
the call. Each call is short: answered, then hung up after ``HOLD_SECONDS``.

Every call is logged to ``calls_log`` in the call log database: placed_at, caller_id, site (the
PBX that answered or refused it), outcome (``answered``: 200 OK; ``failed``: a SIP error or no
response; ``abandoned``: ringing but no answer within the answer timeout), the CRM call id the
site acknowledged, and the set-up time.

Runs as ``python -m lifeline.infra.lab.callgen --lab-dir DIR [--rate 10] [--answer-timeout 2]``.
"""

from __future__ import annotations

import argparse
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

from lifeline.tasks.adapters.sip import SipEndpoint, place_call

from .state import LabPaths, LabState, load_state

KNOWN_CUSTOMERS = 2000
SERVICE_NUMBER = "4008001234"  # the number customers dial (the lab plan's telephony.service_number)
HOLD_SECONDS = 0.2
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
        self.sbc = SipEndpoint(state.addresses.ops, state.ports.sip)
        self.writer = CallLogWriter(paths, state)
        self.random = random.Random()
        self.counts: dict[str, int] = {"answered": 0, "failed": 0, "abandoned": 0}
        self.counts_lock = threading.Lock()

    def place_call(self, caller_id: str) -> None:
        placed_at = datetime.now(UTC)
        result = place_call(self.sbc, SERVICE_NUMBER, caller_id, answer_timeout=self.answer_timeout,
                            hold_seconds=HOLD_SECONDS, local_address=self.state.addresses.ops)
        site = result.headers.get("x-lifeline-site")
        call_id = result.headers.get("x-lifeline-call-id")
        detail = None if result.outcome == "answered" else result.summary[:200]
        with self.counts_lock:
            self.counts[result.outcome] += 1
        self.writer.add(CallRecord(placed_at, caller_id, site, result.outcome,
                                   int(call_id) if call_id and call_id.isdigit() else None,
                                   int(result.setup_seconds * 1000), detail))

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
    print(f"placing {rate:g} calls/s to {SERVICE_NUMBER} through the SBC at {generator.sbc.label}", flush=True)
    generator.run(stop)
    os._exit(0)  # do not wait for calls still ringing (the executor's threads would be joined)


if __name__ == "__main__":
    main(sys.argv[1:])
