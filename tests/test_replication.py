"""Streaming replication on the lab: observations, promotion, failback that keeps every row, switch back."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lifeline.configs.loading import load_plan
from lifeline.configs.recovery import Database
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.replication import (
    InstanceState,
    Lag,
    Lsn,
    ServerState,
    instance_state,
    promote,
    replication_lag,
    server_status,
    start_server,
    stop_server,
    streaming_standbys,
    wait_caught_up,
)
from lifeline.tasks.adapters.replication.database import DatabaseNode, ReplicatedDatabase
from lifeline.tasks.adapters.replication.failback import (
    OldPrimaryRunning,
    SplitBrain,
    preserve_and_rebuild_standby,
    replication_conninfo,
    slot_for,
    switch_back,
)
from lifeline.tasks.adapters.replication.split import throwaway_options
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import replicated_database

PROBE = "replication_probe"


# --- no lab needed ----------------------------------------------------------------------------------

def test_lsn_parses_prints_and_subtracts() -> None:
    lsn = Lsn.parse("1/2000060")
    assert lsn == (1 << 32) + 0x2000060 and str(lsn) == "1/2000060"
    assert Lsn.parse("0/3000000") - Lsn.parse("0/2FFFF00") == 0x100
    assert Lsn.parse(None) is None and Lsn.parse("") is None


def test_lag_is_measured_in_bytes_and_timed_only_when_behind() -> None:
    primary = InstanceState("main", True, in_recovery=False, current_lsn=Lsn.parse("0/3000100"))
    behind = InstanceState("dr", True, in_recovery=True, current_lsn=Lsn.parse("0/3000000"), replay_age_seconds=4.5)
    level = InstanceState("dr", True, in_recovery=True, current_lsn=Lsn.parse("0/3000100"), replay_age_seconds=900.0)
    assert replication_lag(primary, behind) == Lag(bytes=0x100, seconds=4.5)
    assert replication_lag(primary, level) == Lag(bytes=0, seconds=0.0)  # an idle primary is not "900 s behind"
    assert not replication_lag(primary, InstanceState("dr", False, detail="refused")).known
    assert not replication_lag(behind, primary).known  # roles the wrong way round


def test_conninfo_carries_a_passfile_and_the_standby_name_never_a_password() -> None:
    database = replicated_database(Database.model_validate({
        "primary": "main", "replication_slot": "dr_slot", "replication_user": "replicator",
        "instances": {site: {"host": site, "dsn": f"postgresql://app@{site}.example:5432/crm",
                             "passfile": f"/etc/lifeline/{site} pass", "data_dir": "/var/lib/pg"}
                      for site in ("main", "dr")}}))
    conninfo = replication_conninfo(database, "main", "dr")
    assert conninfo == ("host=main.example port=5432 user=replicator application_name=dr "
                        "passfile='/etc/lifeline/dr pass'")
    assert slot_for(database, "dr") == "dr_slot" and slot_for(database, "main") == "main_slot"
    options = throwaway_options(6433)
    assert options.startswith("-p 6433 ") and "primary_conninfo=''" in options and "archive_mode=off" in options


# --- on the lab -------------------------------------------------------------------------------------

@dataclass
class Crm:
    database: ReplicatedDatabase
    targets: dict[str, ssh.SshTarget]

    def instance(self, site: str) -> DatabaseNode:
        return self.database.instances[site]

    def target(self, site: str) -> ssh.SshTarget:
        return self.targets[self.instance(site).host]


@pytest.fixture
def crm(lab) -> Crm:
    plan = load_plan(lab.plan).plan  # read per test: a rebuilt lab has new ports
    return Crm(replicated_database(plan.databases["crm"]), topology.ssh_targets(plan.hosts, connect_timeout=3))


@pytest.fixture
def kept_lab(lab, crm: Crm) -> Iterator[Crm]:
    """The test's CRM, with a probe table; the lab is normal again afterwards (rebuilt if need be)."""
    lab.query("main", f"CREATE TABLE IF NOT EXISTS {PROBE} (id integer PRIMARY KEY, note text NOT NULL)")
    lab.query("main", f"TRUNCATE {PROBE}")
    try:
        yield crm
    finally:
        ssh.close_all()
        try:
            lab.wait_normal(10)
        except AssertionError:
            lab.rebuild()
        lab.query("main", f"DROP TABLE IF EXISTS {PROBE}")


