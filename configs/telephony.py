"""Telephony: the carrier's SBC that routes the service number to a site, each site's PBX, IVR and agents.

The SBC is Kamailio (its dispatcher holds the sites' PBXs, its registrar the agents); a carrier
that routes by HTTP API is driven by an `http` runbook step instead (README, "Telephony").
"""

from __future__ import annotations

from pathlib import PurePosixPath

from lifeline.configs.base import Name, PlanModel
from lifeline.configs.messages import Localized, Message
from pydantic import Field

ANNOUNCEMENT = Localized(
    zh=Message(body="因突发事件，我们正在备用中心为您服务，等待时间可能较长。紧急求助请拨打 {{ hotline }}。"),
    en=Message(body="Because of an emergency we are serving you from our backup centre; waiting times may be longer. "
                    "For urgent help, call {{ hotline }}."),
)
ANNOUNCEMENT_FIELDS = {"plan": "callcenter-east", "hotline": "+861012345678", "site": "dr"}


class Sbc(PlanModel):
    address: str = Field(description="Where the SBC takes SIP (UDP): test calls go through it like customers' calls.")
    port: int = Field(5060, ge=1, le=65535)
    rpc_url: str = Field(description="Kamailio's JSON-RPC over HTTP (jsonrpcs + xhttp), e.g. http://sbc:5061/RPC.")
    dispatcher_group: int = Field(1, ge=0, description="The dispatcher group holding the sites' PBXs.")


class TelephonySite(PlanModel):
    destination: str = Field(pattern=r"^sips?:", description="The site's PBX as the SBC's dispatcher lists it "
                             "(sip:host:port): the carrier's route to this site.")
    agents_domain: str | None = Field(None, description="The registrar domain this site's agents register in "
                                      "(sip:agent@DOMAIN).")
    agents_required: int = Field(0, ge=0, description="`agents_ready`: agents that must be registered here before "
                                 "the site counts as recovered.")
    ivr_host: Name | None = Field(None, description="The plan's SSH host of this site's IVR.")
    announcement_path: PurePosixPath | None = Field(None, description="Where the IVR plays its emergency "
                                                    "announcement from (raw 8 kHz G.711 µ-law).")


class Telephony(PlanModel):
    sbc: Sbc
    service_number: str = Field(description="The number customers dial; test calls dial it too.")
    test_caller_id: str = Field("lifeline-test", pattern=r"^[A-Za-z0-9+_.-]+$",
                                description="The caller id of Lifeline's test calls (kept apart in the call log).")
    answer_timeout_seconds: float = Field(5, gt=0)
    sites: dict[Name, TelephonySite]
    announcement: Localized = Field(ANNOUNCEMENT, description="The IVR's emergency announcement, spoken in Chinese "
                                    "then English; fields: plan, hotline, site.")

    def site_answering(self, answered_by: str | None) -> str | None:
        """The site whose destination is `answered_by` (host:port of the answering PBX; SIP's port 5060 when
        the destination names none)."""
        for name, site in self.sites.items():
            host_port = site.destination.split(":", 1)[1].split(";")[0].split("@")[-1]
            if answered_by and (host_port if ":" in host_port else f"{host_port}:5060") == answered_by:
                return name
        return None
