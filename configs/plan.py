"""The plan: one call centre's recovery, as typed models.

This module is the single source for validation, the sample plan and the docs:
every field's description is what `lifeline validate` and the README show.
Paths in a plan are relative to the plan file; `load_plan` resolves them.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lifeline.configs.alerts import AlertKind, Intake, Preparation, SiteArea, StatusPage
from lifeline.configs.base import RESTIC_REMOTE_SCHEMES, Name, PlanModel, PlanPath, Targets, relative_to_plan
from lifeline.configs.communications import Communications
from lifeline.configs.drills import Scenario
from lifeline.configs.recovery import Database, Fencing, Recovery, Service
from lifeline.configs.telephony import Telephony
from pydantic import Field, ValidationInfo, field_validator


class Impact(PlanModel):
    """The model used when no call log is available."""

    customers_per_hour: float = Field(0, ge=0)
    cost_per_minute: float = Field(0, ge=0, description="Cost of an outage minute.")
    currency: str = Field("USD", min_length=3, max_length=3)
    fixed_costs: dict[str, float] = Field(
        default_factory=dict, description="Costs every recovery run incurs, e.g. {standby_licence: 40}."
    )


class Repository(PlanModel):
    url: str = Field(description="Any restic repository URL: a path, s3:..., sftp:..., rest:...")
    password_file: PlanPath = Field(description="File holding the repository password (mode 0600).")
    environment_file: PlanPath | None = Field(
        None, description="KEY=VALUE lines passed to restic, e.g. AWS_ACCESS_KEY_ID for s3 repositories."
    )
    init: bool = Field(False, description="Create the repository when it does not exist yet.")
    concurrency: int = Field(4, ge=1, le=64, description="Backups, restores and copies that may use it at once, "
                             "across every worker (a Prefect global concurrency limit); forget, prune and check "
                             "take it whole.")
    prune_every_hours: float = Field(12, ge=0, description="A backup run prunes the repository when its last "
                                     "prune is older than this (0: every run); `lifeline backup --maintain` prunes now.")

    @field_validator("url")
    @classmethod
    def local_url_relative_to_plan(cls, url: str, info: ValidationInfo) -> str:
        if url.startswith(RESTIC_REMOTE_SCHEMES):
            return url
        local = url.removeprefix("local:")
        return str(relative_to_plan(Path(local), info))

    @property
    def is_local(self) -> bool:
        return not self.url.startswith(RESTIC_REMOTE_SCHEMES)

    @property
    def local_path(self) -> Path | None:
        """The repository's folder (the validator made it absolute); None for a remote backend."""
        return Path(self.url) if self.is_local else None


KEEP_AT_MOST = 1_000_000
"""A snapshot count restic's `forget --keep-*` can take (a Go int): more is a typo, not a policy."""


class Retention(PlanModel):
    last: int | None = Field(None, ge=1, le=KEEP_AT_MOST)
    hourly: int | None = Field(None, ge=1, le=KEEP_AT_MOST)
    daily: int | None = Field(None, ge=1, le=KEEP_AT_MOST)
    weekly: int | None = Field(None, ge=1, le=KEEP_AT_MOST)
    monthly: int | None = Field(None, ge=1, le=KEEP_AT_MOST)
    yearly: int | None = Field(None, ge=1, le=KEEP_AT_MOST)

    def policy(self) -> dict[str, int]:
        return {name: keep for name, keep in self.model_dump().items() if keep is not None}


class PostgresSource(PlanModel):
    dsn: str = Field(description="postgresql://user@host:port/database, without a password.")
    passfile: PlanPath | None = Field(None, description="libpq password file for this server.")

    @field_validator("dsn")
    @classmethod
    def no_password_in_dsn(cls, dsn: str) -> str:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        authority = dsn.split("://", 1)[1].split("/", 1)[0]
        if ":" in authority.split("@", 1)[0] and "@" in authority:
            raise ValueError("must not contain a password: put it in a passfile")
        return dsn

    @property
    def database(self) -> str:
        return self.dsn.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0] if "/" in self.dsn.split("://", 1)[1] else ""


class Dataset(PlanModel):
    """Exactly one source: `paths` (files), `postgres` (pg_dump) or `command` (its stdout)."""

    repository: str = Field(description="Name of the repository (under `repositories`) that holds it.")
    paths: list[PlanPath] | None = Field(None, min_length=1)
    exclude: list[str] = Field(default_factory=list)
    postgres: PostgresSource | None = None
    command: list[str] | None = Field(None, min_length=1, description="Argument list; never a shell string.")
    stdin_filename: str | None = Field(None, description="File name of a command's output in the snapshot.")
    retention: Retention | None = None
    copy_to: list[str] = Field(default_factory=list, description="Repositories that get a copy after backup.")
    rpo_minutes: float | None = Field(None, ge=0, description="This dataset's own RPO target.")
    rto_minutes: float | None = Field(None, gt=0)
    site: Name | None = Field(None, description="The site whose machine holds the data: its backup runs on that "
                              "site's work pool (`lifeline deploy`). Default: the normal primary site.")

    @property
    def kind(self) -> str:
        return "files" if self.paths else "postgres" if self.postgres else "command"


