"""`lifeline hold`: holds on repositories. Nothing is forgotten or pruned in a held repository; a data-leak
recovery holds the compromised host's repository, and the operator releases it once the evidence is kept."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from lifeline.configs.settings import load_settings
from lifeline.flows.cli.common import JsonOption, PlanOption, app, fail, loaded_plan

hold_app = typer.Typer(no_args_is_help=True, help="Holds on repositories: nothing is forgotten or pruned in one held.")
app.add_typer(hold_app, name="hold")

RepositoryArgument = Annotated[str, typer.Argument(help="The repository's name in the plan.")]


def _repository_key(plan: PlanOption, name: str) -> tuple[str, str]:
    from lifeline.tasks.steps.repositories import open_repository
    from lifeline.tasks.steps.repository_slots import repository_key

    loaded = loaded_plan(plan)
    if name not in loaded.plan.repositories:
        fail(f"repository: no repository named {name!r} in the plan (known: {', '.join(loaded.plan.repositories)})")
    repository = open_repository(loaded.plan, name, load_settings())
    return repository_key(repository), repository.display_url


def _holds():
    from lifeline.tasks.run.holds import Holds
    from lifeline.tasks.run.ledger import Ledger

    return Holds(Ledger(load_settings().ledger))


@hold_app.command(name="list")
def list_holds(as_json: JsonOption = False) -> None:
    """Every held repository: who holds it, since when, why."""
    holds = _holds().all()
    if as_json:
        typer.echo(json.dumps([hold.model_dump(mode="json") for hold in holds], indent=2))
        return
    from lifeline.flows.cli.display import print_rows

    print_rows([{"repository": hold.name, "url": hold.url, "held by": hold.placed_by,
                 "since": hold.since.isoformat(timespec="seconds"), "reason": hold.reason} for hold in holds],
               ["repository", "url", "held by", "since", "reason"], title="Held repositories")


@hold_app.command()
def place(
    repository: RepositoryArgument,
    reason: Annotated[str, typer.Option(help="Why (kept with the hold).")],
    operator: Annotated[str, typer.Option(help="Who holds it.")],
    plan: PlanOption = None,
) -> None:
    """Hold a repository by hand (a suspected compromise): retention and prune leave it alone until released."""
    from lifeline.tasks.run.holds import RepositoryHold

    if not reason.strip() or not operator.strip():
        fail("--reason and --operator: give a name and a reason")
    key, url = _repository_key(plan, repository)
    hold = _holds().place(RepositoryHold(repository=key, name=repository, url=url, reason=reason, operator=operator))
    typer.echo(f"{repository}: {hold.describe()}", err=True)


@hold_app.command()
def release(repository: RepositoryArgument, plan: PlanOption = None) -> None:
    """Release a repository's hold: the next nightly backup's retention and prune apply to it again."""
    key, _ = _repository_key(plan, repository)
    released = _holds().release(key)
    if released is None:
        typer.echo(f"{repository}: was not held", err=True)
        return
    typer.echo(f"{repository}: released (it was {released.describe()})", err=True)
