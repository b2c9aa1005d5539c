"""The plain JSON form, for a person or a tool without CAP or Alertmanager: the fields of `Alert` by name."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from lifeline.tasks.adapters.alerts import Alert, Kind, Severity, validated
from pydantic import BaseModel, ConfigDict, Field


class PlainAlert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    kind: Kind
    severity: Severity = "unknown"
    headline: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=10_000)
    instruction: str = Field("", max_length=10_000)
    status: Literal["actual", "exercise", "test"] = "actual"
    type: Literal["alert", "update", "cancel"] = "alert"
    references: list[str] = Field(default_factory=list, description="ids of the alerts this one changes")
    sites: list[str] = Field(default_factory=list, description="empty: every site")
    labels: dict[str, str] = Field(default_factory=dict)
    sender: str = Field("", max_length=200)


def key_of(identifier: str) -> str:
    return f"json:{identifier}"


def parse_plain(payload: object) -> Alert:
    form = validated(PlainAlert, payload)
    return Alert(source="json", key=key_of(form.id), identifier=form.id, sender=form.sender, sent=datetime.now(UTC),
                 status=form.status, message_type=form.type, references=[key_of(ref) for ref in form.references],
                 kind=form.kind, severity=form.severity, event=form.kind, headline=form.headline,
                 description=form.description, instruction=form.instruction, labels=form.labels, sites=form.sites)
