"""Prometheus metrics from the ledger: the textfile parses as the text format and holds the right values;
a Pushgateway receives the same text."""

from __future__ import annotations

import base64
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lifeline.tasks.report.metrics import (
    Metric,
    Sample,
    collect_metrics,
    export,
    exposition,
    push,
    registry_of,
    write_textfile,
)
from lifeline.tasks.run.ledger import Ledger, SnapshotFacts
from lifeline.tasks.run.record import RunRecord, Step
from prometheus_client.parser import text_string_to_metric_families

from tests.report_records import PLAN, SHA, START, at, backup_record, simple_drill, site_loss_drill

NOW = START + timedelta(hours=6)


@dataclass
class Family:
    help: str
    type: str
    samples: dict[frozenset[tuple[str, str]], float] = field(default_factory=dict)


def parse_exposition(text: str) -> dict[str, Family]:
    """The text as Prometheus reads it (prometheus_client's parser); a series twice is an error."""
    families: dict[str, Family] = {}
    for parsed in text_string_to_metric_families(text):
        assert parsed.name not in families, f"{parsed.name} in two blocks"
        family = families[parsed.name] = Family(parsed.documentation, parsed.type)
        for sample in parsed.samples:
            assert sample.name == parsed.name, sample
            key = frozenset(sample.labels.items())
            assert key not in family.samples, f"duplicate series {sample}"
            family.samples[key] = sample.value
    return families


def value(families: dict[str, Family], name: str, **labels: str) -> float:
    return families[name].samples[frozenset({"plan": PLAN, **labels}.items())]


def failover(start, status: str) -> RunRecord:
    return RunRecord(kind="failover", plan=PLAN, plan_sha256=SHA, status=status, started_at=start,
                     ended_at=start + timedelta(minutes=9))


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    older = backup_record(START - timedelta(days=1), run_id="backup-older")
    newer = backup_record(START, run_id="backup-newer")
    crm = next(step for step in newer.steps if step.name == "backup crm-db")
    crm.status, crm.detail = "failed", {"error": "pg_dump: connection refused"}
    newer.status = "failed"
    for record in (
        older, newer,
        simple_drill("site-loss", START - timedelta(days=7), 420.0, 30.0),
        site_loss_drill(START - timedelta(days=1)),
        simple_drill("site-loss", START, None, None, status="failed", failed_step="promote crm-db"),
        simple_drill("system-crash", START - timedelta(days=2), 35.5, 0.0),
        failover(START - timedelta(days=30), "completed"),
        failover(START - timedelta(days=3), "failed"),
        backup_record(START, run_id="other-plan").model_copy(update={"plan": "other"}),
    ):
        ledger.save_run(record)
    ledger.record_snapshots(
        SnapshotFacts(snapshot_id=f"{dataset}-{offset}", plan=PLAN, dataset=dataset, repository="local",
                      recorded_at=at(offset), run_id="backup-newer")
        for dataset, offset in (("recordings", -86_400), ("recordings", 40), ("crm-db", -86_330)))
    return ledger


def test_metrics_from_the_ledger_have_the_right_values(ledger):
    families = parse_exposition(exposition(collect_metrics(ledger, PLAN, NOW)))
    assert all(family.type == "gauge" and family.help for family in families.values())
    # recordings: the newer backup; crm-db failed there, so its last success is the older one's
    assert value(families, "lifeline_backup_last_success_timestamp_seconds", dataset="recordings") == at(40).timestamp()
    assert value(families, "lifeline_backup_last_success_timestamp_seconds", dataset="crm-db") == \
        at(70 - 86_400).timestamp()
    assert value(families, "lifeline_backup_last_duration_seconds", dataset="recordings") == 38.5
    assert value(families, "lifeline_backup_last_duration_seconds", dataset="crm-db") == 29.0
    assert value(families, "lifeline_snapshot_newest_age_seconds", dataset="recordings") == 6 * 3600 - 40
    assert value(families, "lifeline_snapshot_newest_age_seconds", dataset="crm-db") == 6 * 3600 + 86_330
    # site-loss: the newest drill failed before measuring; the RTO and RPO are the newest measured ones
    assert value(families, "lifeline_drill_last_rto_seconds", scenario="site-loss") == 1000.0
    assert value(families, "lifeline_drill_last_rpo_seconds", scenario="site-loss") == 240.0
    assert value(families, "lifeline_drill_last_met_targets", scenario="site-loss") == 0
    assert value(families, "lifeline_drill_last_timestamp_seconds", scenario="site-loss") == START.timestamp()
    assert value(families, "lifeline_drill_last_rto_seconds", scenario="system-crash") == 35.5
    assert value(families, "lifeline_drill_last_met_targets", scenario="system-crash") == 1
    assert families["lifeline_failover_last_status"].samples == {frozenset({"plan": PLAN, "status": "failed"}.items()): 0}
    assert value(families, "lifeline_failover_last_timestamp_seconds") == \
        (START - timedelta(days=3) + timedelta(minutes=9)).timestamp()
    every_label_set = [dict(key) for family in families.values() for key in family.samples]
    assert all(labels["plan"] == PLAN for labels in every_label_set)


