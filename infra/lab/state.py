"""Where the lab keeps its state: one directory, its paths, and JSON state files (its ports: ports.py).

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
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from .ports import Ports

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
    "softphones-main": "main",
    "softphones-dr": "dr",
    "phones": "ops",
}


def site_components(site: str) -> list[str]:
    """The components that make up one site (what ``power SITE off`` stops)."""
    return [f"sshd-{site}", f"postgres-{site}", f"service-{site}", f"pbx-{site}"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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

    @property
    def smtp_credentials_file(self) -> Path:
        """SMTP_USERNAME and SMTP_PASSWORD (KEY=VALUE): the sink refuses mail without this login."""
        return self.secrets_dir / "smtp.env"

    @property
    def client_key_passphrase_file(self) -> Path:
        return self.secrets_dir / "ssh-key.passphrase"

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

