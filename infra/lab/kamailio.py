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
from .pbx import listen_address
from .processes import LabError, processes_mentioning, start_daemon, stop_tree
from .state import SITES

KAMAILIO = "/usr/sbin/kamailio"
MODULES_DIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
DISPATCHER_GROUP = 1
ALGORITHM = 4  # round-robin over the active destinations
FIRST_ROUTING: dict[str, str] = {"main": "a", "dr": "i"}  # the carrier routes the numbers to main
STATE_FLAGS: dict[str, int] = {"a": 0, "i": 1, "t": 2, "d": 4}  # dispatcher.list's flags column
STATE_NAMES: dict[str, str] = {"a": "active", "i": "inactive", "t": "trying", "d": "disabled"}
PHONES_DOMAIN = "phones.lab"  # where the contacts' phones register (phones.py)
REGISTRATION_MAX_SECONDS = 3600
CONFIG = "kamailio.cfg"
DISPATCHER_LIST = "dispatcher.list"
ROUTING = "routing.json"
SAVE_SCRIPT = "save-routing.sh"
CONTROL_SOCKET = "kamailio_ctl"


def agents_domain(site: str) -> str:
    """The registrar domain of a site's agents (``agent-3@dr.lab``)."""
    return f"{site}.lab"


def registrar_domains() -> list[str]:
    return [*(agents_domain(site) for site in SITES), PHONES_DOMAIN]


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


def udp_port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --- the files ---------------------------------------------------------------------------------------------------

def _trunk_addresses(context: LabContext) -> list[str]:
    """In a --netns lab, ops's ends of the carrier's trunks to the sites' PBXs (Kamailio listens there too, so
    that what it sends a PBX leaves on that site's trunk: ``mhomed``)."""
    if not context.netns:
        return []
    from .netns import TRUNKS

    return [TRUNKS[f"{site}-trunk"][1][2] for site in SITES if f"{site}-trunk" in TRUNKS]


def dispatcher_list_text(context: LabContext, routing_letters: dict[str, str]) -> str:
    lines = ["# written by the Lifeline lab at each start of Kamailio (from routing.json)",
             "# setid uri flags(0 active, 1 inactive, 2 trying, 4 disabled) priority attrs"]
    for site in SITES:
        flags = STATE_FLAGS.get(routing_letters.get(site, FIRST_ROUTING[site]), 1)
        lines.append(f"{DISPATCHER_GROUP} {destination(context, site)} {flags} 0 site={site}")
    return "\n".join(lines) + "\n"


def save_script_text() -> str:
    return f"""#!/bin/sh
# Written by the Lifeline lab. Kamailio runs it (exec_cmd, under a lock, in its working directory
# {CONFIG}'s folder) after each RPC that changes the dispatcher: $1 is its dispatcher.list answer, base64.
PATH=/usr/bin:/bin
printf '%s' "$1" | base64 -d > {ROUTING}.tmp && mv -f {ROUTING}.tmp {ROUTING}
"""


def _cfg_string(value: str) -> str:
    if any(character in value for character in '"\\$\n'):
        raise LabError(f"cannot put {value!r} into Kamailio's config")
    return f'"{value}"'


