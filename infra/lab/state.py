"""Where the lab keeps its state: one directory, its paths, ports, and JSON state files.

Everything the lab creates lives under ``$LIFELINE_HOME/lab`` (``~/.lifeline/lab`` by default).
``state.json`` remembers the ports, the mode and the addresses chosen by the first ``up`` so that
later commands (status, fault, down) find the same lab; ``faults.json`` records active faults
(name -> ISO time), which later flows read as the incident time. Faults of the emergency
communication channels (sms, email, chat) are no incident of the call centre: they are kept apart
in ``channel-faults.json`` so they never become an incident time.
"""

from __future__ import annotations

import json
import os
import random
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

SITES: tuple[str, str] = ("main", "dr")
SIDES: tuple[str, str, str] = ("main", "dr", "ops")

STATE_VERSION = 1

# Component name -> the side (namespace) it lives on.
COMPONENT_SIDES: dict[str, str] = {
    "moto": "ops",
    "s3-tls": "ops",
    "smtp": "ops",
    "chat": "ops",
    "sshd-main": "main",
    "sshd-dr": "dr",
    "postgres-main": "main",
    "postgres-calllog": "ops",
    "postgres-dr": "dr",
    "service-main": "main",
    "service-dr": "dr",
    "callgen": "ops",
    "kamailio": "ops",
    "pbx-main": "main",
    "pbx-dr": "dr",
    "phones": "ops",
}


