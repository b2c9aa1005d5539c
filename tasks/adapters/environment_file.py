"""Environment files (`KEY=VALUE` lines, as the plan's `environment_file`, `credentials_file` and
`headers_file` name them), read with python-dotenv: comments, quotes and `export` as a shell has them."""

from __future__ import annotations

from pathlib import Path

from dotenv import dotenv_values


def read_environment_file(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    return {key: value for key, value in dotenv_values(path).items() if value is not None}
