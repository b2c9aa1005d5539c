"""Warnings that start the preparation: the intake service, what to do per alert kind, the public status page."""

from __future__ import annotations

from typing import Literal

from lifeline.configs.base import Name, PlanModel, PlanPath
from pydantic import Field, field_validator

AlertKind = Literal["weather", "natural-disaster", "network", "security", "public-health", "other"]
Severity = Literal["unknown", "minor", "moderate", "severe", "extreme"]


class SiteArea(PlanModel):
    """How warnings find a site: by the CAP area they name, or by Alertmanager labels."""

    location: tuple[float, float] | None = Field(None, description="[latitude, longitude]: inside a CAP polygon or circle.")
    geocodes: list[str] = Field(default_factory=list, description="CAP geocodes as NAME=VALUE, e.g. SAME=006037.")
    labels: dict[str, str] = Field(default_factory=dict, description="Alertmanager labels that name this site "
                                   "(every one must match), e.g. {site: main}.")

    @field_validator("geocodes")
    @classmethod
    def name_equals_value(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if "=" not in code:
                raise ValueError(f"{code!r} is not NAME=VALUE")
        return codes

    def geocode_pairs(self) -> list[tuple[str, str]]:
        return [tuple(code.split("=", 1)) for code in self.geocodes]  # type: ignore[misc]


class Feed(PlanModel):
    url: str = Field(pattern=r"^https?://", description="An Atom feed of CAP alerts.")
    every_seconds: float = Field(60, ge=5, description="How often intake polls it.")


class Intake(PlanModel):
    """`lifeline intake`: the HTTP service warnings are posted to."""

    token_file: PlanPath = Field(description="File holding the bearer token every request must carry (mode 0600).")
    host: str = Field("127.0.0.1", description="Address it listens on.")
    port: int = Field(8470, ge=1, le=65535)
    feeds: list[Feed] = Field(default_factory=list)


class Preparation(PlanModel):
    """What an alert of one kind starts, from a minimum severity. What runs is fixed by the kind:
    weather and natural-disaster: an off-site backup of `datasets`, a preflight of the DR site, a notice;
    network: verify both sites, then preflight; security: the compromise drill's isolation steps and the
    repository credentials are checked; public-health: staff-shortage mode and the DR site's agents announced."""

    min_severity: Severity = Field("moderate", description="Alerts below it are recorded and change nothing.")
    datasets: list[Name] | None = Field(None, description="The critical datasets backed up at once; "
                                        "default: every dataset copied off-site (`copy_to`).")
    notify: list[Name] = Field(default_factory=lambda: ["liaison", "leadership"],
                               description="Audiences told, with the alert's text.")
    staff_shortage_hours: float = Field(72, gt=0, description="public-health: how long the mode lasts.")


class StatusComponent(PlanModel):
    name: dict[Literal["zh", "en"], str] = Field(description="Shown to customers, in both languages.")
    services: list[Name] = Field(default_factory=list, description="Services whose state it shows.")


class StatusPage(PlanModel):
    """A public status page (static HTML and JSON) in an S3 bucket, as Statuspage or Cachet show."""

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field("status", pattern=r"^[A-Za-z0-9._/-]*$")
    public_url: str | None = Field(None, description="Where people read it; default: the bucket's URL at the S3 endpoint.")
    title: dict[Literal["zh", "en"], str] = Field(default_factory=lambda: {"zh": "服务状态", "en": "Service status"})
    components: dict[Name, StatusComponent] = Field(default_factory=dict)
