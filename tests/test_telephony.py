"""Telephony with the lab's real Kamailio (the carrier's SBC), its PBXs, SIPp-registered agents and the
contacts' phones: calls answered at main, the SIP cut-over to dr with its IVR announcement heard, agents
holding recovery, the voice channel, and the failover's figures from the SIP call log."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lifeline.configs.loading import load_plan
from lifeline.flows.failover import failover_flow
from lifeline.infra.lab import agents as lab_agents
from lifeline.infra.lab import softphones
from lifeline.tasks.adapters.sip import KamailioRpc, SipEndpoint, place_call
from lifeline.tasks.adapters.sip.sbc import seconds_left_in
from lifeline.tasks.report.after_action import render_html

from tests.helpers import ledger, run_cli, step_named, wait_for
from tests.lab_fixtures import Lab, back_to_normal, call_log, settle_call_log, wait_for_dr_answering

pytestmark = pytest.mark.lab
DR_AGENTS = ["agent-3", "agent-4"]


def telephony(lab: Lab):
    return load_plan(lab.plan).plan.telephony


def routing(lab: Lab) -> dict[str, str]:
    """Site → the state of its PBX in the SBC's dispatcher, as the SBC reports it."""
    plan_telephony = telephony(lab)
    states = {d.uri: d.state for d in KamailioRpc(plan_telephony.sbc.rpc_url).destinations(1)}
    return {site: states[entry.destination] for site, entry in plan_telephony.sites.items()}


def test_call(lab: Lab, **options):
    plan_telephony = telephony(lab)
    result = place_call(SipEndpoint(plan_telephony.sbc.address, plan_telephony.sbc.port),
                        plan_telephony.service_number, "lifeline-test", **options)
    return result, plan_telephony.site_answering(result.answered_by)


test_call.__test__ = False  # a helper, not a test


def test_calls_are_answered_at_main_the_sbc_routes_there_and_both_sites_have_agents(normal_lab: Lab) -> None:
    lab = normal_lab
    assert routing(lab) == {"main": "active", "dr": "inactive"}
    result, site = test_call(lab)
    assert result.outcome == "answered" and site == "main", result.summary
    assert result.headers["x-lifeline-site"] == "main" and result.headers["x-lifeline-call-id"].isdigit()
    # the customers' calls (the generator's) are SIP calls answered at main, each with the CRM's call id
    since = datetime.now(UTC)
    wait_for(lambda: call_log(lab, "SELECT count(*) FROM calls_log WHERE site = 'main' AND outcome = 'answered' "
                                   "AND call_id IS NOT NULL AND placed_at >= %s", since)[0][0] >= 5, 10,
             "five calls answered at main")
    registered = lab_agents.registered(lab.context)
    assert sorted(registered["main"]) == ["agent-1", "agent-2"] and sorted(registered["dr"]) == DR_AGENTS
    # with no IVR announcement up, a caller who listens hears main's greeting, not silence (`lifeline call`)
    called = run_cli("call", "--plan", str(lab.plan), "--listen", "20", "--json", timeout=60)
    assert called.returncode == 0, called.stderr
    heard = json.loads(called.stdout)
    assert heard["site"] == "main" and heard["routed_to"] == ["main"], heard
    greeting = (lab.context.paths.ivr_dir("main") / "greeting.ulaw").stat().st_size / 8000
    assert heard["heard_seconds"] == pytest.approx(greeting, abs=0.25) and not heard["silent"], heard


def test_agents_stay_registered_as_softphones_do_and_one_logged_out_stays_out(normal_lab: Lab) -> None:
    """A registration lasts an hour; the site's softphones register its agents again before it runs out."""
    context = normal_lab.context

    def seconds_left() -> float:
        return seconds_left_in(KamailioRpc(telephony(normal_lab).sbc.rpc_url).call("ul.dump")).get(
            "agent-9@dr.lab", 0.0)

    lab_agents.login(context, "dr", ["agent-9"], expires=60)  # less than half an hour left: due at once
    try:
        assert seconds_left() <= 60
        wait_for(lambda: seconds_left() > lab_agents.EXPIRES_SECONDS / 2, 20, "dr's softphones to register agent-9 again")
    finally:
        lab_agents.logout(context, "dr", ["agent-9"])
    time.sleep(2 * softphones.POLL_SECONDS)
    assert "agent-9" not in lab_agents.registered(context)["dr"]


