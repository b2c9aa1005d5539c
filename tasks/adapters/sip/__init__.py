"""SIP: calls through the carrier's SBC (call.py), the SBC's routing and registrar (sbc.py), RTP audio (rtp.py)."""

from lifeline.tasks.adapters.sip.call import CallResult, SipEndpoint, place_call
from lifeline.tasks.adapters.sip.sbc import Destination, KamailioRpc, SbcError

__all__ = ["CallResult", "Destination", "KamailioRpc", "SbcError", "SipEndpoint", "place_call"]
