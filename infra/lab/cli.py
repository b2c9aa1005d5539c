"""``lifeline lab ...``: a typer sub-app the main CLI mounts (``app.add_typer(lab_app, name="lab")``).

stdout carries results only (``up``: the plan's absolute path; ``status --json``: one JSON
object); progress goes to stderr. Exit codes: 0 done, 1 the lab failed, 2 bad request.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .processes import LabError, LabUsageError

lab_app = typer.Typer(help="The two-site call-centre lab.", no_args_is_help=True,
                      add_completion=False)
Result = TypeVar("Result")
HOME_KEY = "lifeline.infra.lab.home"
FAULT_NAMES = ("main-db-down | main-service-down | main-ssh-down | main-pbx-down | main-unreachable | recordings-lost | "
               "main-compromised | site-link-cut | replication-cut | trunk-cut | sms-down | email-down | chat-down")


def _home(context: typer.Context) -> Path | None:
    home = context.meta.get(HOME_KEY)
    return Path(home) if home else None


def _guard(action: Callable[[], Result]) -> Result:
    """One line on stderr and the right exit code instead of a traceback."""
    try:
        return action()
    except LabUsageError as error:
        print(f"lab: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        raise typer.Exit(1) from None
    except Exception as error:  # noqa: BLE001 - anything else is a failure, said in one line
        print(f"lab: {type(error).__name__}: {error}", file=sys.stderr)
        raise typer.Exit(1) from None


@lab_app.callback()
def lab_options(
    context: typer.Context,
    home: Annotated[Path | None, typer.Option(
        "--home", envvar="LIFELINE_HOME", help="Lifeline's state directory; the lab lives in HOME/lab.")] = None,
) -> None:
    context.meta[HOME_KEY] = home  # meta is shared by the whole command chain; obj may be the parent app's


@lab_app.command("up")
def up_command(
    context: typer.Context,
    netns: Annotated[bool, typer.Option("--netns", help="Three network namespaces main/dr/ops (root).")] = False,
    port_base: Annotated[int | None, typer.Option(
        "--port-base", min=1024, max=65000,
        help="Use a block of ports from BASE, in the order of the lab's Ports (first up only).")] = None,
    free_ports: Annotated[bool, typer.Option(
        "--free-ports", help="Pick free ports (first up only; not with --netns).")] = False,
    call_rate: Annotated[float | None, typer.Option("--call-rate", min=0, help="Calls per second.")] = None,
    control_plane: Annotated[bool, typer.Option(
        "--control-plane", help="Also a Prefect server on ops (on PostgreSQL), the plan deployed to a work pool "
        "per site, and a worker per site; kept by later `up`s.")] = False,
) -> None:
    """Bring the lab up (or repair it); print the lab plan's absolute path."""
    from .lab import up

    plan_path = _guard(lambda: up(_home(context), netns=netns, port_base=port_base, free_ports=free_ports,
                                  call_rate=call_rate, control_plane=control_plane))
    print(plan_path)


@lab_app.command("down")
def down_command(
    context: typer.Context,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the lab directory (all its data).")] = False,
) -> None:
    """Stop every lab process and remove the namespaces."""
    from .lab import down

    _guard(lambda: down(_home(context), purge=purge))


@lab_app.command("status")
def status_command(
    context: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Each component, replication, DNS, and whether the lab is in its normal state."""
    from .lab import open_lab
    from .status import status_dict

    report: dict[str, Any] = _guard(lambda: status_dict(open_lab(_home(context))))
    if as_json:
        print(json.dumps(report))
        return
    print(f"lab {report['lab_dir']} ({report['mode']}): {'normal' if report['normal'] else 'NOT normal'}")
    for name, component in report["components"].items():
        print(f"  {name:17} {'up  ' if component['up'] else 'DOWN'} {component['address'] or ''}")
    print(f"  databases: {report['databases']}; dns {report['dns']['record']} -> {report['dns']['points_at']}")
    if plane := report["control_plane"]:
        workers = ", ".join(f"{site} {'up' if pid else 'DOWN'}" for site, pid in plane["workers"].items())
        print(f"  control plane: server {'up' if plane['server_pid'] else 'DOWN'} at {plane['api_url']} "
              f"({plane['database']}); workers: {workers}; intake {'up' if plane.get('intake_pid') else 'DOWN'}")
    if telephony := report.get("telephony"):
        routing = ", ".join(f"{site} {state}" for site, state in telephony["routing"].items()) or "unknown"
        agents = "; ".join(f"{site}: {', '.join(names) or 'none'}" for site, names in telephony["agents"].items())
        print(f"  sbc routing: {routing}; agents {agents or 'unknown'}"
              + (f" ({telephony['detail']})" if telephony.get("detail") else ""))
    for reason in report["not_normal_because"]:
        print(f"  - {reason}")


@lab_app.command("fault")
def fault_command(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help=FAULT_NAMES)],
) -> None:
    """Inject a fault and record its time (the incident time later flows read; a channel fault's
    time goes to channel-faults.json instead)."""
    from .lab import fault

    at, done = _guard(lambda: fault(name, _home(context)))
    print(f"{name} at {at}: {done}")


@lab_app.command("heal")
def heal_command(context: typer.Context) -> None:
    """Undo infrastructure and channel faults (never restarts a replaced primary, never restores data)."""
    from .lab import heal

    for note in _guard(lambda: heal(_home(context), log=lambda message: None)):
        print(note)


@lab_app.command("power")
def power_command(
    context: typer.Context,
    site: Annotated[str, typer.Argument(help="main or dr")],
    state: Annotated[str, typer.Argument(help="off or on")],
) -> None:
    """Switch a site off (everything stops at once, out of band) or on again."""
    from .lab import power

    if state not in ("on", "off"):
        print(f"lab: power state must be on or off, not {state!r}", file=sys.stderr)
        raise typer.Exit(2)
    for line in _guard(lambda: power(site, "on" if state == "on" else "off", _home(context))):
        print(line)


@lab_app.command("agents")
def agents_command(
    context: typer.Context,
    site: Annotated[str | None, typer.Argument(help="main or dr (none: list who is registered)")] = None,
    action: Annotated[str | None, typer.Argument(help="login or logout")] = None,
    names: Annotated[list[str] | None, typer.Argument(help="agents, e.g. agent-3 agent-4")] = None,
) -> None:
    """The agents registered at the SBC per site; `agents SITE login|logout NAME...` registers (SIPp, as
    sip:NAME@SITE.lab, from the site) or removes them."""
    from . import agents
    from .lab import open_lab

    if site is None:
        registered = _guard(lambda: agents.registered(open_lab(_home(context))))
        for registered_site, registered_names in registered.items():
            print(f"{registered_site}: {' '.join(registered_names) or '-'}")
        return
    if action not in ("login", "logout") or not names:
        print("lab: usage: lab agents [SITE login|logout NAME...]", file=sys.stderr)
        raise typer.Exit(2)
    change = agents.login if action == "login" else agents.logout
    _guard(lambda: change(open_lab(_home(context)), site, names))
    print(f"{action}: {' '.join(names)} at {site}")


def main() -> None:
    lab_app()


if __name__ == "__main__":
    main()
