"""`lifeline`: the command line. Each command runs its Prefect flow in this process.

Exit codes: 0 success, 1 the run failed, 2 bad input. With --json, stdout carries exactly
one JSON object (a run) or one array (a listing); progress and logs go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer
from lifeline.configs.loading import PlanInvalid
from lifeline.configs.settings import load_settings
from lifeline.flows.cli.common import (  # noqa: F401 - re-exported: tests and the lab use them from here
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    JsonOption,
    PlanOption,
    app,
    fail,
    loaded_plan,
    parse_time,
    plan_path,
)
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.record import RunKind


@app.command()
def validate(plan: PlanOption = None) -> None:
    """Validate the plan; print every problem with its field path."""
    loaded = loaded_plan(plan)
    typer.echo(f"{loaded.path}: valid ({len(loaded.plan.datasets)} datasets, {len(loaded.plan.repositories)} repositories)")


@app.command()
def backup(
    plan: PlanOption = None,
    dataset: Annotated[str | None, typer.Option(help="Back up only this dataset.")] = None,
    maintain: Annotated[bool, typer.Option("--maintain", help="Prune and check the repositories now, due or not.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Back up every dataset (or one) as one run: backup, retention, off-site copy; prune and check when due."""
    loaded = loaded_plan(plan)
    if dataset is not None and dataset not in loaded.plan.datasets:
        fail(f"--dataset: no dataset named {dataset!r} (known: {', '.join(loaded.plan.datasets)})")
    from lifeline.flows.backup import backup_flow

    run_and_report(backup_flow, as_json, plan_path=str(loaded.path), dataset=dataset, maintain=maintain)


