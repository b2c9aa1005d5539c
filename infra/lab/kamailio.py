"""`kamailio`: the carrier's SBC, Debian's Kamailio 5.6 with a config the lab writes, run as the lab user on ops.

Its folder ``ops/kamailio/`` holds ``kamailio.cfg``, ``dispatcher.list`` (both written at each start),
``save-routing.sh``, ``routing.json`` and the control socket ``kamailio_ctl``
(``kamcmd -s unix:<lab>/ops/kamailio/kamailio_ctl dispatcher.list`` for debugging). Kamailio runs in the foreground
(``kamailio -DD -E -f ... -Y <folder> -w <folder>``), in the ops namespace with --netns; its log is
``logs/kamailio.log``.

SIP over UDP on ``<ops>:<ports.sip>`` (with --netns also on ops's ends of the carrier's trunks, ``mhomed``: what
goes to a site's PBX leaves on that site's trunk). JSON-RPC (``jsonrpcs`` over ``xhttp``) at
``POST http://<ops>:<ports.sip_rpc>/RPC`` (a TCP port that would take SIP over TCP too). An error is HTTP 500 with
``{"jsonrpc": "2.0", "error": {"code": 500, "message": "Unknown State Value"}, "id": 1}``.

Routing: dispatcher group 1 holds the sites' PBXs, ``sip:<pbx address>:<ports.pbx_SITE>`` with attributes
``site=SITE`` (the address is :func:`lifeline.infra.lab.pbx.listen_address`, as in the plan's
``telephony.sites.SITE.destination``: in a --netns lab the site's end of its trunk). ``dispatcher.list``::

    {"jsonrpc": "2.0", "id": 1, "result": {"NRSETS": 1, "RECORDS": [{"SET": {"ID": 1, "TARGETS": [
        {"DEST": {"URI": "sip:127.0.0.1:5063", "FLAGS": "IX", "PRIORITY": 0,
                  "ATTRS": {"BODY": "site=dr", "DUID": null, "MAXLOAD": 0, "WEIGHT": 0, "RWEIGHT": 0,
                            "SOCKET": null, "SOCKNAME": null, "OBPROXY": null}}},
        {"DEST": {"URI": "sip:127.0.0.1:5062", "FLAGS": "AX", "PRIORITY": 0, "ATTRS": {"BODY": "site=main", ...}}}
    ]}}]}}

(targets in no particular order). ``FLAGS``' first letter is the state: ``A`` active, ``I`` inactive, ``D``
disabled, ``T`` trying; the second is ``X`` (not probing): the lab never pings (``ds_ping_interval`` 0), so only
``dispatcher.set_state`` changes a state, the operator's cut-over. ``{"jsonrpc": "2.0", "method":
"dispatcher.set_state", "params": ["a", 1, "sip:127.0.0.1:5063"], "id": 1}`` (``a``, ``i``, ``d``, ``t``) answers
``"result": "Ok. Dispatcher state updated."``. At the first start main is active and dr inactive.

An INVITE for the service number (any Request-URI that is no registered address of record) goes to an active
PBX (algorithm 4, round-robin over the active destinations: one site, or each in turn during a
make-before-break cut-over); with none active the caller gets ``503 No site routed``. No failover: the PBX's
answer is the caller's (``remap_503_500`` off, so a PBX's 503 keeps its ``X-Lifeline-Site``), and a PBX that
does not answer within ``fr_timer`` 2 s (or rings past ``fr_inv_timer`` 5 s) gives 408.

The routing survives restarts, crashes included: for an RPC that changes the dispatcher (``set_state``,
``set_duid_state``, ``add``, ``remove``, ``reload``) Kamailio, under a lock, executes it, reads its own
``dispatcher.list`` and runs ``save-routing.sh`` with that answer (base64), which writes it to ``routing.json``
(temporary file, ``mv``), and only then answers: once the caller has its answer, the state is on disk. Each start
renders ``dispatcher.list`` from ``routing.json`` (the state letter of each current PBX URI; a URI it does not
list gets its first-start state); ``lab down --purge`` forgets it. (``dispatcher.reload`` reloads the list as it
was rendered at the start: Kamailio's own meaning of reload.)

Registrar: any REGISTER is saved for any domain (``save("location", "0x04")``: one contact per address of record,
the newest), in memory only (``usrloc`` ``db_mode`` 0; at most 3600 s): agents register ``sip:agent-3@dr.lab``
(the domain names the site), the contacts' phones ``sip:<number>@phones.lab``. ``ul.dump``::

    {"jsonrpc": "2.0", "id": 1, "result": {"Domains": [{"Domain": {"Domain": "location", "Size": 1024, "AoRs": [
        {"Info": {"AoR": "agent-3@dr.lab", "HashID": 1358798368, "Contacts": [
            {"Contact": {"Address": "sip:agent-3@127.0.0.1:36798", "Expires": 3600, "Q": -1,
                         "Call-ID": "1-26507@127.0.0.1", "CSeq": 1, "User-Agent": "lifeline-lab-agent",
                         "Received": "[not set]", "Path": "[not set]", "State": "CS_NEW", "Flags": 0, "CFlags": 0,
                         "Socket": "udp:127.0.0.1:5060", "Methods": 4294967295, "Ruid": "uloc-...",
                         "Instance": "[not set]", "Reg-Id": 0, "Server-Id": 0, "Tcpconn-Id": -1, "Keepalive": 0,
                         "Last-Keepalive": 1796378266, "KA-Roundtrip": 0, "Last-Modified": 1796378266}}]}},
        ...], "Stats": {"Records": 4, "Max-Slots": 1}}}]}}

``Domains`` lists usrloc's *tables* (just ``location``), not SIP domains; with nobody registered ``AoRs`` is
``[]``. A site's agents: the ``AoRs`` whose ``Info.AoR`` ends in ``@<site>.lab`` with at least one entry in
``Contacts`` (:func:`lifeline.infra.lab.agents.registered`, like ``KamailioRpc.registered``).

A new INVITE whose Request-URI is a registered address of record is relayed to its contact, and may ring for up
to 120 s (a person's phone); a Request-URI at the SBC itself (``sip:+8613800000001@<ops>:<sip>``) is looked up
in each of the lab's registrar domains in turn (main.lab, dr.lab, phones.lab). In-dialog requests follow their
Route set (``loose_route``, record-routing); OPTIONS to the SBC itself: 200.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from lifeline.tasks.adapters.sip.sbc import KamailioRpc, SbcError, destinations_in

from .context import LabContext
from .kamailio_config import (
    CONFIG,
    DISPATCHER_GROUP,
    DISPATCHER_LIST,
    ROUTING,
    SAVE_SCRIPT,
    config_text,
    save_script_text,
)
from .pbx import listen_address
from .processes import LabError, processes_mentioning, start_daemon, stop_tree
from .state import SITES

KAMAILIO = "/usr/sbin/kamailio"
FIRST_ROUTING: dict[str, str] = {"main": "a", "dr": "i"}  # the carrier routes the numbers to main
STATE_FLAGS: dict[str, int] = {"a": 0, "i": 1, "t": 2, "d": 4}  # dispatcher.list's flags column
STATE_NAMES: dict[str, str] = {"a": "active", "i": "inactive", "t": "trying", "d": "disabled"}


def destination(context: LabContext, site: str) -> str:
    """The site's PBX as a dispatcher destination (the plan's ``telephony.sites.SITE.destination``)."""
    return f"sip:{listen_address(context.state, site)}:{context.state.ports.for_component(f'pbx-{site}')}"


def rpc_url(context: LabContext) -> str:
    """Where Kamailio takes JSON-RPC (the plan's ``telephony.sbc.rpc_url``)."""
    return f"http://{context.address('ops')}:{context.state.ports.sip_rpc}/RPC"


# --- routing: what survives a restart ----------------------------------------------------------------------------

def saved_routing(context: LabContext) -> dict[str, str]:
    """Site -> state letter (``a``, ``i``, ``d``, ``t``) as Kamailio last reported it in ``routing.json``; the
    first-start routing for a site it does not name."""
    routing = dict(FIRST_ROUTING)
    try:
        answer = json.loads((context.paths.kamailio_dir / ROUTING).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return routing
    result = answer.get("result", answer) if isinstance(answer, dict) else None
    letters = {uri: flags[:1].lower() for uri, flags in _flags_by_uri(result).items()}
    for site in SITES:
        letter = letters.get(destination(context, site))
        if letter in STATE_FLAGS:
            routing[site] = letter
    return routing


def _flags_by_uri(result: Any) -> dict[str, str]:
    """URI -> FLAGS of dispatcher group 1, from a ``dispatcher.list`` result."""
    return {destination.uri: destination.flags for destination in destinations_in(result, DISPATCHER_GROUP)}


def routing(context: LabContext) -> dict[str, str]:
    """Site -> ``active``/``inactive``/``disabled``/``trying`` as the running SBC holds it now (``unknown`` for a
    site whose destination it does not list). Raises LabError when the SBC does not answer."""
    flags = _flags_by_uri(rpc(context, "dispatcher.list"))
    return {site: STATE_NAMES.get(flags.get(destination(context, site), "")[:1].lower(), "unknown")
            for site in SITES}


def set_routing(context: LabContext, site: str, state: str) -> None:
    """``dispatcher.set_state`` for one site's PBX (``state``: a, i, d). The lab never calls it on its own:
    routing is Lifeline's (the operator's) decision."""
    rpc(context, "dispatcher.set_state", state, DISPATCHER_GROUP, destination(context, site))


# --- JSON-RPC ----------------------------------------------------------------------------------------------------

def rpc(context: LabContext, method: str, *parameters: Any, timeout: float = 5.0) -> Any:
    """One JSON-RPC call to the SBC, from ops (where Lifeline runs); its ``result``. LabError if it fails."""
    try:
        return context.in_ops(lambda: KamailioRpc(rpc_url(context), timeout).call(method, *parameters))
    except SbcError as error:
        raise LabError(str(error)) from None


# --- SIP OPTIONS (is a SIP server up?) ----------------------------------------------------------------------------

def options_ok(host: str, port: int, timeout: float = 0.5, local: str | None = None) -> bool:
    """Does a SIP server answer OPTIONS on UDP ``host:port`` (any final answer, 200 expected)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.bind((local or host, 0))
            sock.connect((host, port))  # connected: a closed port's ICMP error ends the wait at once
            local_host, local_port = sock.getsockname()
            branch, tag, call_id = (secrets.token_hex(8) for _ in range(3))
            request = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP {local_host}:{local_port};branch=z9hG4bK{branch};rport\r\n"
                       "Max-Forwards: 70\r\n"
                       f"From: <sip:lab@{local_host}>;tag={tag}\r\n"
                       f"To: <sip:{host}:{port}>\r\n"
                       f"Call-ID: {call_id}@lab\r\n"
                       "CSeq: 1 OPTIONS\r\n"
                       "Content-Length: 0\r\n\r\n")
            sock.send(request.encode())
            while True:
                answer = sock.recv(65535)
                first = answer.split(b"\r\n", 1)[0].split()
                if len(first) >= 2 and first[0] == b"SIP/2.0" and first[1].isdigit() and int(first[1]) >= 200:
                    return True
        except OSError:  # timeout, refused (ICMP port unreachable), no route
            return False


# --- the files ---------------------------------------------------------------------------------------------------

def dispatcher_list_text(context: LabContext, routing_letters: dict[str, str]) -> str:
    lines = ["# written by the Lifeline lab at each start of Kamailio (from routing.json)",
             "# setid uri flags(0 active, 1 inactive, 2 trying, 4 disabled) priority attrs"]
    for site in SITES:
        flags = STATE_FLAGS.get(routing_letters.get(site, FIRST_ROUTING[site]), 1)
        lines.append(f"{DISPATCHER_GROUP} {destination(context, site)} {flags} 0 site={site}")
    return "\n".join(lines) + "\n"


def write_files(context: LabContext) -> Path:
    """The config, the dispatcher list (from the saved routing) and the save script; returns the config."""
    folder = context.paths.kamailio_dir
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / CONFIG
    config.write_text(config_text(context), encoding="utf-8")
    (folder / DISPATCHER_LIST).write_text(dispatcher_list_text(context, saved_routing(context)), encoding="utf-8")
    (folder / SAVE_SCRIPT).write_text(save_script_text(), encoding="utf-8")
    if not context.user.is_current:  # Kamailio (the lab user) writes routing.json and its control socket here
        for owned in (folder, *folder.iterdir()):
            os.chown(owned, context.user.uid, context.user.gid)
    return config


def command(context: LabContext, config: Path) -> list[str]:
    folder = context.paths.kamailio_dir
    return [KAMAILIO, "-DD", "-E", "-f", str(config), "-Y", str(folder), "-w", str(folder)]


def start(context: LabContext) -> int:
    """Write the files and start Kamailio (not waiting: components.start waits until its RPC port answers).
    Workers a killed Kamailio left behind (they outlive their main process and keep its ports) go first."""
    config = write_files(context)
    for orphan in processes_mentioning(str(config)):
        stop_tree(orphan, timeout=2.0)
    return start_daemon(command(context, config), pid_file=context.paths.pid_file("kamailio"),
                        log_file=context.paths.log_file("kamailio"), user=context.user,
                        netns=context.namespace("ops"))

