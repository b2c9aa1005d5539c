"""The recovery part of a plan: services and their checks, databases, fencing, and the runbook.

A runbook is ordered groups; the steps of one group run concurrently. Every step has
retries, a retry delay and a timeout, defaulting to `recovery.defaults`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from lifeline.configs.base import Name, PlanModel, PlanPath
from lifeline.configs.checks import Check
from lifeline.configs.messages import Event
from lifeline.configs.pitr import Pitr
from pydantic import Field, model_validator


class Service(PlanModel):
    site: str
    critical: bool = True
    checks: list[Check] = Field(min_length=1)


class DatabaseInstance(PlanModel):
    host: str = Field(description="The plan's SSH host that runs this instance (pg_ctl runs there).")
    dsn: str = Field(description="postgresql://user@host:port/database, without a password.")
    passfile: PlanPath | None = None
    data_dir: Path = Field(description="The instance's data directory on its host.")
    bin_dir: Path = Field(Path("/usr/lib/postgresql/15/bin"), description="Where pg_ctl and pg_rewind live on the host.")
    socket_dir: Path | None = Field(None, description="The instance's Unix socket folder on its host: pgBackRest "
                                    "connects through it (default /var/run/postgresql).")


class Database(PlanModel):
    """A PostgreSQL primary with a streaming standby: failover promotes the standby."""

    primary: str = Field(description="Site of the primary in the normal state.")
    instances: dict[str, DatabaseInstance] = Field(description="Site name → instance.")
    replication_slot: str | None = Field(None, description="Slot the standby streams from.")
    replication_user: str = "lifeline"
    rpo_minutes: float | None = Field(None, ge=0)
    pitr: Pitr | None = Field(None, description="Continuous WAL archiving and point-in-time restores (pgBackRest).")


class Fencing(PlanModel):
    """How to be sure a site no longer takes writes before another site is promoted."""

    command: list[str] | None = Field(None, description="Stops the site out of band (a PDU, a cloud API).")
    command_timeout_seconds: float = Field(60, gt=0)
    self_fence_seconds: float | None = Field(
        None, ge=0, description="The site stops taking writes after losing its witness this long: failover waits it out."
    )


class StepSettings(PlanModel):
    retries: int = Field(2, ge=0, le=20)
    retry_delay_seconds: float = Field(1.0, ge=0)
    timeout_seconds: float = Field(60, gt=0)


class StepBase(PlanModel):
    name: str | None = None
    retries: int | None = Field(None, ge=0, le=20)
    retry_delay_seconds: float | None = Field(None, ge=0)
    timeout_seconds: float | None = Field(None, gt=0)


class SshStep(StepBase):
    type: Literal["ssh"]
    host: str
    command: list[str] = Field(min_length=1)
    expect_exit: int = 0


class HttpStep(StepBase):
    type: Literal["http"]
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    json_body: dict | None = Field(None, alias="json")
    form: dict[str, str] | None = Field(None, description="Form fields (application/x-www-form-urlencoded), as "
                                        "Twilio's REST API takes them; instead of json.")
    headers_file: PlanPath | None = Field(None, description="KEY=VALUE headers (tokens) kept out of the plan.")
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])

    @model_validator(mode="after")
    def one_body(self) -> HttpStep:
        if self.json_body is not None and self.form is not None:
            raise ValueError("give json or form, not both")
        return self


class PromoteStep(StepBase):
    type: Literal["postgres_promote"]
    database: str
    site: str | None = Field(None, description="Site to promote; default the one the failover goes to.")


class DnsSwitchStep(StepBase):
    type: Literal["dns_switch"]
    to: str | None = Field(None, description="Site whose value the record gets; default the failover's target.")


class FenceStep(StepBase):
    type: Literal["fence"]
    site: str | None = Field(None, description="Default: the site being failed away from.")


class RestoreStep(StepBase):
    type: Literal["restore"]
    dataset: str
    target: str = Field(description="A folder, or a postgresql:// DSN.")
    replace: bool = False


class VerifyStep(StepBase):
    type: Literal["verify"]
    site: str | None = None


class NotifyStep(StepBase):
    type: Literal["notify"]
    template: Event | None = Field(None, description="The event whose template to send (see `templates`).")
    message: str | None = Field(None, description="Text to send instead of a template; {{ site }} and the "
                                "other fields of the run's messages are filled in.")
    audiences: list[Name] = Field(default_factory=list, description="Who to tell; empty with a template: "
                                  "the audiences `notifications` names for its event.")

    @model_validator(mode="after")
    def one_text(self) -> NotifyStep:
        if (self.template is None) == (self.message is None):
            raise ValueError("give one of template and message")
        if self.message is not None and not self.audiences:
            raise ValueError("audiences: a message needs the audiences to tell")
        return self


class ApprovalStep(StepBase):
    type: Literal["approval"]
    prompt: str = "Fail over?"
    timeout_seconds: float | None = Field(None, gt=0)


class WaitStep(StepBase):
    type: Literal["wait"]
    seconds: float = Field(ge=0)


class SipRouteStep(StepBase):
    """The carrier's routing of the service number moves to one site (the SBC's dispatcher), then a test call
    must be answered there."""

    type: Literal["sip_route"]
    to: str | None = Field(None, description="Site the calls go to; default the failover's target.")


class AgentsReadyStep(StepBase):
    type: Literal["agents_ready"]
    site: str | None = Field(None, description="Default: the failover's target.")
    count: int | None = Field(None, ge=1, description="Default: telephony.sites.<site>.agents_required.")


class AnnouncementStep(StepBase):
    """The IVR's emergency announcement, spoken from its template, is put on the site's IVR host."""

    type: Literal["ivr_announcement"]
    site: str | None = Field(None, description="Default: the failover's target.")


RecoveryStep = Annotated[
    SshStep | HttpStep | PromoteStep | DnsSwitchStep | FenceStep | RestoreStep | VerifyStep | NotifyStep
    | ApprovalStep | WaitStep | SipRouteStep | AgentsReadyStep | AnnouncementStep,
    Field(discriminator="type"),
]


class StepGroup(PlanModel):
    name: str
    steps: list[RecoveryStep] = Field(min_length=1)


class Verification(PlanModel):
    rounds: int = Field(3, ge=1, description="Consecutive healthy rounds of every critical service.")
    interval_seconds: float = Field(1.0, gt=0)
    timeout_seconds: float = Field(120, gt=0, description="Give up when not recovered by then.")


class Recovery(PlanModel):
    defaults: StepSettings = StepSettings()
    verification: Verification = Verification()
    approval_timeout_seconds: float = Field(900, gt=0)
    approvers: list[Name] = Field(default_factory=list, description="Contact ids who may approve a failover, a "
                                  "failback or a public text in its form; empty: anybody who gives a name.")
    deputies_after_minutes: float = Field(5, ge=0, description="With no approver's answer by then, the approvers' "
                                          "deputies are asked too and may approve (at once in staff-shortage mode).")
    failover: list[StepGroup] = Field(default_factory=list, description="Runbook from the primary site to the DR site.")
    failback: list[StepGroup] = Field(default_factory=list, description="Extra steps after the database is back at main.")
