"""Hostile text (shell metacharacters, SQL, HTML, header-forging newlines, very long values) typed where people
type: an approval's operator and reason, a message's fields, a restore target. It goes nowhere unquoted: argv,
the ledger's SQL, the HTML and Markdown reports, e-mail headers, chat, SMS. Plan names never get this far: the
plan refuses them (tests/reliability/test_bad_input.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from lifeline.configs.loading import load_plan
from lifeline.configs.messages import unknown_fields
from lifeline.tasks.report.after_action import render_html, render_markdown
from lifeline.tasks.report.artifacts import record_markdown
from lifeline.tasks.run.ledger import Deliveries, Ledger
from lifeline.tasks.run.record import Journal, RunRecord, Step, utc_now
from lifeline.tasks.steps.communication import RunCommunications

from tests.channel_fixtures import mails_in
from tests.helpers import files_plan, ledger, make_recordings, run_cli, tree, write_password, write_plan

pytestmark = pytest.mark.usefixtures("prefect_server", "lifeline_home")

CANARY = "/tmp/lifeline-hostile-canary"
SQL = "x'); DROP TABLE runs; --"
SHELL = f"$(touch {CANARY}) `touch {CANARY}`; touch {CANARY} | cat && rm -rf ~"
HTML = "<script>alert('lifeline')</script><img src=x onerror=alert(1)>"
FORGED_LINES = "fire\r\nBcc: intruder@evil.example\r\nX-Injected: yes\n# a forged heading"
LONG = "长" * 20_000
HOSTILE = [SQL, SHELL, HTML, FORGED_LINES, LONG]


def approved_failover(reason: str, operator: str) -> RunRecord:
    began = utc_now()
    return RunRecord(kind="failover", plan="cc", plan_sha256="-", status="failed", started_at=began,
                     ended_at=began + timedelta(seconds=9), error=f"stopped by {operator}: {reason}",
                     steps=[Step(name="approval", started_at=began, ended_at=began + timedelta(seconds=4),
                                 status="completed", detail={"approved": True, "operator": operator, "reason": reason,
                                                             "waited_seconds": 4.0})])


def test_an_approvals_hostile_operator_and_reason_are_kept_as_typed_and_shown_escaped(ledger_url: str) -> None:
    kept = Ledger(ledger_url)
    records = [approved_failover(reason, operator) for reason in HOSTILE for operator in (SQL, HTML, FORGED_LINES)]
    for record in records:
        kept.save_run(record)
    assert {record.id: record for record in kept.runs()} == {record.id: record for record in records}
    assert kept.runs(plan=SQL) == [] and kept.run(SQL) is None  # hostile text as a query's value, not its SQL
    for record in records:
        html = render_html(record)
        assert "<script>" not in html and "<img src=x" not in html, record.steps[0].detail
        assert "&lt;script&gt;" in html or HTML not in (record.error or "")
        for markdown in (render_markdown(record), record_markdown(record)):
            assert "<script>" not in markdown and "<img" not in markdown
            assert not [line for line in markdown.splitlines() if line.startswith(("# a forged", "Bcc:"))]


def test_hostile_message_fields_reach_email_chat_and_the_ledger_as_text(
    tmp_path: Path, smtp_sink: tuple[int, Path], webhook
) -> None:
    """A reason with a forged header in the subject: one Subject line, no Bcc, no extra header; the body and the
    chat post carry the text as typed."""
    port, maildir = smtp_sink
    write_password(tmp_path / "pw")
    reason = "\n".join([SHELL, HTML, FORGED_LINES])
    path = write_plan(tmp_path, {
        "name": "cc",
        "hotline": "+861012345678",
        "repositories": {"local": {"url": "./repo", "password_file": "./pw", "init": True}},
        "datasets": {"recordings": {"repository": "local", "paths": ["/srv/recordings"]}},
        "contacts": {"wang": {"name": "Wang Fang", "role": "emergency-liaison", "email": "wang@cc.example",
                              "language": "en"},
                     "li": {"name": "Li Wei", "role": "leader", "email": "li@cc.example", "language": "zh"}},
        "channels": {"chat": {"type": "chat", "url": webhook.url},
                     "email": {"type": "email", "host": "127.0.0.1", "port": port, "security": "none",
                               "sender": "lifeline@cc.example"}},
        "audiences": {"liaison": {"members": ["wang"], "channels": ["email"]},
                      "leadership": {"members": ["li"], "channels": ["chat"]}},
        "templates": {"incident_declared": {"all": {
            "zh": {"subject": "事件: {{ reason }}", "body": "原因: {{ reason }}"},
            "en": {"subject": "Incident: {{ reason }}", "body": "Because: {{ reason }}"}}}},
    })
    journal = Journal(RunRecord(kind="failover", plan="cc", plan_sha256="-"))
    communications = RunCommunications(load_plan(path).plan, str(path), journal, ledger())
    communications.announce("incident_declared", **{**unknown_fields("incident_declared"), "reason": reason})
    told = communications.notifier.wait()
    assert sorted((delivery.channel, delivery.status) for delivery in told) == [("chat", "delivered"),
                                                                              ("email", "delivered")], told
    [mail] = mails_in(maildir)
    assert mail["Bcc"] is None and mail["X-Injected"] is None and mail.get_all("To") == ["wang@cc.example"]
    subject = " ".join(mail["Subject"].split())  # a long header is folded onto continuation lines: unfold it
    assert subject.startswith("Incident: $(touch") and "fire Bcc: intruder@evil.example X-Injected: yes" in subject
    assert HTML in mail.get_payload(decode=True).decode()
    [post] = webhook.received
    assert any(HTML in str(value) for value in post.values()), post
    assert [delivery.status for delivery in Deliveries(ledger()).of_run(journal.record.id)] == ["delivered"] * 2
    assert not Path(CANARY).exists()


def test_a_restore_target_full_of_shell_metacharacters_is_a_folder_of_exactly_that_name(tmp_path: Path) -> None:
    """The target goes to restic as one argument (no shell): the folder gets the literal name, nothing runs."""
    write_password(tmp_path / "restic.pw")
    recordings = make_recordings(tmp_path / "recordings")
    plan = write_plan(tmp_path, files_plan(tmp_path, recordings))
    assert run_cli("backup", "--plan", str(plan)).returncode == 0
    target = tmp_path / "restored; touch canary $(touch canary) `touch canary` | cat 'quoted\" & echo"
    restored = run_cli("restore", "recordings", "--plan", str(plan), "--target", str(target))
    assert restored.returncode == 0, restored.stderr
    assert tree(target) == tree(recordings)
    assert sorted(path.name for path in tmp_path.iterdir() if "canary" in path.name) == [target.name]
    assert not Path("canary").exists() and not Path(CANARY).exists()
