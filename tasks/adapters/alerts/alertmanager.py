"""Prometheus Alertmanager's webhook (payload version 4): one notification per group of alerts.

Alertmanager retries a notification until it gets a 2xx answer, so the same group key with the same alerts
is the same alert. A `resolved` notification cancels the `firing` one it follows.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

from lifeline.tasks.adapters.alerts import KINDS, SEVERITIES, Alert, MalformedAlert, validated
from pydantic import BaseModel

SEVERITY_OF_LABEL = {"critical": "severe", "page": "severe", "error": "severe", "warning": "moderate",
                     "info": "minor", "none": "minor"}


class _Alert(BaseModel):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: datetime  # noqa: N815 - Alertmanager's names
    fingerprint: str = ""


class _Notification(BaseModel):
    version: Literal["4"]
    groupKey: str  # noqa: N815
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = {}  # noqa: N815
    commonLabels: dict[str, str] = {}  # noqa: N815
    commonAnnotations: dict[str, str] = {}  # noqa: N815
    alerts: list[_Alert]


def key_of(group_key: str, fingerprints: list[str], status: str) -> str:
    digest = hashlib.sha256("\n".join([group_key, status, *sorted(fingerprints)]).encode()).hexdigest()[:32]
    return f"alertmanager:{digest}"


def parse_alertmanager(payload: object) -> Alert:
    notification = validated(_Notification, payload, "not an Alertmanager webhook (version 4) at ")
    if not notification.alerts:
        raise MalformedAlert("alerts: an Alertmanager notification with no alerts")
    fingerprints = [alert.fingerprint or _fingerprint(alert.labels) for alert in notification.alerts]
    labels = notification.commonLabels or notification.alerts[0].labels
    severities = [SEVERITY_OF_LABEL.get(alert.labels.get("severity", "").lower(), "unknown")
                  for alert in notification.alerts]
    kind = labels.get("kind", "other")
    status = labels.get("status", "actual")
    annotations = notification.commonAnnotations or notification.alerts[0].annotations
    resolved = notification.status == "resolved"
    return Alert(
        source="alertmanager",
        key=key_of(notification.groupKey, fingerprints, notification.status),
        identifier=notification.groupKey, sender=notification.receiver or "alertmanager",
        sent=min(alert.startsAt for alert in notification.alerts).astimezone(UTC),
        status=status if status in ("actual", "exercise", "test") else "actual",
        message_type="cancel" if resolved else "alert",
        references=[key_of(notification.groupKey, fingerprints, "firing")] if resolved else [],
        kind=kind if kind in KINDS else "other",
        severity=max(severities, key=SEVERITIES.index),
        event=labels.get("alertname", ""),
        headline=annotations.get("summary") or labels.get("alertname", "alert"),
        description="\n".join(d for d in dict.fromkeys(a.annotations.get("description", "")
                                                       for a in notification.alerts) if d),
        labels=labels,
    )


def _fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{k}={v}" for k, v in sorted(labels.items())).encode()).hexdigest()[:16]
