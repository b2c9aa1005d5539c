"""What every part of the plan shares: strict models and paths relative to the plan file."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo


def relative_to_plan(path: Path, info: ValidationInfo) -> Path:
    base_dir = (info.context or {}).get("base_dir")
    path = path.expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


PlanPath = Annotated[Path, AfterValidator(relative_to_plan)]
"""A path in the plan, relative to the plan file."""

RESTIC_REMOTE_SCHEMES = ("s3:", "sftp:", "rest:", "b2:", "azure:", "gs:", "swift:", "rclone:")

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


@dataclass(frozen=True)
class Problem:
    """One reason a plan cannot be used, named by its field path."""

    field: str
    message: str

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        # One line, whatever a key holds: a newline in a name must not forge a second complaint.
        return "".join(repr(char)[1:-1] if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in text)


class PlanModel(BaseModel):
    """Unknown keys are errors: a typo in a recovery plan must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Targets(PlanModel):
    rto_minutes: float = Field(15, gt=0, description="Recovery time objective.")
    rpo_minutes: float = Field(5, ge=0, description="Recovery point objective: data loss allowed, as time.")
    notify_minutes: float = Field(
        2, gt=0, description="Time to notify: from the incident's declaration to the first message the liaison gets."
    )
