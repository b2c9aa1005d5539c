"""Notify 200 recipients over three channels: Lifeline's notifier against Apprise alone, in one loop.

Channels, all real and on loopback: email to an aiosmtpd sink, a plain JSON webhook, and an Apprise
`json://` URL to the same receiver. Lifeline renders each recipient's message in their language,
records every attempt in a SQLite ledger and sends concurrently (a pool per channel); the baseline
sends the same messages with Apprise, one after another. Both are timed until the last delivery.

Then, on a lab of its own, the time to notify: failovers with the lab's roster and real channels (SMS
through moto's SNS first), each from `declared` to the first delivery to the liaison (the record's
`notified` milestone), with a failback between them.
"""

from __future__ import annotations

import argparse
import json
import mailbox
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.benchmarks.common import bench_tmpdir, log, median, print_table, ratio, spread
from tests.servers import free_port

CHANNELS = ("email", "webhook", "apprise")


class Receiver:
    def __init__(self) -> None:
        self.count = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    receiver.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def plan_document(recipients: int, smtp_port: int, hook_port: int, folder: Path) -> dict:
    (folder / "pw").write_text("x")
    contacts = {f"person{index:03d}": {"name": f"Person {index}", "role": f"r{index % 3}",
                                       "email": f"person{index:03d}@cc.example",
                                       "language": "zh" if index % 2 else "en"} for index in range(recipients)}
    return {
        "name": "bench", "hotline": "+861012345678",
        "repositories": {"local": {"url": "./repo", "password_file": "./pw"}},
        "datasets": {"files": {"repository": "local", "paths": ["/tmp"]}},
        "contacts": contacts,
        "channels": {
            "email": {"type": "email", "host": "127.0.0.1", "port": smtp_port, "security": "none",
                      "sender": "lifeline@cc.example"},
            "webhook": {"type": "chat", "url": f"http://127.0.0.1:{hook_port}/hook"},
            "apprise": {"type": "chat", "url": f"json://127.0.0.1:{hook_port}/apprise"},
        },
        "audiences": {name: {"members": [f"role:r{index}"], "channels": [name]} for index, name in enumerate(CHANNELS)},
    }


def lifeline_round(loaded, ledger_url: str) -> tuple[float, int]:
    from lifeline.configs.messages import sample_fields
    from lifeline.tasks.run.ledger import Deliveries, Ledger
    from lifeline.tasks.steps.notify import Announcement, Notifier

    notifier = Notifier(loaded.plan, "bench", Deliveries(Ledger(ledger_url)))
    started = time.perf_counter()
    notifier.announce(Announcement("test", {**sample_fields("test"), "plan": "bench"}), list(CHANNELS))
    sent = notifier.wait()
    elapsed = time.perf_counter() - started
    notifier.close()
    return elapsed, sum(1 for delivery in sent if delivery.status == "delivered")


def apprise_round(loaded, smtp_port: int, hook_port: int) -> tuple[float, int]:
    import apprise
    from lifeline.configs.messages import render_text, sample_fields
    from lifeline.tasks.steps.notify import message_for

    plan = loaded.plan
    started = time.perf_counter()
    delivered = 0
    for index, contact in enumerate(plan.contacts.values()):
        channel = CHANNELS[index % 3]
        url = {"email": f"mailto://127.0.0.1:{smtp_port}?from=lifeline@cc.example&to={contact.email}"
                        "&mode=insecure&smtp=127.0.0.1",
               "webhook": f"json://127.0.0.1:{hook_port}/hook",
               "apprise": f"json://127.0.0.1:{hook_port}/apprise"}[channel]
        message = message_for(plan, "test", channel, contact.language)
        fields = {**sample_fields("test"), "plan": "bench", "recipient": contact.name}
        notifier = apprise.Apprise()
        notifier.add(url)
        delivered += bool(notifier.notify(body=render_text(message.body, fields),
                                          title=render_text(message.subject, fields)))
    return time.perf_counter() - started, delivered


def lab_times_to_notify(failovers: int) -> list[float]:
    """Seconds from `declared` to the liaison's first delivery, one per lab failover."""
    from tests.benchmarks.failover_runs import back_to_normal, lifeline_failover
    from tests.benchmarks.lab import backed_up_lab

    seconds = []
    with bench_tmpdir("notify-lab") as root, backed_up_lab(root) as lab:
        for number in range(failovers):
            log(f"lab failover {number + 1}/{failovers}")
            outcome = lifeline_failover(lab)
            seconds.append(outcome.milestones["notified"] - outcome.milestones["declared"])
            back_to_normal(lab)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notify")
    parser.add_argument("--recipients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lab-failovers", type=int, default=3, help="0: skip the lab's time to notify")
    options = parser.parse_args(argv)
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox
    from lifeline.configs.loading import load_plan

    with bench_tmpdir("notify") as folder:
        mailbox.Maildir(str(folder / "mail"), create=True)
        smtp_port = free_port()
        sink = Controller(Mailbox(folder / "mail"), hostname="127.0.0.1", port=smtp_port)
        sink.start()
        receiver = Receiver()
        plan_file = folder / "plan.yaml"
        plan_file.write_text(yaml.safe_dump(plan_document(options.recipients, smtp_port, receiver.port, folder)))
        loaded = load_plan(plan_file)
        ledger_url = f"sqlite:///{folder / 'ledger.db'}"
        ours, theirs, delivered = [], [], set()
        try:
            for round_number in range(options.rounds):
                log(f"round {round_number + 1}/{options.rounds}")
                seconds, count = lifeline_round(loaded, ledger_url)
                ours.append(seconds)
                delivered.add(("lifeline", count))
                seconds, count = apprise_round(loaded, smtp_port, receiver.port)
                theirs.append(seconds)
                delivered.add(("apprise", count))
        finally:
            sink.stop()
            receiver.server.shutdown()
    print_table(
        ["sender", "seconds", "spread", "delivered", "vs Apprise"],
        [["Lifeline (pool per channel, ledger)", median(ours), spread(ours),
          ", ".join(str(c) for who, c in sorted(delivered) if who == "lifeline"), ratio(median(ours), median(theirs))],
         ["Apprise alone, one loop", median(theirs), spread(theirs),
          ", ".join(str(c) for who, c in sorted(delivered) if who == "apprise"), "1.00x"]],
        title=f"notify {options.recipients} recipients over {len(CHANNELS)} channels, until the last delivery "
              f"(median of {options.rounds}; goal: Lifeline <= 1.2x Apprise alone)",
    )
    met = median(ours) <= 1.2 * median(theirs)
    if options.lab_failovers > 0:
        notified = lab_times_to_notify(options.lab_failovers)
        print_table(
            ["measure", "median s", "spread", "each", "goal", "met"],
            [["declared -> first delivery to the liaison", median(notified), spread(notified),
              ", ".join(f"{value:.2f}" for value in notified), "<= 2 s", "yes" if median(notified) <= 2 else "no"]],
            title=f"time to notify on a lab failover (fault main-db-down, roster and channels of the lab; "
                  f"{options.lab_failovers} failovers, a failback between them)",
        )
        met = met and median(notified) <= 2
    return 0 if met else 1