def config_text(context: LabContext) -> str:
    state = context.state
    ops = context.address("ops")
    listens = [f"listen=udp:{ops}:{state.ports.sip}",
               *(f"listen=udp:{address}:{state.ports.sip}" for address in _trunk_addresses(context)),
               f"listen=tcp:{ops}:{state.ports.sip_rpc}  # HTTP: JSON-RPC (jsonrpcs over xhttp)"]
    lookups = "\n".join(f'        if (lookup("location", "sip:$rU@{domain}")) {{ route(TO_CONTACT); }}'
                        for domain in registrar_domains())
    return f"""#!KAMAILIO
# Written by the Lifeline lab (infra/lab/kamailio.py) at each start: the carrier's SBC.
debug=2
log_stderror=yes
fork=yes
children=4
tcp_children=2
auto_aliases=no
mhomed={1 if context.netns else 0}
server_signature=no
sip_warning=0
user_agent_header="User-Agent: lifeline-lab-sbc"
server_header="Server: lifeline-lab-sbc"
tcp_accept_no_cl=yes
http_reply_parse=yes
{chr(10).join(listens)}

mpath={_cfg_string(MODULES_DIR)}
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "dispatcher.so"
loadmodule "xhttp.so"
loadmodule "jsonrpcs.so"
loadmodule "ctl.so"
loadmodule "cfgutils.so"
loadmodule "exec.so"

modparam("tm", "fr_timer", 2000)
modparam("tm", "fr_inv_timer", 5000)
modparam("tm", "remap_503_500", 0)  # a PBX's 503 reaches the caller as it is (its X-Lifeline-Site, its Warning)
modparam("rr", "enable_full_lr", 1)
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "use_domain", 1)
modparam("registrar", "max_expires", {REGISTRATION_MAX_SECONDS})
modparam("registrar", "default_expires", {REGISTRATION_MAX_SECONDS})
modparam("dispatcher", "list_file", {_cfg_string(str(context.paths.kamailio_dir / DISPATCHER_LIST))})
modparam("dispatcher", "ds_ping_interval", 0)
modparam("dispatcher", "flags", 0)
modparam("dispatcher", "reload_delta", 0)
modparam("jsonrpcs", "transport", 1)
modparam("xhttp", "url_match", "^/RPC")
modparam("ctl", "binrpc", "unix:{CONTROL_SOCKET}")
modparam("cfgutils", "lock_set_size", 2)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check()) {{
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{
            t_check_trans();
            exit;
        }}
        t_check_trans();
    }}
    route(WITHINDLG);

    remove_hf("Route");
    if (is_method("REGISTER")) {{
        if (!save("location", "0x04")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (is_method("OPTIONS") && uri==myself) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    if ($rU == $null) {{
        sl_send_reply("484", "Address Incomplete");
        exit;
    }}
    record_route();
    # a registered address of record (an agent, a contact's phone): its contact
    if (lookup("location")) {{
        route(TO_CONTACT);
    }}
    if (uri==myself) {{
{lookups}
    }}
    # the service number: the site the carrier routes it to
    if (!ds_select_dst("{DISPATCHER_GROUP}", "{ALGORITHM}")) {{
        xlog("L_NOTICE", "no site routed: $rm $ru from $fu ($ci)\\n");
        send_reply("503", "No site routed");
        exit;
    }}
    t_on_failure("SITE_FAILED");
    route(RELAY);
}}

route[TO_CONTACT] {{
    t_set_fr(120000, 2000);  # a person's phone rings until the caller gives up
    route(RELAY);
}}

route[RELAY] {{
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

route[WITHINDLG] {{
    if (!has_totag()) {{
        return;
    }}
    if (loose_route()) {{
        route(RELAY);
    }}
    if (is_method("ACK")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    sl_send_reply("404", "Not here");
    exit;
}}

failure_route[SITE_FAILED] {{
    # No failover to the other site: the routing is the operator's. The site's answer (or 408) goes back.
    if (t_is_canceled()) {{
        exit;
    }}
    xlog("L_NOTICE", "site $du failed: $T_reply_code $T_reply_reason for $rm $ru ($ci)\\n");
}}

event_route[xhttp:request] {{
    if ($hu =~ "^/RPC") {{
        if ($rb =~ "dispatcher[.](set_state|set_duid_state|add|remove|reload)") {{
            # a change of the routing: on disk before its answer, in the order the changes were made
            lock("routing");
            jsonrpc_exec("$rb");
            $var(code) = $jsonrpl(code);
            $var(text) = $jsonrpl(text);
            $var(body) = $jsonrpl(body);
            route(SAVE_ROUTING);
            unlock("routing");
            xhttp_reply("$var(code)", "$var(text)", "application/json", "$var(body)");
            exit;
        }}
        jsonrpc_dispatch();
        exit;
    }}
    xhttp_reply("404", "Not Found", "text/plain", "POST JSON-RPC to /RPC\\n");
}}

route[SAVE_ROUTING] {{
    jsonrpc_exec('{{"jsonrpc": "2.0", "method": "dispatcher.list", "id": 1}}');
    $var(answer) = $(jsonrpl(body){{s.encode.base64}});
    if (!exec_cmd("/bin/sh {SAVE_SCRIPT} $var(answer)")) {{
        xlog("L_ERR", "could not save the routing to {ROUTING}\\n");
    }}
}}
"""


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