def probe_rows(lab, site: str) -> dict[int, str]:
    return dict(lab.query(site, f"SELECT id, note FROM {PROBE}"))


def test_observations_show_main_primary_and_dr_streaming_caught_up(lab, kept_lab: Crm) -> None:
    database = kept_lab.database
    lab.query("main", f"INSERT INTO {PROBE} VALUES (1, 'observed')")
    main, dr = instance_state(database, "main"), instance_state(database, "dr")
    assert (main.role, main.in_recovery, dr.role, dr.in_recovery) == ("primary", False, "standby", True)
    assert dr.receiver_status == "streaming" and dr.timeline == main.timeline and dr.current_lsn is not None
    wait_caught_up(database, "main", "dr", timeout=5)
    assert instance_state(database, "dr").current_lsn >= main.current_lsn
    assert probe_rows(lab, "dr") == {1: "observed"}
    # The call generator writes at main all the time: zero lag shows between two of its writes.
    lags = [replication_lag(instance_state(database, "main"), instance_state(database, "dr")) for _ in range(40)]
    assert Lag(bytes=0, seconds=0.0) in lags and all(lag.known and lag.bytes < 1 << 20 for lag in lags)
    [standby] = streaming_standbys(database, "main")
    assert (standby.application_name, standby.slot_name, standby.state) == ("dr", "dr_slot", "streaming")
    for site in ("main", "dr"):
        assert server_status(kept_lab.instance(site), kept_lab.target(site)).state is ServerState.RUNNING
    assert preserve_and_rebuild_standby(database, "dr", "main", kept_lab.targets).already_streaming
    assert switch_back(database, kept_lab.targets).already_done