class Aws(PlanModel):
    endpoint_url: str | None = Field(None, description="Omit for real AWS.")
    region: str = "us-east-1"
    credentials_file: PlanPath | None = Field(
        None, description="KEY=VALUE file with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
    )


class Dns(PlanModel):
    zone: str
    record: str
    ttl: int = Field(60, ge=1)
    values: dict[str, str] = Field(description="Site name → the record's value while that site serves.")


class CallLog(PlanModel):
    """Where every customer call is logged with its outcome: how affected customers and lost calls are counted."""

    dsn: str
    passfile: PlanPath | None = None
    calls_table: str = Field(
        "calls", pattern=r"^[a-z_][a-z0-9_]*$", description="Table at the CRM database where an acknowledged call's id lives."
    )


class Site(PlanModel):
    description: str = ""
    area: SiteArea | None = Field(None, description="Where the site is, for the warnings (CAP areas, Alertmanager labels).")
    agents: list[Name] = Field(default_factory=list, description="Contact ids of the agents who work here: announced "
                               "to staff when a public-health alert turns on staff-shortage mode.")


class Host(PlanModel):
    site: str | None = None
    address: str
    port: int = Field(22, ge=1, le=65535)
    user: str
    key_file: PlanPath
    key_passphrase_file: PlanPath | None = Field(None, description="A file (0600) holding the passphrase of an "
                                                "encrypted key_file; read only to open the key.")
    known_hosts_file: PlanPath = Field(description="Host keys are always verified against this file.")
    concurrency: int | None = Field(None, ge=1, le=64, description="SSH commands Lifeline runs on it at once, "
                                    "across every worker (a Prefect global concurrency limit); unset: no limit, and "
                                    "no cost per command.")


class Checks(PlanModel):
    read_data_subset: str = Field(
        "5%", pattern=r"^(\d+(\.\d+)?%|\d+/\d+|\d+[KMGT]?)$", description="restic check --read-data-subset."
    )
    every_hours: float = Field(12, ge=0, description="A backup run checks a repository when its last check is "
                               "older than this (0: every run); `lifeline backup --maintain` checks now.")


class Schedules(PlanModel):
    """Cron expressions, in the plan's time zone, for the deployments `lifeline serve` registers."""

    backup: str = Field("0 2 * * *", description="Nightly backup.")
    verify: str | None = Field("*/5 * * * *", description="Service verification; null to turn it off.")
    drill: str | None = Field(None, description="Recovery drills.")

    @field_validator("backup", "verify", "drill")
    @classmethod
    def valid_cron(cls, expression: str | None) -> str | None:
        """Checked by the parser `lifeline serve` hands it to, so what validates also serves.

        Imported here: Prefect takes seconds to load, and only a plan that sets schedules needs it.
        """
        if expression is None:
            return None
        from prefect._internal.schemas.validators import validate_cron_string

        try:
            return validate_cron_string(expression)
        except ValueError:
            raise ValueError(f"not a cron expression: {expression!r}") from None


class Plan(Communications):
    """The whole plan; the communication keys (contacts, channels, audiences...) come from Communications."""

    name: Name
    timezone: str = "UTC"
    targets: Targets = Targets()
    impact: Impact = Impact()
    repositories: dict[Name, Repository]
    datasets: dict[Name, Dataset]
    checks: Checks = Checks()
    aws: Aws | None = None
    dns: Dns | None = None
    call_log: CallLog | None = None
    sites: dict[Name, Site] = Field(default_factory=dict)
    hosts: dict[Name, Host] = Field(default_factory=dict)
    services: dict[Name, Service] = Field(default_factory=dict)
    databases: dict[Name, Database] = Field(default_factory=dict)
    fencing: dict[Name, Fencing] = Field(default_factory=dict, description="Site name → how to fence it.")
    recovery: Recovery = Recovery()
    schedules: Schedules = Schedules()
    scenarios: dict[Name, Scenario] = Field(
        default_factory=dict, description="Drill scenarios; the lab's plan carries the five built-in ones."
    )
    intake: Intake | None = Field(None, description="`lifeline intake`: where warnings are posted.")
    preparedness: dict[AlertKind, Preparation] = Field(
        default_factory=dict, description="Alert kind → what a warning of that kind starts; a kind not listed starts "
        "nothing (the alert is still recorded).")
    status_page: StatusPage | None = Field(None, description="The public status page failovers, drills and alerts update.")
    network_namespace: Name | None = Field(
        None, description="Lifeline runs inside this network namespace (`ip netns exec NAME lifeline ...`): "
        "only from there does it reach the sites. The lab started with --netns sets ops."
    )
    telephony: Telephony | None = Field(None, description="The carrier's SBC, the sites' PBXs, IVRs and agents.")
    incident_record: PlanPath | None = Field(
        None, description="JSON file {fault: ISO time} written by monitoring (or the lab): its earliest entry is the incident time."
    )

    @field_validator("timezone")
    @classmethod
    def known_timezone(cls, timezone: str) -> str:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        return timezone

    def databases_at(self, *sites: str) -> list[str]:
        """The databases with an instance at every one of these sites."""
        return [name for name, database in self.databases.items() if all(site in database.instances for site in sites)]

    def rpo_target(self, dataset_name: str) -> timedelta:
        minutes = self.datasets[dataset_name].rpo_minutes
        return timedelta(minutes=self.targets.rpo_minutes if minutes is None else minutes)
