"""Drills: scenarios from the emergency plan, each with its fault, recovery, checks and targets.

The emergency plan's five scenarios (site-loss, network-outage, system-crash, data-corruption,
data-leak) come with the lab's plan, wired to the lab's fault and power verbs; a plan for real
sites writes its own under `scenarios`, with commands (a cloud API, a PDU) or with instructions
a person carries out.
"""

from __future__ import annotations

from typing import Literal

from lifeline.configs.base import Name, PlanModel, PlanPath, Targets
from pydantic import Field


class Fault(PlanModel):
    command: list[str] | None = Field(None, description="Injects the fault; its start is the incident time.")
    instructions: str | None = Field(None, description="For a person to carry out when no command can.")
    undo: list[str] | None = Field(None, description="Undoes the infrastructure fault after recovery (never data).")
    probe_site: str | None = Field(
        None, description="Site whose services are probed to detect the fault; none: detected when it is reported."
    )


class RestoreRecovery(PlanModel):
    dataset: str
    target: str | None = Field(None, description="Default: the dataset's own first path, replaced (moved aside).")


class LeakRecovery(PlanModel):
    """A host compromised at time T: isolate it and restore only from what was backed up before T."""

    host: str = Field(description="The compromised host, as named under `hosts`.")
    dataset: str = Field(description="Dataset whose backups move to a new repository.")
    new_repository_url: str = Field(description="Where the clean repository is created.")
    new_password_file: PlanPath = Field(description="Written with a new password, mode 0600.")
    database_role: str | None = Field(None, description="Role the host used at the CRM database: login revoked.")


class NotifyRecovery(PlanModel):
    """A message that must reach people although the fault took their first channel down."""

    audiences: list[Name] = Field(default_factory=lambda: ["liaison"], min_length=1)
    message: str = Field("Drill: communications check, please ignore. 演习：通讯测试，请忽略。", min_length=1)


class ApprovalRecovery(PlanModel):
    """An approval whose approver does not answer: the escalation must reach a deputy, who approves."""

    absent: Name = Field(description="The approver (under recovery.approvers) who does not answer.")
    deputies_after_seconds: float = Field(10, gt=0, description="The drill's own, shorter wait before the deputies.")


class AlertRecovery(PlanModel):
    """A CAP warning (status Exercise) posted to `lifeline intake`: the preparedness run must get ready in time."""

    site: Name = Field(description="The site whose area the warning covers.")
    kind: Literal["weather", "natural-disaster", "network", "security", "public-health"] = "weather"
    severity: Literal["minor", "moderate", "severe", "extreme"] = "severe"
    headline: str = "Drill: severe weather warning"


class PointInTimeRecovery(PlanModel):
    """A bad write at time T (a buggy release, a wrong UPDATE): replication carries it to the standby at once.
    A check query finds it; a repair-mode restore to just before T brings the tables back."""

    database: Name = Field(description="The database (under `databases`, with `pitr`) the bad write hits.")
    tables: list[str] = Field(min_length=1, description="Tables (schema.table) the repair copies back.")
    check: str = Field(description="SQL returning one number: the rows that look corrupted (0 when healthy).")
    rewind_seconds: float = Field(1, ge=0, description="The restore goes to T minus this; the drill writes its "
                                  "sentinel this long (and a second more) before the bad write.")


class ScenarioRecovery(PlanModel):
    """Exactly one: a failover (with failback afterwards), a restore, a point-in-time repair, the data-leak
    procedure, or a rehearsal of the communication plan: a message through the fallback channel, an approval by a
    deputy, a warning's preparedness."""

    failover: bool = False
    restore: RestoreRecovery | None = None
    leak: LeakRecovery | None = None
    notify: NotifyRecovery | None = None
    approval: ApprovalRecovery | None = None
    alert: AlertRecovery | None = None
    point_in_time: PointInTimeRecovery | None = None

    @property
    def needs_no_fault_command(self) -> bool:
        """The rehearsal plays its own fault: nobody answers, a warning is posted."""
        return self.approval is not None or self.alert is not None


class SentinelSettings(PlanModel):
    """A uniquely marked row and file written just before the fault; where they survive proves the RPO."""

    database: str | None = Field(None, description="Database (under `databases`) that gets the sentinel row.")
    table: str = Field("drill_sentinels", pattern=r"^[a-z_][a-z0-9_]*$")
    dataset: str | None = Field(None, description="Files dataset whose first path gets the sentinel file.")
    row_survives: bool = Field(True, description="The row must be there after recovery (replication keeps it).")
    file_survives: bool = Field(False, description="The file must be there after recovery.")


class Scenario(PlanModel):
    description: str
    kind: Literal["natural-disaster", "network-outage", "system-crash", "data-corruption", "logical-corruption",
                  "security-incident", "communications-failure", "staff-shortage", "other"] = "other"
    fault: Fault
    recovery: ScenarioRecovery
    sentinel: SentinelSettings = SentinelSettings()
    targets: Targets | None = None
    cadence_days: int | None = Field(90, ge=1, description="A drill of this scenario is overdue after this many days.")
    needs_netns: bool = Field(False, description="Only on the lab started with --netns.")
