"""The files a plan names that hold secrets (passwords, keys, tokens): found by their field's name anywhere in
the plan, so a new one is checked without being listed here. A missing one is a problem; one that others may
read (group or world bits set) is a warning, as ssh warns of an open private key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lifeline.configs.base import Problem
from pydantic import BaseModel

SECRET_FIELDS = ("password_file", "passfile", "credentials_file", "token_file", "environment_file",
                 "passphrase_file")
WRITTEN_BY_LIFELINE = ("new_",)  # e.g. a leak drill's new_password_file: Lifeline writes it, 0600


def secret_files(node: object, where: str = "") -> Iterator[tuple[str, Path]]:
    """(field path, file) for every secret file set anywhere in the plan."""
    if isinstance(node, BaseModel):
        for name in type(node).model_fields:
            value, field = getattr(node, name), f"{where}.{name}" if where else name
            if isinstance(value, Path) and name.endswith(SECRET_FIELDS) and not name.startswith(WRITTEN_BY_LIFELINE):
                yield field, value
            else:
                yield from secret_files(value, field)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from secret_files(value, f"{where}.{key}")
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from secret_files(value, f"{where}.{index}")


def missing_secret_files(plan: BaseModel) -> list[Problem]:
    return [Problem(field, f"file not found: {file}") for field, file in secret_files(plan) if not file.is_file()]


def open_secret_files(plan: BaseModel) -> list[Problem]:
    """Secret files others may read or write: each a warning, not a refusal (the run still works)."""
    warnings = []
    for field, file in secret_files(plan):
        try:
            mode = file.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o077:
            warnings.append(Problem(field, f"{file} is open to others (mode {mode:04o}): chmod 600 it"))
    return warnings
