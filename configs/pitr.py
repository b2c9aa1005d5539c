"""Point-in-time recovery of a database: pgBackRest archives its WAL continuously and takes full, differential
and incremental backups; `lifeline restore --to-time` brings it back to any second in the window."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lifeline.configs.base import Name, PlanModel, PlanPath
from pydantic import Field, field_validator, model_validator


class PitrS3(PlanModel):
    """An S3 bucket pgBackRest writes to over TLS; it checks the endpoint's name against the certificate."""

    bucket: str = Field(min_length=3, max_length=63)
    endpoint: str = Field("s3.amazonaws.com", description="Host name of the S3 endpoint (not an IP address: "
                          "pgBackRest matches it against the certificate's DNS names).")
    port: int = Field(443, ge=1, le=65535)
    region: str = "us-east-1"
    uri_style: Literal["host", "path"] = Field("host", description="path for endpoints without bucket DNS names.")
    ca_file: Path | None = Field(None, description="CA certificate on the database hosts, for a private endpoint.")
    credentials_file: PlanPath = Field(description="KEY=VALUE file with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                       "on the machine that runs Lifeline; written into the hosts' 0600 config.")
    prefix: str = Field("/pgbackrest", pattern=r"^/[A-Za-z0-9/_.-]*$", description="Folder in the bucket.")


class PitrRepository(PlanModel):
    """Exactly one of `path` (a folder on the database hosts) and `s3`."""

    path: Path | None = Field(None, description="Folder on the database hosts (absolute).")
    s3: PitrS3 | None = None
    retention_full: int = Field(2, ge=1, le=100, description="Full backups kept (and the WAL they need).")
    retention_diff: int | None = Field(None, ge=1, le=100, description="Differential backups kept.")

    @model_validator(mode="after")
    def one_place(self) -> PitrRepository:
        if (self.path is None) == (self.s3 is None):
            raise ValueError("give one of path and s3")
        if self.path is not None and not self.path.is_absolute():
            raise ValueError("path: must be absolute (it is a folder on the database hosts)")
        return self


class PitrSchedules(PlanModel):
    """Cron expressions in the plan's time zone; null turns a kind off."""

    full: str = Field("0 1 * * 0", description="Full backups (weekly).")
    diff: str | None = Field("0 1 * * 1-6", description="Differential backups (nightly).")
    incr: str | None = Field("0 */4 * * *", description="Incremental backups.")


class Pitr(PlanModel):
    stanza: Name = Field(description="pgBackRest's name for this database cluster.")
    dataset: Name | None = Field(None, description="The dataset (pg_dump) of this database: "
                                 "`lifeline restore <dataset> --to-time` then restores to a point in time.")
    repositories: list[PitrRepository] = Field(min_length=1, max_length=4)
    work_dir: Path = Field(Path("/var/lib/lifeline/pgbackrest"), description="Folder on the database hosts for "
                           "the configuration (0600), logs, locks and the restores' staging clusters.")
    binary: str = Field("pgbackrest", description="pgBackRest on the database hosts.")
    archive_timeout_seconds: int = Field(30, ge=1, le=3600, description="A WAL segment is archived at least this "
                                         "often while there are writes: the data-loss window of a site loss.")
    rpo_minutes: float = Field(1, ge=0, description="The database's RPO target once archiving is on.")
    staging_port: int = Field(5499, ge=1, le=65535, description="Port of the staging cluster a restore starts.")
    process_max: int = Field(2, ge=1, le=32, description="pgBackRest's parallel processes for backup and restore.")
    schedules: PitrSchedules = PitrSchedules()

    @field_validator("work_dir")
    @classmethod
    def absolute(cls, path: Path) -> Path:
        if not path.is_absolute():
            raise ValueError("must be absolute (it is a folder on the database hosts)")
        return path
