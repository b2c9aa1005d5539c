"""Telephony benchmark: calls lost during a lab failover with the SIP cut-over, against the same failover
with DNS only; and the time from `sip_route` to the first customer's call answered at dr.

    uv run python -m tests.benchmarks.run telephony [--runs 2] [--window 40]

One lab on free ports with its Prefect server; the call generator places its 10 SIP calls/s through the
lab's Kamailio all along. Each run injects `main-db-down` (main's PBX then answers 503: its CRM is gone),
fails over with `approval=yes`, and counts, from the SIP call log, the calls placed in the `--window`
seconds after the fault that were not answered. The two kinds of run alternate, each followed by a
failback:

- **SIP cut-over**: the lab plan's default runbook: promote, then DNS switch, `sip_route` (dispatcher state
  over JSON-RPC, then a test call answered at dr) and the IVR announcement, then `agents_ready`;
- **DNS only**: the plan as it was before telephony (no `telephony` section, no phone services, a runbook of
  promote and DNS switch): the carrier goes on sending the calls to main.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from tests.benchmarks.common import bench_tmpdir, log, median, print_table, quiet_prefect_environment, settle
from tests.benchmarks.failover_runs import back_to_normal
from tests.benchmarks.lab import LabRun, backed_up_lab

FAULT = "main-db-down"


@dataclass
class Run:
    kind: str
    placed: int
    lost: int
    rto: float
    phones_down: float | None  # first unanswered call -> first call answered at dr (the record's measure)
    route_to_first_answer: float | None  # sip_route step start -> first call answered at dr (answer time)
    test_call_setup: float | None


def dns_only_plan(lab: LabRun) -> Path:
    """The lab's plan as it was before telephony: no `telephony` section, no phone services (a test call
    could never be answered at dr, and verification would wait for it), a runbook of promote and DNS switch."""
    document = yaml.safe_load(lab.plan.read_text())
    document.pop("telephony")
    document["services"] = {name: service for name, service in document["services"].items()
                            if not name.startswith("phone-")}
    for component in document.get("status_page", {}).get("components", {}).values():
        component["services"] = [name for name in component["services"] if not name.startswith("phone-")]
    document["channels"].pop("voice")
    document["audiences"] = {name: audience for name, audience in document["audiences"].items()
                             if "voice" not in audience["channels"]}
    document["recovery"]["failover"] = [
        {"name": "promote", "steps": [{"type": "postgres_promote", "database": "crm"}]},
        {"name": "switch", "steps": [{"type": "dns_switch"}]},
    ]
    path = lab.plan.with_name("plan-dns-only.yaml")
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


def call_log(lab: LabRun, sql: str, parameters: tuple) -> list[tuple]:
    from lifeline.infra.lab import open_lab
    from lifeline.infra.lab import postgres as lab_postgres

    return lab_postgres.query(open_lab(lab.home), "calllog", sql, database="calls", parameters=parameters)


def one_failover(lab: LabRun, kind: str, plan: Path, window: float) -> Run:
    from lifeline.configs.settings import load_settings
    from lifeline.flows.failover import failover_flow
    from lifeline.infra.lab import fault
    from lifeline.tasks.run.ledger import Ledger

    settle()
    at, _ = fault(FAULT, lab.home)
    incident = datetime.fromisoformat(at)
    record_id = failover_flow(str(plan), approval="yes", reason=f"benchmark: {kind}")
    record = Ledger(load_settings().ledger).run(record_id)
    if record is None or record.status != "completed" or record.rto_seconds is None:
        raise RuntimeError(f"{kind} failover {record_id}: {record.status if record else 'no record'} "
                           f"{record.error if record else ''}")
    end = incident + timedelta(seconds=window)
    time.sleep(max(0.0, (end - datetime.now(incident.tzinfo)).total_seconds()) + 1.0)  # the log is written in batches
    [(placed, lost)] = call_log(lab, "SELECT count(*), count(*) FILTER (WHERE outcome <> 'answered') FROM calls_log "
                                     "WHERE placed_at >= %s AND placed_at < %s", (incident, end))
    measure = next(step for step in record.steps if step.name == "measure").detail
    route = next((step for step in record.steps if step.name == "route calls to dr"), None)
    route_to_answer = None
    if route is not None:
        [(first,)] = call_log(lab, "SELECT min(placed_at + latency_ms * interval '1 millisecond') FROM calls_log "
                                   "WHERE site = 'dr' AND outcome = 'answered' AND placed_at >= %s", (route.started_at,))
        route_to_answer = (first - route.started_at).total_seconds() if first else None
    log(f"{kind}: {lost} of {placed} calls lost in {window:g} s, RTO {record.rto_seconds:.2f} s")
    return Run(kind, placed, lost, record.rto_seconds, measure.get("phone_outage_seconds"), route_to_answer,
               route.detail.get("test_call_setup_seconds") if route else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telephony")
    parser.add_argument("--runs", type=int, default=2, help="failovers of each kind (they alternate)")
    parser.add_argument("--window", type=float, default=40.0, help="seconds after the fault whose calls count")
    arguments = parser.parse_args(argv)
    quiet_prefect_environment()
    runs: list[Run] = []
    with bench_tmpdir("lifeline-bench-telephony-") as root, backed_up_lab(root) as lab:
        dns_only = dns_only_plan(lab)
        for number in range(arguments.runs):
            for kind, plan in (("SIP cut-over", lab.plan), ("DNS only", dns_only)):
                log(f"run {number + 1}/{arguments.runs}: {kind}")
                runs.append(one_failover(lab, kind, plan, arguments.window))
                failback = back_to_normal(lab)
                if failback.failed:
                    log(f"failback after {kind} failed: {failback.failed}")
                lab.refresh_backups()
    by_kind = {kind: [run for run in runs if run.kind == kind] for kind in ("SIP cut-over", "DNS only")}

    def row(kind: str) -> list:
        kind_runs = by_kind[kind]
        placed, lost = sum(r.placed for r in kind_runs), sum(r.lost for r in kind_runs)
        phones = [r.phones_down for r in kind_runs if r.phones_down is not None]
        return [kind, len(kind_runs), placed, lost, f"{100 * lost / placed:.1f}" if placed else "",
                median([r.rto for r in kind_runs]), median(phones) if phones else "never in the window"]

    sip_lost = sum(r.lost for r in by_kind["SIP cut-over"])
    dns_lost = sum(r.lost for r in by_kind["DNS only"])
    print_table(["failover (fault main-db-down, 10 calls/s)", "runs", "calls placed", "lost", "lost %",
                 "RTO median s", "phones down median s"],
                [row("SIP cut-over"), row("DNS only")],
                title=f"\nCalls lost in the {arguments.window:g} s after the fault, from the SIP call log",
                notes=[f"DNS only / SIP cut-over = {dns_lost / sip_lost:.1f}x the calls lost" if sip_lost else
                       f"SIP cut-over lost no call; DNS only lost {dns_lost}"])
    routed = [r for r in by_kind["SIP cut-over"] if r.route_to_first_answer is not None]
    print_table(["SIP cut-over", "median s", "max s", "samples"], [
        ["sip_route start -> first customer call answered at dr", median([r.route_to_first_answer for r in routed]),
         max(r.route_to_first_answer for r in routed), len(routed)],
        ["the step's own test call: INVITE -> 200 OK from dr", median([r.test_call_setup for r in routed]),
         max(r.test_call_setup for r in routed), len(routed)],
    ] if routed else [], title="\nFrom the cut-over to the first answered call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
