"""The lab's TCP and UDP ports: which component listens where, and how free ones are picked.

``Ports`` is kept in ``state.json``; fields added after the first release come last, so that a block from
``--port-base`` keeps every older port where it was, and a state from before them gets them on load.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator

# Ports added with the carrier's SBC (Kamailio) and the sites' PBXs; states from before them get them on load.
SIP_PORT_NAMES: tuple[str, ...] = ("sip", "sip_rpc", "pbx_main", "pbx_dr", "phones")


class Ports(BaseModel):
    """Every port the lab listens on (TCP, but SIP's are UDP: ``sip``, ``pbx_main``, ``pbx_dr``, ``phones``)."""

    ssh_main: int = 2221
    ssh_dr: int = 2222
    postgres_main: int = 5433
    postgres_dr: int = 5434
    postgres_calllog: int = 5435
    moto: int = 9000
    smtp: int = 1025
    service_main: int = 8081
    service_dr: int = 8082
    # Added after the first release: last, so that from_base keeps every older port where it was.
    chat: int = 8025
    prefect: int = 4220  # the control plane's Prefect server (`lab up --control-plane`)
    intake: int = 4221  # `lifeline intake` (warnings), when the lab's plan is served with it
    s3_tls: int = 9443  # nginx: TLS (a certificate for "localhost" from the lab's CA) in front of moto, for pgBackRest
    postgres_staging: int = 5436  # the staging cluster a point-in-time restore starts (at main's host)
    sip: int = 5060  # Kamailio, the carrier's SBC: SIP over UDP (ops)
    sip_rpc: int = 5061  # Kamailio's JSON-RPC over HTTP: POST http://ops:PORT/RPC (TCP, ops)
    pbx_main: int = 5062  # main's PBX: SIP over UDP
    pbx_dr: int = 5063  # dr's PBX: SIP over UDP
    phones: int = 5064  # the emergency contacts' phones (ops): SIP over UDP, registered at the SBC

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """A contiguous block from base, one port per field, in field order."""
        names = list(cls.model_fields)
        return cls(**{name: base + offset for offset, name in enumerate(names)})

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> Ports:
        """Ports the kernel says are free right now (picked once, then persisted)."""
        return cls(**free_ports(list(cls.model_fields), host))

    @model_validator(mode="before")
    @classmethod
    def add_missing_chat_port(cls, data: Any) -> Any:
        """A state.json from before the chat receiver: the base's next port when the old ports
        were a block, else the default, else (taken) one the kernel says is free."""
        if not isinstance(data, dict) or "chat" in data or "service_dr" not in data:
            return data
        older = [name for name in cls.model_fields
                 if name not in ("chat", "prefect", "intake", "s3_tls", "postgres_staging", *SIP_PORT_NAMES)]
        if all(isinstance(data.get(name), int) for name in older) and \
                [data[name] for name in older] == list(range(data[older[0]], data[older[0]] + len(older))):
            return {**data, "chat": data[older[0]] + len(older)}
        default = int(cls.model_fields["chat"].default)
        taken = {data.get(name) for name in older}
        return {**data, "chat": default if default not in taken and port_free(default) else free_ports(["chat"])["chat"]}

    @model_validator(mode="before")
    @classmethod
    def add_missing_sip_ports(cls, data: Any) -> Any:
        """A state.json from before the SBC and the PBXs: the block's next ports when the other ports are one
        block (as ``from_base`` makes them), the defaults when they are the defaults, else (``--free-ports``)
        ports the kernel says are free, so that none collides with a port the lab already uses."""
        if not isinstance(data, dict) or "service_dr" not in data:
            return data
        missing = [name for name in SIP_PORT_NAMES if name not in data]
        if not missing:
            return data
        names = list(cls.model_fields)
        present = {name: data[name] for name in names if name in data and name not in SIP_PORT_NAMES}
        if not all(isinstance(value, int) for value in present.values()):
            return data  # let validation say what is wrong
        base = present.get(names[0])
        if base is not None and all(value == base + names.index(name) for name, value in present.items()):
            return {**data, **{name: base + names.index(name) for name in missing}}
        if all(value == cls.model_fields[name].default for name, value in present.items()):
            return {**data, **{name: int(cls.model_fields[name].default) for name in missing}}
        taken = set(present.values())
        chosen = free_ports(missing)
        while taken & set(chosen.values()):  # free now, but one of this lab's stopped components' ports
            chosen = free_ports(missing)
        return {**data, **chosen}

    def for_component(self, component: str) -> int:
        return int(getattr(self, component.replace("-", "_").replace("sshd_", "ssh_")))


LISTEN_PORTS = range(20000, 32000)
"""Where the lab picks free ports: below Linux's ephemeral range (32768-60999 by default). A port from that
range is handed to any outgoing connection on the machine while its server is stopped (a fault, a drill, a
rebuilt cluster), and the server then cannot listen again."""


def ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(low, high + 1)


def free_ports(names: list[str], host: str = "127.0.0.1") -> dict[str, int]:
    """One port per name, free right now and outside the ephemeral range, chosen at random."""
    ephemeral = ephemeral_ports()
    candidates = [port for port in LISTEN_PORTS if port not in ephemeral]
    random.shuffle(candidates)
    chosen: dict[str, int] = {}
    for port in candidates:
        if len(chosen) == len(names):
            break
        if port_free(port, host):
            chosen[names[len(chosen)]] = port
    if len(chosen) < len(names):
        raise RuntimeError(f"no {len(names)} free ports in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1} outside the "
                           f"ephemeral range {ephemeral.start}-{ephemeral.stop - 1}")
    return chosen


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Free for TCP and for UDP (SIP's ports are UDP)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True
