"""Health checks a plan can name: `http`, `tcp`, `sql`, `ssh` and `sip`, told apart by `type`.

`lifeline.tasks.adapters.probes` runs them; the plan's services list them. A check never carries a secret:
a SQL check's password lives in a passfile, an SSH check names a host whose key lives in a file.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from lifeline.configs.base import PlanModel, PlanPath
from pydantic import Field, field_validator


class CheckModel(PlanModel):
    name: str | None = Field(None, max_length=80, description="How reports call this check; derived when omitted.")


class HttpCheck(CheckModel):
    type: Literal["http"] = "http"
    url: str = Field(description="http:// or https:// URL, fetched with GET.")
    expect_status: int = Field(200, ge=100, le=599)
    expect_text: str | None = Field(None, description="Text the response body must contain.")
    timeout_seconds: float = Field(2.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.password:
            raise ValueError("must not contain a password")
        return url


class TcpCheck(CheckModel):
    type: Literal["tcp"] = "tcp"
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timeout_seconds: float = Field(2.0, gt=0, le=300)


class SqlCheck(CheckModel):
    type: Literal["sql"] = "sql"
    dsn: str = Field(description="postgresql://user@host:port/database, without a password.")
    passfile: PlanPath | None = Field(None, description="libpq password file for this server.")
    query: str = Field("SELECT 1", min_length=1)
    expect: str | None = Field(
        None,
        description="Expected text of the first column of the first row (booleans read true/false, NULL reads null); "
        "omitted: the query only has to succeed.",
    )
    timeout_seconds: float = Field(3.0, gt=0, le=300)

    @field_validator("dsn")
    @classmethod
    def postgres_dsn_without_password(cls, dsn: str) -> str:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        authority = dsn.split("://", 1)[1].split("/", 1)[0]
        userinfo = authority.rsplit("@", 1)[0] if "@" in authority else ""
        if ":" in userinfo or "password=" in dsn.lower():
            raise ValueError("must not contain a password: put it in a passfile")
        return dsn


class SshCheck(CheckModel):
    type: Literal["ssh"] = "ssh"
    host: str = Field(min_length=1, description="A host name from the plan's `hosts`.")
    command: list[str] = Field(min_length=1, description="Argument list, quoted for the remote shell; never a string.")
    expect_exit: int = Field(0, ge=0, le=255)
    timeout_seconds: float = Field(5.0, gt=0, le=600)


class SipCheck(CheckModel):
    """A test call through the SBC, as a customer's: healthy when it is answered (by `expect_answered_by`)."""

    type: Literal["sip"] = "sip"
    address: str = Field(min_length=1, description="The SBC's SIP address (UDP).")
    port: int = Field(5060, ge=1, le=65535)
    number: str = Field(min_length=1, pattern=r"^[A-Za-z0-9+_.-]+$", description="The number to dial.")
    caller_id: str = Field("lifeline-test", pattern=r"^[A-Za-z0-9+_.-]+$")
    expect_answered_by: str | None = Field(None, description="host:port of the PBX that must answer (a site's).")
    timeout_seconds: float = Field(5.0, gt=0, le=300)


Check = Annotated[HttpCheck | TcpCheck | SqlCheck | SshCheck | SipCheck, Field(discriminator="type")]
"""One check of any type; `type` picks the model."""