def test_voice_channel_counts_a_message_delivered_only_when_the_phone_is_answered(normal_lab: Lab) -> None:
    lab = normal_lab
    plan = load_plan(lab.plan).plan
    liaison = plan.contacts["wang-fang"].phones[0]
    unanswered = lab.context.paths.side_dir("ops") / "phones-unanswered"
    voice_log = lab.context.paths.side_dir("ops") / "voice.jsonl"
    heard_before = len(voice_log.read_text().splitlines()) if voice_log.exists() else 0

    unanswered.write_text(liaison + "\n")
    try:
        away = run_cli("notify", "--plan", str(lab.plan), "--audience", "liaison-phone", "--message",
                       "Drill: the phone rings and nobody answers.", "--json", timeout=120)
    finally:
        unanswered.unlink()
    assert away.returncode == 0, away.stderr
    deliveries = json.loads(away.stdout)["deliveries"]
    voice = [d for d in deliveries if d["channel"] == "voice"]
    assert voice and all(d["status"] == "failed" for d in voice) and "abandoned" in voice[-1]["answer"]
    assert any(d["channel"] == "sms" and d["status"] == "delivered" for d in deliveries)  # the fallback

    answered = run_cli("notify", "--plan", str(lab.plan), "--audience", "liaison-phone", "--message",
                       "Drill: please call the operations desk.", "--json", timeout=120)
    assert answered.returncode == 0, answered.stderr
    [delivery] = json.loads(answered.stdout)["deliveries"]
    assert delivery["channel"] == "voice" and delivery["status"] == "delivered", delivery
    heard = wait_for(lambda: voice_log.exists() and voice_log.read_text().splitlines()[heard_before:], 10,
                     "the liaison's phone to log the call")
    call = json.loads(heard[-1])
    assert call["number"] == liaison and call["seconds"] > 1.5 and call["level_dbfs"] > -50, call


def test_failover_routes_calls_to_dr_plays_the_announcement_and_waits_for_agents(normal_lab: Lab) -> None:
    lab = normal_lab
    context = lab.context
    lab_agents.logout(context, "dr", DR_AGENTS)
    assert lab_agents.registered(context).get("dr", []) == []
    started = datetime.now(UTC)
    outcome: dict = {}
    failover = threading.Thread(target=lambda: outcome.update(
        record=ledger().run(failover_flow(plan_path=str(lab.plan), approval="yes", reason="telephony test"))))
    failover.start()
    try:
        # the carrier's routing moves to dr, and dr's PBX answers, while the run waits for dr's agents
        wait_for(lambda: routing(lab) == {"main": "inactive", "dr": "active"}, 120, "calls routed to dr")
        first_at_dr = wait_for_dr_answering(lab, started)
        time.sleep(3)
        assert failover.is_alive(), "the failover ended before dr's agents logged in"
        agents_logged_in_at = datetime.now(UTC)
        lab_agents.login(context, "dr", DR_AGENTS)
    finally:
        failover.join(timeout=180)
    record = outcome["record"]
    assert record.status == "completed", record.error
    # recovery waited for the agents; the first call dr answered came after the cut-over
    assert record.milestones["agents_ready"] >= agents_logged_in_at
    assert record.recovered_at >= agents_logged_in_at and record.recovered_at <= record.ended_at
    assert record.milestones["calls_routed"] <= agents_logged_in_at
    route = step_named(record, "route calls to dr")
    assert route.detail["dispatcher"] == {entry.destination: ("active" if site == "dr" else "inactive")
                                         for site, entry in telephony(lab).sites.items()}
    assert first_at_dr >= record.milestones["promoted"]

    # a caller hears the emergency announcement, as long as it was made, and it is not silence
    announced = step_named(record, "announcement at dr").detail
    heard, site = test_call(lab, record_seconds=announced["seconds"] + 5)
    assert site == "dr" and heard.outcome == "answered"
    assert heard.listening.seconds == pytest.approx(announced["seconds"], abs=0.25)
    assert not heard.listening.silent, heard.listening

    # the record's figures come from the SIP call log, and its report charts the calls per second
    settle_call_log()
    [(callers,)] = call_log(lab, "SELECT count(DISTINCT caller_id) FROM calls_log WHERE outcome IN "
                                 "('failed', 'abandoned') AND placed_at BETWEEN %s AND %s",
                            record.incident_at, record.recovered_at)
    assert record.impact_source == "call_log" and record.affected_customers == callers
    measure = step_named(record, "measure").detail
    assert measure["phone_outage_seconds"] is not None and measure["phone_outage_seconds"] > 0
    assert any(kind == "answered at dr" for kind in measure["calls_per_second"]["counts"])
    report = render_html(record, load_plan(lab.plan).plan)
    assert 'class="calls-chart"' in report and 'data-series="answered at dr"' in report

    # failback: calls go home and dr's IVR stops announcing (the announcement kept beside it)
    back_to_normal(lab)
    assert routing(lab) == {"main": "active", "dr": "inactive"}
    announcement = Path(telephony(lab).sites["dr"].announcement_path)
    assert not announcement.exists() and announcement.with_name(announcement.name + ".withdrawn").exists()
    result, site = test_call(lab)
    assert site == "main", result.summary
