"""What every command shares: the app, its options, one-line failures, and reading the plan."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from lifeline.configs.loading import LoadedPlan, PlanInvalid, load_plan
from lifeline.configs.settings import load_settings

app = typer.Typer(
    name="lifeline",
    help="Disaster recovery for call centres: backups, verified restores, failover and drills.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PlanOption = Annotated[
    Path | None,
    typer.Option("--plan", "-p", help="Plan file (default: $LIFELINE_PLAN).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout, nothing else.")]
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    typer.echo(f"lifeline: {message}", err=True)
    raise typer.Exit(code)


def plan_path(plan: Path | None) -> Path:
    chosen = plan or load_settings().plan
    if chosen is None:
        fail("no plan: pass --plan FILE or set LIFELINE_PLAN")
    return chosen


def loaded_plan(plan: Path | None) -> LoadedPlan:
    path = plan_path(plan)
    try:
        loaded = load_plan(path)
    except PlanInvalid as invalid:
        for problem in invalid.problems:
            typer.echo(f"{invalid.path}: {problem}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    for warning in loaded.warnings:
        typer.echo(f"lifeline: warning: {loaded.path}: {warning}", err=True)
    return loaded


def parse_time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: not an ISO 8601 time: {text!r}")
    moment = moment if moment.tzinfo else moment.astimezone()
    if moment > datetime.now(UTC):
        fail(f"{option}: {text} is in the future")
    return moment
