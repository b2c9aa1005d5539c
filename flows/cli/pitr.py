"""`lifeline pitr setup|backup|status` and the point-in-time half of `lifeline restore`."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer
from lifeline.configs.loading import LoadedPlan
from lifeline.flows.cli.common import JsonOption, PlanOption, app, fail, loaded_plan, parse_time

pitr_app = typer.Typer(help="Point-in-time recovery with pgBackRest: archiving, backups, the archive's lag.",
                       no_args_is_help=True)
app.add_typer(pitr_app, name="pitr")

DatabaseOption = Annotated[str | None, typer.Option(help="The database (default: the plan's only one with `pitr`).")]


def pitr_database(loaded: LoadedPlan, name: str | None) -> str:
    from lifeline.tasks.run.pitr_inputs import pitr_database_for

    with_pitr = [database for database, entry in loaded.plan.databases.items() if entry.pitr is not None]
    if name is None:
        if len(with_pitr) != 1:
            fail(f"--database: choose one of {', '.join(with_pitr)}" if with_pitr else
                 "databases: no database has a `pitr` section")
        return with_pitr[0]
    found = pitr_database_for(loaded.plan, name)
    if found is None:
        fail(f"--database: {name!r} is no database with `pitr` (those with it: {', '.join(with_pitr) or 'none'})")
    return found


@pitr_app.command()
def setup(plan: PlanOption = None, database: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """Write pgBackRest's config on every database host, set archive_command at the primary, create the stanza
    and check that WAL arrives in every repository."""
    from lifeline.flows.cli import run_and_report
    from lifeline.flows.pitr import pitr_backup_flow

    loaded = loaded_plan(plan)
    run_and_report(pitr_backup_flow, as_json, plan_path=str(loaded.path), database=pitr_database(loaded, database))


@pitr_app.command()
def backup(
    plan: PlanOption = None,
    database: DatabaseOption = None,
    kind: Annotated[Literal["full", "diff", "incr"], typer.Option("--type", help="full, diff or incr.")] = "incr",
    as_json: JsonOption = False,
) -> None:
    """Back up the database into every pgBackRest repository (archiving is configured first when needed)."""
    from lifeline.flows.cli import run_and_report
    from lifeline.flows.pitr import pitr_backup_flow

    loaded = loaded_plan(plan)
    run_and_report(pitr_backup_flow, as_json, plan_path=str(loaded.path), database=pitr_database(loaded, database),
                   kind=kind)


@pitr_app.command()
def status(plan: PlanOption = None, database: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """The archive's lag at the primary against the RPO target, and the restorable window's start."""
    from lifeline.flows.pitr import current_primary
    from lifeline.tasks.run.pitr_inputs import pgbackrest_at, pitr_of
    from lifeline.tasks.steps.pitr import archive_lag

    loaded = loaded_plan(plan)
    name = pitr_database(loaded, database)
    entry, _ = pitr_of(loaded.plan, name)
    try:
        primary = current_primary(loaded.plan, name)
        lag = archive_lag(loaded.plan, name, primary)
        info = pgbackrest_at(loaded.plan, entry, primary).info()
    except Exception as error:  # noqa: BLE001 - every failure here is reported as one line
        fail(str(error), 1)
    report = {"database": name, **lag.detail, "within_target": lag.within_target,
              "oldest_restorable": info.oldest_restorable.isoformat() if info.oldest_restorable else None,
              "backups": [{"label": b.label, "type": b.type, "repo": b.repository, "stopped_at": b.stopped_at.isoformat()}
                          for b in info.backups]}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    exposure = lag.status.exposure_seconds
    typer.echo(f"{name} at {primary}: last WAL archived {report['last_archived_at'] or 'never'}; "
               f"exposure {'unknown' if exposure is None else f'{exposure:.0f} s'} "
               f"(target {lag.target_seconds:.0f} s) — {'OK' if lag.within_target else 'BEHIND'}")
    typer.echo(f"restorable from {report['oldest_restorable'] or 'nothing yet: no backup'}; "
               f"{len(info.backups)} backup(s)")
    if not lag.within_target:
        raise typer.Exit(1)


def restore_to_point(loaded: LoadedPlan, name: str, when: str | None, before_transaction: int | None,
                     tables: str | None, replace: bool, yes: bool, reason: str, as_json: bool) -> None:
    from lifeline.flows.cli import run_and_report
    from lifeline.flows.pitr import pitr_restore_flow
    from lifeline.tasks.run.pitr_inputs import pitr_database_for

    database = pitr_database_for(loaded.plan, name)
    if database is None:
        if name in loaded.plan.datasets:
            fail(f"--target: required for {name} (point-in-time restores need a database with `pitr`)")
        fail(f"no dataset or database with `pitr` named {name!r}")
    if (when is None) == (before_transaction is None):
        fail("give one of --to-time (or --as-of) and --before-transaction")
    if tables is not None and replace:
        fail("--tables repairs tables, --replace rewinds the whole database: choose one")
    table_list = [table.strip() for table in (tables or "").split(",") if table.strip()]
    if tables is not None and not table_list:
        fail("--tables: name at least one table")
    mode = "replace" if replace else "repair" if table_list else "side"
    record_id = run_and_report(pitr_restore_flow, as_json, plan_path=str(loaded.path), database=database,
                               to_time=parse_time(when, "--to-time"), before_xid=before_transaction, mode=mode,
                               tables=table_list or None, approval="yes" if yes else "terminal", reason=reason)
    if mode == "side" and not as_json:
        staging = staging_left_running(record_id)
        if staging is not None:
            typer.echo(f"staging cluster left running for inspection: {staging['dsn']} (data directory "
                       f"{staging['data_dir']} on host {staging['host']}; the next restore stops it)")


def staging_left_running(record_id: str | None) -> dict | None:
    from lifeline.configs.settings import load_settings
    from lifeline.tasks.run.ledger import Ledger

    record = Ledger(load_settings().ledger).run(record_id) if record_id else None
    steps = [step for step in (record.steps if record else []) if "dsn" in step.detail and step.status == "completed"]
    return steps[-1].detail if steps else None
