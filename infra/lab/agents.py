"""The call-centre agents: logged in (registered) at the carrier's SBC with SIPp, one address of record each.

An agent of a site registers ``sip:<agent>@<site>.lab`` (the domain names the site) at Kamailio from the
site's address (inside the site's namespace with --netns): SIPp runs a REGISTER scenario (``run/sipp/``) once per
agent, names from an injection file, and must get 200 for each. ``logout`` sends ``Contact: *`` with
``Expires: 0`` (every binding of the address of record goes). The agents' SIP phones are not simulated beyond
the registration: their contact (SIPp's port) does not answer calls. Who is registered is read from Kamailio's
``ul.dump`` (see kamailio.py for its shape).

The lab logs in ``agent-1``, ``agent-2`` at main and ``agent-3``, ``agent-4`` at dr (:data:`LAB_AGENTS`) at each
``up`` and ``heal`` where they are not registered (Kamailio keeps registrations in memory only). A registration
lasts an hour; each site's softphones (softphones.py) register again, as a softphone does, every agent of the site
who is still registered once less than half of that is left (:func:`refresh`). An agent logged out stays out.
"""

from __future__ import annotations

import re
import socket
import tempfile
from pathlib import Path

from lifeline.tasks.adapters.sip.sbc import registered_in, seconds_left_in

from . import kamailio, kamailio_config
from .context import LabContext
from .processes import LabError, LabUsageError, run
from .state import SITES

SIPP = "/usr/bin/sipp"
LAB_AGENTS: dict[str, list[str]] = {"main": ["agent-1", "agent-2"], "dr": ["agent-3", "agent-4"]}
EXPIRES_SECONDS = 3600
SIPP_TIMEOUT_SECONDS = 10
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
SIPP_TIME = re.compile(r"^\S+\t\S+\t\S+: ")  # SIPp's "date<TAB>time<TAB>epoch: " before a message

REGISTER_SCENARIO = """<?xml version="1.0" encoding="UTF-8" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- Written by the Lifeline lab (agents.py): one REGISTER per call; [field0] agent, [field1] domain,
     [field2] expires. -->
<scenario name="lab agent {action}">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[field1] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[field0]@[field1]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: {contact}
      Expires: [field2]
      User-Agent: lifeline-lab-agent
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true">
  </recv>
  <recv response="200">
  </recv>
</scenario>
"""


def domain(site: str) -> str:
    return kamailio_config.agents_domain(site)


def _check(site: str, agents: list[str]) -> None:
    if site not in SITES:
        raise LabUsageError(f"unknown site {site!r}; sites: {', '.join(SITES)}")
    bad = [agent for agent in agents if not AGENT_NAME.match(agent)]
    if bad:
        raise LabUsageError(f"not an agent name: {', '.join(map(repr, bad))} (letters, digits, . _ + -)")


def _scenario(context: LabContext, action: str) -> Path:
    contact = "<sip:[field0]@[local_ip]:[local_port]>" if action == "login" else "*"
    path = context.paths.sipp_dir / f"{action}.xml"
    text = REGISTER_SCENARIO.format(action=action, contact=contact)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _free_udp_port(context: LabContext, site: str) -> int:
    """A port the kernel gives for UDP at the site's address right now (SIPp's own choice would be 5060)."""
    address = context.address(site)

    def pick() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
            return int(sock.getsockname()[1])

    return context.in_side(site, pick)


def _register(context: LabContext, site: str, agents: list[str], expires: int, action: str) -> None:
    _check(site, agents)
    if not agents:
        return
    folder = context.paths.sipp_dir
    folder.mkdir(parents=True, exist_ok=True)
    scenario = _scenario(context, action)
    rows = "".join(f"{agent};{domain(site)};{expires}\n" for agent in agents)
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f"{action}-{site}-", suffix=".csv",
                                     encoding="utf-8") as injection:
        injection.write("SEQUENTIAL\n" + rows)
        injection.flush()
        errors = Path(injection.name).with_suffix(".errors.log")
        argv = [SIPP, f"{context.address('ops')}:{context.state.ports.sip}", "-sf", str(scenario),
                "-inf", injection.name, "-m", str(len(agents)), "-r", "1000", "-l", str(len(agents)),
                "-i", context.address(site), "-p", str(_free_udp_port(context, site)),
                "-timeout", f"{SIPP_TIMEOUT_SECONDS}s", "-timeout_error", "-nostdin",
                "-trace_err", "-error_file", str(errors)]
        try:
            completed = run(argv, netns=context.namespace(site), timeout=SIPP_TIMEOUT_SECONDS + 10, check=False)
        finally:
            unexpected = errors.read_text(encoding="utf-8", errors="replace") if errors.exists() else ""
            errors.unlink(missing_ok=True)
    if completed.returncode != 0:
        detail = [SIPP_TIME.sub("", line).strip() for line in (completed.stderr or "").splitlines()
                  if line.strip() and not line.startswith("Resolving remote host")][-3:]
        answers = sorted(set(re.findall(r"^SIP/2\.0 \d{3}[^\r\n]*", unexpected, re.MULTILINE)))
        raise LabError(f"sipp {action} of {', '.join(agents)} at {site} failed (exit {completed.returncode})"
                       + (f": the SBC answered {'; '.join(answers)}" if answers else "")
                       + (f": {' | '.join(detail)}" if detail else "")
                       + ("" if answers or detail else ": no answer from the SBC "
                          f"{context.address('ops')}:{context.state.ports.sip}"))


def login(context: LabContext, site: str, agents: list[str], expires: int = EXPIRES_SECONDS) -> None:
    """Register each agent as ``sip:<agent>@<site>.lab`` (SIPp, from the site). LabError unless all got 200."""
    _register(context, site, list(agents), expires, "login")


def logout(context: LabContext, site: str, agents: list[str]) -> None:
    """Remove every registration of each agent (``Contact: *``, ``Expires: 0``)."""
    _register(context, site, list(agents), 0, "logout")


def registered(context: LabContext) -> dict[str, list[str]]:
    """Site -> the agents registered in its domain now (sorted), from Kamailio's ``ul.dump``. Raises LabError
    when the SBC does not answer."""
    by_domain = {domain(site): site for site in SITES}
    agents: dict[str, list[str]] = {site: [] for site in SITES}
    for record in registered_in(kamailio.rpc(context, "ul.dump")):
        name, _, record_domain = record.partition("@")
        if record_domain in by_domain:
            agents[by_domain[record_domain]].append(name)
    return {site: sorted(names) for site, names in agents.items()}


def ensure_logged_in(context: LabContext, sites: list[str] | None = None) -> list[str]:
    """Log in the lab's agents (:data:`LAB_AGENTS`) of ``sites`` who are not registered; what was done."""
    present = registered(context)
    done: list[str] = []
    for site in sites if sites is not None else list(SITES):
        missing = [agent for agent in LAB_AGENTS.get(site, []) if agent not in present.get(site, [])]
        if missing:
            login(context, site, missing)
            done.append(f"agents: logged in {', '.join(missing)} at {site}")
    return done


def refresh(context: LabContext, site: str, expires: int = EXPIRES_SECONDS) -> list[str]:
    """Register again each agent registered at ``site`` whose registration has less than half of ``expires``
    left (as a softphone does before its registration runs out); the agents registered again."""
    _check(site, [])
    left = seconds_left_in(kamailio.rpc(context, "ul.dump"))
    suffix = f"@{domain(site)}"
    due = sorted(record.removesuffix(suffix) for record, seconds in left.items()
                 if record.endswith(suffix) and seconds < expires / 2)
    login(context, site, due, expires)
    return due
