"""Kamailio's configuration as the lab writes it: the SBC's listeners, modules, routing logic and the script that
saves the dispatcher's routing (what it does and why: kamailio.py)."""

from __future__ import annotations

from .context import LabContext
from .processes import LabError
from .state import SITES

MODULES_DIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
DISPATCHER_GROUP = 1
ALGORITHM = 4  # round-robin over the active destinations
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


def _trunk_addresses(context: LabContext) -> list[str]:
    """In a --netns lab, ops's ends of the carrier's trunks to the sites' PBXs (Kamailio listens there too, so
    that what it sends a PBX leaves on that site's trunk: ``mhomed``)."""
    if not context.netns:
        return []
    from .netns import TRUNKS

    return [TRUNKS[f"{site}-trunk"][1][2] for site in SITES if f"{site}-trunk" in TRUNKS]


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