def test_failover_then_failback_keeps_every_row_and_reports_what_only_old_main_had(lab, kept_lab: Crm) -> None:
    database, targets = kept_lab.database, kept_lab.targets
    lab.query("main", f"INSERT INTO {PROBE} VALUES (0, 'before the split')")
    wait_caught_up(database, "main", "dr", timeout=5)

    # The split: dr stops receiving, main takes writes dr never gets, then main crashes.
    assert stop_server(kept_lab.instance("dr"), kept_lab.target("dr")).done
    assert not stop_server(kept_lab.instance("dr"), kept_lab.target("dr")).done  # already stopped
    lab.query("main", f"INSERT INTO {PROBE} VALUES (1, 'only at main'), (2, 'only at main'), (3, 'only at main')")
    lab.query("main", f"UPDATE {PROBE} SET note = 'changed at main' WHERE id = 0")
    stop_server(kept_lab.instance("main"), kept_lab.target("main"), "immediate")
    assert not instance_state(database, "main").reachable  # down is an answer, not an exception

    # Failover: dr comes up and is promoted; promoting it again does nothing.
    start_server(kept_lab.instance("dr"), kept_lab.target("dr"))
    promotion = promote(database, "dr", targets)
    assert promotion.promoted and promotion.timeline >= 2 and promotion.lsn is not None
    again = promote(database, "dr", targets)
    assert (again.promoted, again.timeline, again.lsn) == (False, promotion.timeline, promotion.lsn)
    lab.query("dr", f"INSERT INTO {PROBE} VALUES (101, 'at dr'), (102, 'at dr'), (103, 'at dr')")

    # The old main comes back as a primary: its data directory is never touched while it runs.
    start_server(kept_lab.instance("main"), kept_lab.target("main"))
    with pytest.raises(OldPrimaryRunning, match="stop or fence it first"):
        preserve_and_rebuild_standby(database, "main", "dr", targets)
    stop_server(kept_lab.instance("main"), kept_lab.target("main"), "immediate")

    # Failback, part 1: main's data is kept aside, what only it had is reported, main streams from dr.
    rebuild = preserve_and_rebuild_standby(database, "main", "dr", targets)
    split = rebuild.split
    assert split is not None and not rebuild.already_streaming and rebuild.slot == "main_slot"
    assert split.rows_only_at_old_primary[f"public.{PROBE}"] == 3 and split.rows_differing[f"public.{PROBE}"] == 1
    assert (split.moved_aside_dir / "PG_VERSION").exists() and split.moved_aside_dir.name.startswith("pgdata.split-")
    assert stat.S_IMODE(split.report_file.stat().st_mode) == 0o600
    reported = [json.loads(line) for line in split.report_file.read_text().splitlines()]
    assert reported[0]["split_report"]["rows_only_at_old_primary"] == split.rows_only_at_old_primary
    probe_report = {(row["kind"], row["row"]["id"], row["row"]["note"]) for row in reported[1:]
                    if row["table"] == f"public.{PROBE}"}
    assert probe_report == {("only_at_old_primary", 1, "only at main"), ("only_at_old_primary", 2, "only at main"),
                            ("only_at_old_primary", 3, "only at main"), ("differs", 0, "changed at main")}
    for row in reported[1:]:  # e.g. calls main answered after dr stopped: none of them is at dr
        if row["kind"] == "only_at_old_primary" and row["table"] == "public.calls":
            assert not lab.query("dr", "SELECT 1 FROM calls WHERE id = %s", parameters=(row["key"][0],))
    assert [standby.application_name for standby in streaming_standbys(database, "dr")] == ["main"]
    assert preserve_and_rebuild_standby(database, "main", "dr", targets).already_streaming
    written_at_dr = lab.query("dr", f"SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {PROBE} t")
    calls_at_dr = {row[0] for row in lab.query("dr", "SELECT id FROM calls")}

    # Failback, part 2: the planned switch back; dr follows main's new timeline without a rebuild.
    back = switch_back(database, targets)
    assert back.followed and back.rebuild is None and back.promotion is not None and back.promotion.promoted
    assert back.final_checkpoint_lsn is not None and back.promotion.lsn is not None
    assert back.promotion.lsn > back.final_checkpoint_lsn  # main replayed dr's shutdown checkpoint first
    assert switch_back(database, targets).already_done
    assert probe_rows(lab, "main") == {0: "before the split", 101: "at dr", 102: "at dr", 103: "at dr"}
    assert lab.query("main", f"SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {PROBE} t") == written_at_dr
    assert calls_at_dr <= {row[0] for row in lab.query("main", "SELECT id FROM calls")}
    [standby] = streaming_standbys(database, "main")
    assert (standby.application_name, standby.slot_name, standby.state) == ("dr", "dr_slot", "streaming")
    assert lab.wait_normal(10).normal


def test_switch_back_refuses_two_primaries_and_rebuilds_a_standby_that_cannot_follow(lab, kept_lab: Crm) -> None:
    database, targets = kept_lab.database, kept_lab.targets
    wait_caught_up(database, "main", "dr", timeout=5)  # dr has the probe table
    promote(database, "dr", targets)  # dr forks off while main keeps running: a split brain
    lab.query("dr", f"INSERT INTO {PROBE} VALUES (7, 'written at the wrong primary')")
    with pytest.raises(SplitBrain, match="both main and dr are primaries"):
        switch_back(database, targets)
    stop_server(kept_lab.instance("dr"), kept_lab.target("dr"), "immediate")  # dr is fenced

    back = switch_back(database, targets, follow_timeout=2)
    assert back.promotion is None and not back.followed and back.rebuild is not None
    split = back.rebuild.split
    assert split is not None and split.rows_only_at_old_primary.get(f"public.{PROBE}") == 1
    assert Path(split.moved_aside_dir).exists() and back.rebuild.slot == "dr_slot"
    assert probe_rows(lab, "main") == {} and probe_rows(lab, "dr") == {}
    [standby] = streaming_standbys(database, "main")
    assert (standby.application_name, standby.slot_name, standby.state) == ("dr", "dr_slot", "streaming")
    assert lab.wait_normal(10).normal