def site_components(site: str) -> list[str]:
    """The components that make up one site (what ``power SITE off`` stops)."""
    return [f"sshd-{site}", f"postgres-{site}", f"service-{site}", f"pbx-{site}"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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


class Addresses(BaseModel):
    """Where each side listens (bind address) and how the others reach it."""

    main: str = "127.0.0.1"
    dr: str = "127.0.0.1"
    ops: str = "127.0.0.1"

    def of(self, side: str) -> str:
        return str(getattr(self, side))


class LabState(BaseModel):
    """The persisted facts of one lab (``state.json``)."""

    version: int = STATE_VERSION
    mode: Literal["loopback", "netns"] = "loopback"
    user: str
    ports: Ports = Field(default_factory=Ports)
    addresses: Addresses = Field(default_factory=Addresses)
    # The Route 53 record's value for each site (distinct even when both sites are on 127.0.0.1).
    dns_values: dict[str, str] = Field(default_factory=lambda: {"main": "127.0.0.1", "dr": "127.0.0.2"})
    call_rate: float = 10.0
    created_at: str = Field(default_factory=now_iso)
    powered_off: list[str] = Field(default_factory=list)
    recordings_seeded: bool = False
    crm_seeded: bool = False
    control_plane: bool = False  # `lab up --control-plane`: a Prefect server on ops and a worker per site


def lifeline_home() -> Path:
    """``$LIFELINE_HOME`` or ``~/.lifeline`` (made absolute)."""
    value = os.environ.get("LIFELINE_HOME")
    return Path(value).expanduser().absolute() if value else Path.home() / ".lifeline"


class LabPaths:
    """Every path the lab uses, derived from the lab directory."""

    def __init__(self, lab_dir: Path) -> None:
        self.root = lab_dir.absolute()

    @classmethod
    def from_home(cls, home: Path | None = None) -> LabPaths:
        return cls((home.expanduser().absolute() if home else lifeline_home()) / "lab")

    # top level
    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def faults_file(self) -> Path:
        return self.root / "faults.json"

    @property
    def channel_faults_file(self) -> Path:
        """Active faults of the communication channels (name -> ISO time): not incidents."""
        return self.root / "channel-faults.json"

    @property
    def plan_file(self) -> Path:
        return self.root / "plan.yaml"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def drills_dir(self) -> Path:
        """Drills leave markers here while they run; any file here is a 'drill leftover'. Lifeline
        writes them under its LIFELINE_HOME (``Settings.drills_dir``), which is the lab's home."""
        return self.root.parent / "drills"

    @property
    def repository_dir(self) -> Path:
        return self.root / "repo"

    # secrets
    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def restic_password_file(self) -> Path:
        return self.secrets_dir / "restic.pw"

    @property
    def postgres_passfile(self) -> Path:
        return self.secrets_dir / "pgpass"

    @property
    def aws_environment_file(self) -> Path:
        return self.secrets_dir / "aws.env"

    @property
    def aws_credentials_file(self) -> Path:
        return self.secrets_dir / "aws-credentials"

    @property
    def intake_token_file(self) -> Path:
        return self.secrets_dir / "intake.token"

    # ssh (Lifeline's side)
    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def client_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    def authorized_keys(self, site: str) -> Path:
        return self.side_dir(site) / "authorized_keys"

    # per side
    def side_dir(self, side: str) -> Path:
        return self.root / side

    def host_key(self, site: str) -> Path:
        return self.side_dir(site) / "ssh_host_ed25519_key"

    def sshd_config(self, site: str) -> Path:
        return self.side_dir(site) / "sshd_config"

    def data_dir(self, cluster: str) -> Path:
        """PostgreSQL data directory of ``main``, ``dr`` or ``calllog``.

        Inside a folder the lab user owns, as real installations are laid out: a failback moves
        the old data directory aside (over SSH, as that user) instead of deleting it.
        """
        side = "ops" if cluster == "calllog" else cluster
        name = "calllog-pgdata" if cluster == "calllog" else "pgdata"
        return self.side_dir(side) / "postgres" / name

    def recordings_dir(self, site: str) -> Path:
        return self.side_dir(site) / "recordings"

    def ivr_dir(self, site: str) -> Path:
        return self.side_dir(site) / "ivr"

    @property
    def maildir(self) -> Path:
        return self.side_dir("ops") / "mail"

    @property
    def sms_file(self) -> Path:
        """One JSON line per SMS moto's SNS 'sent'."""
        return self.side_dir("ops") / "sms.jsonl"

    @property
    def chat_file(self) -> Path:
        """One JSON line per message the chat webhook receiver got."""
        return self.side_dir("ops") / "chat.jsonl"

    def socket_dir(self, cluster: str) -> Path:
        """The cluster's Unix socket folder (pgBackRest connects through it; libpq clients use TCP)."""
        side = "ops" if cluster == "calllog" else cluster
        return self.side_dir(side) / "postgres" / f"socket-{cluster}"

    @property
    def tls_dir(self) -> Path:
        """The lab's CA and the S3 endpoint's certificate."""
        return self.root / "tls"

    @property
    def tls_ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def pgbackrest_dir(self) -> Path:
        """pgBackRest's work folder on the database hosts (configs, logs, staging clusters), owned by the lab user."""
        return self.root / "pgbackrest"

    @property
    def pgbackrest_repository_dir(self) -> Path:
        """pgBackRest's local repository (the S3 one is the bucket cc-pitr)."""
        return self.root / "pgbackrest-repo"

    @property
    def kamailio_dir(self) -> Path:
        """Kamailio's (the SBC's) generated config, dispatcher list, routing record and control socket."""
        return self.side_dir("ops") / "kamailio"

    @property
    def sipp_dir(self) -> Path:
        """SIPp's scenarios and injection files for the agents' registrations."""
        return self.run_dir / "sipp"

    def pid_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"


def write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_state(paths: LabPaths) -> LabState | None:
    if not paths.state_file.exists():
        return None
    return LabState.model_validate_json(paths.state_file.read_text(encoding="utf-8"))


def save_state(paths: LabPaths, state: LabState) -> None:
    write_json_atomic(paths.state_file, state.model_dump(mode="json"))


def _load_fault_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8") or "{}")
    return {str(key): str(value) for key, value in data.items()}


def load_faults(paths: LabPaths) -> dict[str, str]:
    """Active faults of the call centre (the incident record): name -> ISO time it was injected."""
    return _load_fault_file(paths.faults_file)


def save_faults(paths: LabPaths, faults: dict[str, str]) -> None:
    write_json_atomic(paths.faults_file, faults)


def load_channel_faults(paths: LabPaths) -> dict[str, str]:
    """Active faults of the communication channels: name -> ISO time it was injected."""
    return _load_fault_file(paths.channel_faults_file)


def save_channel_faults(paths: LabPaths, faults: dict[str, str]) -> None:
    write_json_atomic(paths.channel_faults_file, faults)


def load_all_faults(paths: LabPaths) -> dict[str, str]:
    """Every active fault, the call centre's and the channels'."""
    return {**load_faults(paths), **load_channel_faults(paths)}


def write_secret(path: Path, content: str, owner: tuple[int, int] | None = None) -> None:
    """Write a file readable only by its owner (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(temporary, 0o600)
        if owner is not None:
            os.chown(temporary, owner[0], owner[1])
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

