"""Warnings from outside, in one shape: CAP 1.2 alerts (weather services), Alertmanager webhooks, a plain JSON form.

Each parser turns its input into an `Alert` or raises `MalformedAlert` naming what is wrong. An alert's `key`
is what makes it the same alert when it comes again (intake is idempotent on it); `references` are the keys
of the alerts an update or a cancel changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeVar, get_args

from lifeline.tasks.adapters.errors import LifelineError
from pydantic import BaseModel, Field, ValidationError

Form = TypeVar("Form", bound=BaseModel)

Kind = Literal["weather", "natural-disaster", "network", "security", "public-health", "other"]
Severity = Literal["unknown", "minor", "moderate", "severe", "extreme"]
KINDS: tuple[str, ...] = get_args(Kind)
SEVERITIES: tuple[str, ...] = get_args(Severity)
"""From least to most severe (CAP's order; `unknown` below everything)."""
MAX_BYTES = 1024 * 1024
"""The largest warning taken, posted or read from a feed."""


class MalformedAlert(LifelineError):
    user_error = True


def validated(form: type[Form], payload: object, what: str = "") -> Form:
    """The payload as `form`, or MalformedAlert naming the first field that is wrong."""
    try:
        return form.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise MalformedAlert(f"{what}{where}: {first['msg']}") from None


class Area(BaseModel):
    """Where an alert applies: CAP's `area` (geocodes, polygons, circles); points are (latitude, longitude)."""

    description: str = ""
    geocodes: list[tuple[str, str]] = Field(default_factory=list)
    polygons: list[list[tuple[float, float]]] = Field(default_factory=list)
    circles: list[tuple[float, float, float]] = Field(default_factory=list, description="(lat, lon, radius km)")


class Alert(BaseModel):
    source: str = Field(description="cap, alertmanager or json")
    key: str = Field(description="The same key is the same alert: intake starts one run per key.")
    identifier: str
    sender: str = ""
    sent: datetime
    status: str = Field("actual", description="actual, exercise or test (CAP System and Draft are not taken)")
    message_type: str = Field("alert", description="alert, update or cancel")
    references: list[str] = Field(default_factory=list, description="Keys of the alerts this one changes.")
    kind: str = Field("other", description="weather, natural-disaster, network, security, public-health or other")
    severity: str = "unknown"
    event: str = ""
    headline: str = ""
    description: str = ""
    instruction: str = ""
    areas: list[Area] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    sites: list[str] = Field(default_factory=list, description="Sites the sender named itself (the JSON form).")
    expires: datetime | None = None

    @property
    def exercise(self) -> bool:
        return self.status in ("exercise", "test")

    def severity_at_least(self, minimum: str) -> bool:
        return SEVERITIES.index(self.severity) >= SEVERITIES.index(minimum)
