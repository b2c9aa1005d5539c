"""The data-leak drill on the lab (issue 6): only snapshots the ledger recorded before T survive.

An intruder on main makes two snapshots Lifeline never recorded: a plain later one, and one whose
time is forged with `restic backup --time` to look like the newest snapshot before T. The drill
must restore the newest *recorded* snapshot, move only recorded snapshots to a new repository
with a new password (file mode 0600), and leave the lab normal.
"""

from __future__ import annotations

import shutil
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from lifeline.configs.loading import load_plan
from lifeline.configs.settings import load_settings
from lifeline.flows.backup import backup_flow
from lifeline.flows.drill import drill_flow
from lifeline.infra.lab import postgres as lab_postgres
from lifeline.tasks.adapters.restic import ResticRepository, WrongPassword
from lifeline.tasks.run.holds import Holds
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import utc_now
from lifeline.tasks.steps.repositories import dataset_tags, open_repository

from tests.lab_fixtures import Lab

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_server")]


def step_detail(record, name: str) -> dict:
    found = [step for step in record.steps if step.name == name]
    assert found, f"no step {name!r} in {[step.name for step in record.steps]}"
    return found[-1].detail


def test_data_leak_drill_restores_only_what_was_recorded_before_t(lab: Lab) -> None:
    lab.wait_normal(30)
    loaded = load_plan(lab.plan)
    plan, settings = loaded.plan, load_settings()
    leak = plan.scenarios["data-leak"].recovery.leak
    assert leak is not None
    new_repo, new_password = Path(leak.new_repository_url), Path(leak.new_password_file)
    shutil.rmtree(new_repo, ignore_errors=True)
    new_password.unlink(missing_ok=True)
    ledger = Ledger(settings.ledger)
    recordings = Path(plan.datasets["recordings"].paths[0])
    old = open_repository(plan, "local", settings)
    tags = dataset_tags(plan, "recordings")
    try:
        for _ in range(2):
            assert ledger.run(backup_flow(str(lab.plan), dataset="recordings")).status == "completed"
        recorded = [facts.snapshot_id for facts in ledger.snapshots_recorded(plan.name, "recordings")
                    if facts.repository == "local"]
        newest_recorded = recorded[-1]
        t = utc_now()

        # The intruder's snapshots: one after T, one claiming a time just before T. Neither is in the ledger.
        (recordings / "intruder.wav").write_bytes(b"exfiltrated and planted")
        later = old.backup([recordings], tags=tags).snapshot_id
        forged = old.backup([recordings], tags=tags, time=t - timedelta(seconds=1)).snapshot_id
        by_id = {snapshot.id: snapshot for snapshot in old.snapshots(tags=tags)}
        assert by_id[forged].time > by_id[newest_recorded].time  # by time alone, the forged one would win

        record = ledger.run(drill_flow(plan_path=str(lab.plan), scenario="data-leak"))
        assert record is not None and record.status == "completed", record and record.error

        summary = step_detail(record, "data-leak summary")
        assert summary["restored"]["original_id"] == newest_recorded
        assert {later, forged} <= set(summary["refused"])
        assert not {later, forged} & set(summary["copied"])
        assert not (recordings / "intruder.wav").exists()

        # Isolation: host key out of known_hosts, crm_app without login (heal gives both back).
        assert step_detail(record, "revoke host key of main")["host_keys_removed"]
        revoked = step_detail(record, "revoke database access")["databases"]["crm"]
        assert revoked["login_revoked"] and revoked["site"] == "main"
        assert step_detail(record, "revoke old repository")["revoked"] is True

        # The old repository was held from the first step (retention forgot nothing), and the drill's end let go.
        names = [step.name for step in record.steps]
        assert names.index("hold repository local") < names.index("revoke host key of main")
        assert step_detail(record, "hold repository local")["held_by"] == f"run {record.id}"
        assert step_detail(record, "return to normal")["holds_released"] == ["local"]
        assert Holds(ledger).all() == []

        # The new repository: new password, mode 0600, exactly the trusted snapshots.
        assert stat.S_IMODE(new_password.stat().st_mode) == 0o600
        assert summary["new_password_file_mode"] == "0o600"
        new = ResticRepository(name="clean", url=str(new_repo), password_file=new_password,
                               cache_dir=settings.restic_cache_dir)
        trusted_present = set(recorded) & set(by_id)
        assert {snapshot.original for snapshot in new.snapshots()} == trusted_present
        with pytest.raises(WrongPassword):
            ResticRepository(name="clean with old password", url=str(new_repo), password_file=old.password_file,
                             cache_dir=settings.restic_cache_dir).snapshots()

        status = lab.status()
        assert status.normal, status.not_normal_because
        assert lab_postgres.query(lab.context, "main", "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                                  parameters=(lab_postgres.APP_ROLE,)) == [(True,)]
        host = plan.hosts["main"]
        assert f"[{host.address}]:{host.port} " in Path(host.known_hosts_file).read_text()
    finally:
        (recordings / "intruder.wav").unlink(missing_ok=True)
        shutil.rmtree(new_repo, ignore_errors=True)
        new_password.unlink(missing_ok=True)