def test_prometheus_reads_back_exactly_what_was_collected(ledger):
    metrics = collect_metrics(ledger, PLAN, NOW)
    theirs = {(name, key): sample for name, family in parse_exposition(exposition(metrics)).items()
              for key, sample in family.samples.items()}
    ours = {(metric.name, frozenset(sample.labels.items())): sample.value
            for metric in metrics for sample in metric.samples}
    assert theirs == ours


def test_an_empty_ledger_gives_an_empty_text(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path}/empty.db")
    assert collect_metrics(ledger, PLAN, NOW) == []
    assert parse_exposition(exposition([])) == {}
    metrics = collect_metrics(ledger, PLAN, NOW, datasets=["recordings"])  # no snapshot recorded yet: no age
    assert metrics == []


def test_label_values_are_escaped(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path}/odd.db")
    odd = 'rec "a"\\b\nc'
    record = backup_record()
    record.steps = [Step(name=f"backup {odd}", started_at=START, ended_at=at(5), status="completed",
                         detail={"seconds": 5})]
    ledger.save_run(record)
    families = parse_exposition(exposition(collect_metrics(ledger, PLAN, NOW)))
    assert value(families, "lifeline_backup_last_duration_seconds", dataset=odd) == 5


def test_textfile_is_written_atomically(tmp_path, ledger):
    path = tmp_path / "textfile" / "lifeline.prom"
    text = exposition(collect_metrics(ledger, PLAN, NOW))
    write_textfile(path, registry_of([Metric("stale", "Left by an earlier export.", [Sample({}, 1.0)])]))
    assert "stale 1.0" in path.read_text()
    inode_before = path.stat().st_ino
    write_textfile(path, registry_of(collect_metrics(ledger, PLAN, NOW)))
    assert path.read_text() == text
    assert path.stat().st_ino != inode_before  # replaced by a rename, never rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["lifeline.prom"]  # no temp file left behind


@dataclass
class Received:
    method: str
    path: str
    content_type: str
    body: str


@pytest.fixture
def pushgateway() -> Iterator[tuple[str, list[Received]]]:
    """A stand-in Pushgateway on 127.0.0.1: records what it receives; a path with /fail answers 500."""
    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append(Received("PUT", self.path, self.headers["Content-Type"], body))
            self.send_response(500 if "/fail" in self.path else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *arguments) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_push_sends_the_same_text_to_the_pushgateway(ledger, pushgateway, tmp_path):
    url, received = pushgateway
    path = tmp_path / "lifeline.prom"
    text = export(ledger, PLAN, textfile=path, pushgateway_url=url + "/", now=NOW)
    assert path.read_text() == text
    assert received == [Received("PUT", f"/metrics/job/lifeline/plan/{PLAN}", "text/plain; version=0.0.4; charset=utf-8",
                                 text)]
    odd_plan = "plan with/slash"
    push(url, odd_plan, registry_of([]))
    # the Pushgateway's own encoding of a label value with a slash: base64, URL-safe
    assert received[-1].path == "/metrics/job/lifeline/plan@base64/" + base64.urlsafe_b64encode(odd_plan.encode()).decode()
    with pytest.raises(OSError, match="500"):
        push(url + "/fail", PLAN, registry_of(collect_metrics(ledger, PLAN, NOW)))