@app.command()
def restore(
    dataset: Annotated[str, typer.Argument(help="Dataset to restore (or a database with `pitr`).")],
    target: Annotated[str | None, typer.Option(help="Folder for files; a postgresql:// DSN for a database. "
                                               "Without it, a database with `pitr` is restored to a point in time.")]
    = None,
    plan: PlanOption = None,
    snapshot: Annotated[str, typer.Option(help="Snapshot id (or prefix), or latest.")] = "latest",
    as_of: Annotated[str | None, typer.Option("--as-of", help="Newest snapshot at or before this ISO time; with "
                                              "`pitr`, the same as --to-time.")] = None,
    to_time: Annotated[str | None, typer.Option("--to-time", help="PITR: to just before this ISO time.")] = None,
    before_transaction: Annotated[int | None, typer.Option("--before-transaction", min=3,
                                                           help="PITR: to just before this transaction id.")] = None,
    tables: Annotated[str | None, typer.Option(help="PITR repair mode: copy these tables (a,b or schema.a) back "
                                               "into the live primary; their current rows are kept aside.")] = None,
    replace: Annotated[bool, typer.Option(help="Move existing data at the target aside instead of refusing; with "
                                          "`pitr`, rewind the whole primary (asks for approval).")] = False,
    incident_at: Annotated[str | None, typer.Option("--incident-at", help="When the data was lost (ISO time).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="PITR replace: approve the rewind without asking.")] = False,
    reason: Annotated[str, typer.Option(help="Why (the record and the approval show it).")] = "",
    as_json: JsonOption = False,
) -> None:
    """Restore into staging, verify, and only then put the data in place; or bring a database back to a moment."""
    loaded = loaded_plan(plan)
    if target is None:
        from lifeline.flows.cli.pitr import restore_to_point

        restore_to_point(loaded, dataset, to_time or as_of, before_transaction, tables, replace, yes, reason, as_json)
        return
    if to_time is not None or before_transaction is not None or tables is not None:
        fail("--to-time, --before-transaction and --tables restore a database with `pitr`: leave out --target")
    if dataset not in loaded.plan.datasets:
        fail(f"no dataset named {dataset!r} (known: {', '.join(loaded.plan.datasets)})")
    is_database = loaded.plan.datasets[dataset].postgres is not None
    if is_database != target.startswith(("postgresql://", "postgres://")):
        fail(f"--target: {dataset} is {'a database: give a postgresql:// DSN' if is_database else 'files: give a folder'}")
    from lifeline.flows.restore import restore_flow

    run_and_report(
        restore_flow,
        as_json,
        plan_path=str(loaded.path),
        dataset=dataset,
        target=target,
        snapshot=snapshot,
        as_of=parse_time(as_of, "--as-of"),
        replace=replace,
        incident_at=parse_time(incident_at, "--incident-at"),
    )


@app.command()
def snapshots(
    plan: PlanOption = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset's snapshots.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List snapshots per dataset."""
    loaded = loaded_plan(plan)
    from lifeline.tasks.adapters.restic import ResticError
    from lifeline.tasks.steps.repositories import dataset_tags, open_repository

    settings = load_settings()
    names = [dataset] if dataset else list(loaded.plan.datasets)
    rows = []
    for name in names:
        if name not in loaded.plan.datasets:
            fail(f"--dataset: no dataset named {name!r}")
        entry = loaded.plan.datasets[name]
        repository = open_repository(loaded.plan, entry.repository, settings)
        try:
            found = repository.snapshots(tags=dataset_tags(loaded.plan, name))
        except ResticError as error:
            fail(str(error), EXIT_BAD_INPUT if getattr(error, "user_error", False) else EXIT_FAILED)
        rows += [
            {"dataset": name, "repository": entry.repository, "id": s.id, "time": s.time.isoformat(), "paths": list(s.paths)}
            for s in sorted(found, key=lambda s: s.time)
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from lifeline.flows.cli.display import print_rows

    print_rows(rows, ["dataset", "repository", "id", "time", "paths"], title="Snapshots")


@app.command()
def runs(
    plan: PlanOption = None,
    kind: Annotated[RunKind | None, typer.Option(help="Only runs of this kind.")] = None,
    last: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List run records from the ledger."""
    from lifeline.tasks.run.ledger import Ledger

    plan_name = loaded_plan(plan).plan.name if (plan or load_settings().plan) else None
    records = Ledger(load_settings().ledger).runs(kind=kind, plan=plan_name, last=last)
    if as_json:
        typer.echo(json.dumps([record.model_dump(mode="json") for record in records], indent=2))
        return
    from lifeline.flows.cli.display import print_records

    print_records(records)


@app.command()
def preflight(plan: PlanOption = None, as_json: JsonOption = False) -> None:
    """Readiness before anything is touched: READY or NOT READY with every reason."""
    loaded = loaded_plan(plan)
    from lifeline.tasks.run.topology import normal_primary_site, other_site
    from lifeline.tasks.steps.preflight import assess_readiness

    target = other_site(loaded.plan, normal_primary_site(loaded.plan))
    readiness = assess_readiness(loaded.plan, load_settings(), target)
    if as_json:
        typer.echo(json.dumps({"ready": readiness.ready, "target_site": target, "reasons": readiness.reasons,
                               "items": [item.model_dump() for item in readiness.items]}, indent=2))
    else:
        from lifeline.flows.cli.display import print_rows

        print_rows([item.model_dump() for item in readiness.items], ["name", "ready", "detail"], title=f"Preflight: fail over to {target}")
        typer.echo("READY" if readiness.ready else "NOT READY")
        for reason in readiness.reasons:
            typer.echo(f"  - {reason}")
    raise typer.Exit(0 if readiness.ready else EXIT_FAILED)


YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Approve without asking.")]


DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print every step with its resolved command; change nothing.")]
ForceOption = Annotated[bool, typer.Option(
    help="Go on even when preflight says NOT READY, or a silent site cannot be proven fenced (recorded).")]


@app.command()
def failover(
    plan: PlanOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    force: ForceOption = False,
    reason: Annotated[str, typer.Option(help="Why: the incident, the ticket.")] = "",
    incident_at: Annotated[str | None, typer.Option("--incident-at", help="When the incident began (ISO time).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Fail over to the DR site: preflight, approval, fence, recover, verify, record."""
    loaded = loaded_plan(plan)
    if dry_run:
        from lifeline.flows.failover import describe_failover

        typer.echo(describe_failover(loaded.plan))
        return
    from lifeline.flows.failover import failover_flow

    run_and_report(
        failover_flow, as_json, plan_path=str(loaded.path), reason=reason, force=force,
        approval="yes" if yes else "terminal", incident_at=parse_time(incident_at, "--incident-at"),
    )


@app.command()
def failback(
    plan: PlanOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    force: ForceOption = False,
    reason: Annotated[str, typer.Option(help="Why now.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Make the old primary a standby again (keeping its data), let it catch up, and switch back."""
    loaded = loaded_plan(plan)
    if dry_run:
        from lifeline.flows.failback import describe_failback

        typer.echo(describe_failback(loaded.plan))
        return
    from lifeline.flows.failback import failback_flow

    run_and_report(failback_flow, as_json, plan_path=str(loaded.path), reason=reason, force=force,
                   approval="yes" if yes else "terminal")


@app.command()
def verify(
    plan: PlanOption = None,
    site: Annotated[str | None, typer.Option(help="Only this site's services (default: the site DNS names).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run every check of a site concurrently; exit 0 only when every critical service is healthy."""
    loaded = loaded_plan(plan)
    if site is not None and site not in loaded.plan.sites:
        fail(f"--site: no site named {site!r} (known: {', '.join(loaded.plan.sites)})")
    from lifeline.flows.verify import verify_flow

    run_and_report(verify_flow, as_json, plan_path=str(loaded.path), site=site)


@app.command()
def drill(
    scenario: Annotated[str, typer.Option("--scenario", "-s", help="Scenario to rehearse, as named in the plan.")],
    plan: PlanOption = None,
    keep: Annotated[bool, typer.Option(help="Leave the recovered state for inspection.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Rehearse a scenario on the lab (or the plan's systems): fault, recovery, verification, score, clean-up."""
    loaded = loaded_plan(plan)
    if scenario not in loaded.plan.scenarios:
        fail(f"--scenario: no scenario named {scenario!r} (known: {', '.join(loaded.plan.scenarios) or 'none'})")
    from lifeline.flows.drill import drill_flow

    run_and_report(drill_flow, as_json, plan_path=str(loaded.path), scenario=scenario, keep=keep)


@app.command()
def report(
    plan: PlanOption = None,
    run: Annotated[str | None, typer.Option("--run", help="Run id (or its start); default the newest run that no "
                                                   "other run started (a drill, not its failback).")] = None,
    output_format: Annotated[str, typer.Option("--format", help="html, md or json.")] = "html",
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
    trend: Annotated[bool, typer.Option("--trend", help="RTO and RPO per scenario over time, and overdue drills.")] = False,
) -> None:
    """An after-action report of one run (self-contained HTML with charts, Markdown or JSON), or the trend."""
    if output_format not in ("html", "md", "json"):
        fail(f"--format: {output_format!r} is not html, md or json")
    loaded = loaded_plan(plan)
    from lifeline.tasks.report import after_action
    from lifeline.tasks.run.ledger import Ledger

    ledger = Ledger(load_settings().ledger)
    if trend:
        records = after_action.load_trend_records(ledger, loaded.plan.name)
        if output_format == "json":
            text = json.dumps([r.model_dump(mode="json") for r in records], indent=2)
        else:
            render = after_action.render_trend_html if output_format == "html" else after_action.render_trend_markdown
            text = render(records, loaded.plan)
    else:
        if run is not None:
            record = ledger.run(run)
            if record is None:
                fail(f"--run: no single run starts with {run!r}")
        else:
            newest = ledger.runs(plan=loaded.plan.name, last=1, own_only=True)
            if not newest:
                fail(f"no runs of plan {loaded.plan.name} in the ledger yet")
            record = newest[0]
        if output_format == "json":
            text = record.model_dump_json(indent=2)
        else:
            render = after_action.render_html if output_format == "html" else after_action.render_markdown
            text = render(record, loaded.plan, after_action.load_history(ledger, record), ledger.children(record.id),
                          *after_action.communications_of(ledger, record))
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"report written to {out}", err=True)


@app.command()
def serve(
    plan: PlanOption = None,
    query_seconds: Annotated[float | None, typer.Option(
        help="How often the runner looks for new runs (default LIFELINE_SERVE_QUERY_SECONDS, 0.25).")] = None,
) -> None:
    """Serve Lifeline's deployments to the Prefect server in PREFECT_API_URL, else Lifeline's own (blocks)."""
    if query_seconds is not None and query_seconds <= 0:
        fail(f"--query-seconds: must be more than 0, not {query_seconds}")
    loaded = loaded_plan(plan)
    from lifeline.flows.cli.control_plane import lasting_api_url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = lasting_api_url("serve")
    from lifeline.flows.serve import serve_plan

    with temporary_settings({PREFECT_API_URL: url}):
        serve_plan(loaded, query_seconds=query_seconds or load_settings().serve_query_seconds)


def run_and_report(flow_function, as_json: bool, **parameters) -> str:
    """Run a flow here, then print its record from the ledger and exit with its verdict; returns the record's id."""
    from lifeline.flows.cli.display import configure_quiet_tracebacks, print_record, show_progress
    from lifeline.tasks.run.ledger import Ledger

    configure_quiet_tracebacks()
    record_id = uuid.uuid4().hex[:12]
    error: BaseException | None = None
    with show_progress(enabled=sys.stderr.isatty()), prefect_for_cli():
        try:
            flow_function(**parameters, record_id=record_id, trigger="cli")
        except KeyboardInterrupt:
            error = KeyboardInterrupt()
        except Exception as raised:  # the run's failure: reported below in one line
            error = raised
    try:
        record = Ledger(load_settings().ledger).run(record_id)
    except LifelineError as ledger_error:  # the ledger away or refusing: say that, once, instead of the record
        record, error = None, error or ledger_error
    if record is not None:
        if as_json:
            typer.echo(record.model_dump_json(indent=2))
        else:
            print_record(record)
    if error is None and record is not None and record.status == "cancelled":
        fail(record.error or "cancelled", EXIT_FAILED)
    if error is not None:
        if isinstance(error, PlanInvalid):
            for problem in error.problems:
                typer.echo(f"{error.path}: {problem}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)
        bad_input = getattr(error, "user_error", False)
        fail(str(error) or type(error).__name__, EXIT_BAD_INPUT if bad_input else EXIT_FAILED)
    return record_id


def prefect_for_cli():
    """The API a CLI run reports to (see `api_url_for_cli`); against a server no heartbeat is needed (the run
    reports its own end): about 0.9 s less at exit.

    Not with the temporary server Prefect starts when there is none: its event worker then
    stops before the run's last events are sent.
    """
    from contextlib import nullcontext

    from lifeline.flows.cli.control_plane import api_url_for_cli
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    url = api_url_for_cli()
    if url is None:
        return nullcontext()
    return temporary_settings({PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _mount_lab() -> None:
    try:
        from lifeline.infra.lab.cli import lab_app
    except ImportError:
        return
    app.add_typer(lab_app, name="lab", help="The two-site lab: a call centre on this machine.")


_mount_lab()
from lifeline.flows.cli import alerts, communications, control_plane, holds, pitr, telephony  # noqa: E402, F401 - intake, status-page, contacts, notify, ack, server, deploy, worker, hold, pitr, call


def main() -> None:
    from lifeline.tasks.adapters.commands import let_children_be_interrupted

    let_children_be_interrupted()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Without a server, Prefect starts a temporary one and gives it 20 s; a busy 2-core machine has needed 60.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as error:  # bad usage: one line naming the option, not a usage box
        message = (error.format_message() if hasattr(error, "format_message") else str(error)).replace("Value error, ", "")
        no_command = type(error).__name__ == "NoArgsIsHelpError"  # its message is the help
        typer.echo(message if no_command else f"lifeline: {message}", err=True)
        sys.exit(getattr(error, "exit_code", EXIT_BAD_INPUT))
    except typer.Abort:
        typer.echo("lifeline: aborted", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
