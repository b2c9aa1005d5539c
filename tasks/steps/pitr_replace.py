"""Replace mode: rewind the whole primary to a moment. The old data directory is moved aside (never deleted), the
rows written after the moment are exported from it into a report, and the standby is rebuilt from the rewound
primary. If the restore fails, the old data directory is put back and started: the live database is as it was."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from lifeline.configs.plan import Plan
from lifeline.tasks.adapters import replication
from lifeline.tasks.adapters.pgbackrest.archiving import forget_recovery_settings
from lifeline.tasks.adapters.replication import ServerState, server_status, start_server, stop_server
from lifeline.tasks.adapters.replication.database import DatabaseNode
from lifeline.tasks.adapters.replication.failback import move_aside, preserve_and_rebuild_standby
from lifeline.tasks.adapters.replication.split import report_split
from lifeline.tasks.adapters.ssh import SshTarget
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import database_node, replicated_database
from lifeline.tasks.run.pitr_inputs import instance_connection, pgbackrest_at, pitr_of
from lifeline.tasks.steps.pitr_restore import RestoreNotProven
from lifeline.tasks.steps.step import step
from pydantic import BaseModel, Field


class Rewound(BaseModel):
    site: str
    moved_aside: str
    rows_after_target_report: str | None = None
    rows_only_before_rewind: dict[str, int] = Field(default_factory=dict)
    rows_differing: dict[str, int] = Field(default_factory=dict)
    standbys_stopped: list[str] = Field(default_factory=list)

    @property
    def detail(self) -> dict:
        return self.model_dump()


class StandbyRebuilt(BaseModel):
    detail: dict


def _wait_primary(plan: Plan, database_name: str, site: str, timeout: float = 3600) -> None:
    from lifeline.tasks.adapters.deadline import wait_until

    database = replicated_database(plan.databases[database_name])
    if not wait_until(lambda: replication.instance_state(database, site).in_recovery is False, timeout=timeout,
                      interval=0.2):
        raise RestoreNotProven(f"{database_name} at {site} did not finish recovery to the target")


def _put_back(target: SshTarget, node: DatabaseNode, data_dir: Path, aside: Path) -> None:
    """The restore failed: its partial directory goes aside too, the old one back in place, and it starts."""
    if server_status(node, target).state is ServerState.RUNNING:
        stop_server(node, target, mode="immediate")
    if replication.remote(target, ["test", "-e", data_dir], check=False).succeeded:
        move_aside(target, data_dir, "failed-pitr")
    replication.remote(target, ["mv", "-n", "-T", aside, data_dir])
    start_server(node, target, 120)


def _standbys(plan: Plan, database_name: str, primary: str) -> list[tuple[str, DatabaseNode, SshTarget]]:
    """Every instance but the primary's: (site, instance, its host)."""
    database, _ = pitr_of(plan, database_name)
    targets = topology.ssh_targets(plan.hosts)
    return [(site, database_node(instance), targets[instance.host])
            for site, instance in database.instances.items() if site != primary]


def _stop_standbys(plan: Plan, database_name: str, primary: str) -> list[str]:
    """Before the rewind: a standby still connected would fetch the rewound primary's new timeline history and
    then refuse to start at all ("timeline N is not a child of this server's history")."""
    return [site for site, node, target in _standbys(plan, database_name, primary) if stop_server(node, target).done]


@step(retries=0, timeout_seconds=6 * 3600)
def rewind_primary(plan: Plan, database_name: str, primary: str, to_time: datetime | None,
                   before_xid: int | None) -> Rewound:
    database, _ = pitr_of(plan, database_name)
    node = database_node(database.instances[primary])
    pgbackrest = pgbackrest_at(plan, database, primary)
    target = pgbackrest.target
    stopped_standbys = _stop_standbys(plan, database_name, primary)
    stop_server(node, target)
    aside = move_aside(target, node.data_dir, "before-pitr")
    try:
        pgbackrest.restore(node.data_dir, to_time=to_time, before_xid=before_xid, archiving=True)
        start_server(node, target, 600)
        _wait_primary(plan, database_name, primary)
        forget_recovery_settings(instance_connection(database, primary))
    except BaseException:
        _put_back(target, node, node.data_dir, aside)
        for site, standby, host in _standbys(plan, database_name, primary):
            if site in stopped_standbys:
                start_server(standby, host, 120)
        raise
    split = report_split(replicated_database(database), primary, aside, primary, topology.ssh_targets(plan.hosts))
    return Rewound(site=primary, moved_aside=str(aside), rows_after_target_report=str(split.report_file),
                   rows_only_before_rewind=split.rows_only_at_old_primary, rows_differing=split.rows_differing,
                   standbys_stopped=stopped_standbys)


@step(retries=1, retry_delay_seconds=5, timeout_seconds=1800)
def rebuild_standbys_after_rewind(plan: Plan, database_name: str, primary: str) -> StandbyRebuilt:
    """Each standby is on the old timeline, ahead of the rewound primary: stopped, kept aside, cloned again."""
    database, _ = pitr_of(plan, database_name)
    targets = topology.ssh_targets(plan.hosts)
    rebuilt = {}
    for site, node, host in _standbys(plan, database_name, primary):
        stop_server(node, host)
        rebuild = preserve_and_rebuild_standby(replicated_database(database), site, primary, targets)
        rebuilt[site] = {"moved_aside": str(rebuild.split.moved_aside_dir) if rebuild.split else None,
                         "caught_up_in_seconds": round(rebuild.catch_up.seconds, 3)}
    return StandbyRebuilt(detail={"standbys": rebuilt})

