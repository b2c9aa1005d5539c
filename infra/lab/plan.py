"""Render the lab's plan (``$LIFELINE_HOME/lab/plan.yaml``) from ``configs/callcenter.yaml``.

All key names the lab fills in are in :func:`lab_plan_values`, in one place, matching
``lifeline.configs.plan.Plan`` (which forbids unknown keys). The template supplies everything
the lab does not know (name, timezone, targets, impact, retention, checks...).
"""

from __future__ import annotations

import copy
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import aws, faults, postgres
from .callgen import SERVICE_NUMBER
from .context import LabContext
from .pbx import listen_address
from .roster import lab_communication_values
from .state import SITES

TEST_CALLER_ID = "lifeline-test"
AGENTS_REQUIRED = 2  # each site's agents_ready waits for two of its agents (the lab logs in agent-1..4)

FALLBACK_TEMPLATE: dict[str, Any] = {
    "name": "callcenter-east",
    "timezone": "Asia/Shanghai",
    "targets": {"rto_minutes": 15, "rpo_minutes": 5},
    "impact": {"customers_per_hour": 1200, "cost_per_minute": 85.0, "currency": "CNY"},
    "repositories": {},
    "datasets": {
        "recordings": {"repository": "local", "exclude": ["*.tmp"],
                       "retention": {"daily": 7, "weekly": 4, "monthly": 6}, "copy_to": ["offsite"],
                       "rpo_minutes": 1500},
        "crm-db": {"repository": "local"},
    },
}


def load_template(template: Path | None = None) -> dict[str, Any]:
    """The committed example plan (or a minimal built-in one if the package lacks it)."""
    if template is not None:
        text = template.read_text(encoding="utf-8")
    else:
        resource = resources.files("lifeline.configs").joinpath("callcenter.yaml")
        if not resource.is_file():
            return copy.deepcopy(FALLBACK_TEMPLATE)
        text = resource.read_text(encoding="utf-8")
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise ValueError("the plan template is not a mapping")
    return loaded


def lab_plan_values(context: LabContext) -> dict[str, Any]:
    """What the lab knows, as plan keys (merged over the template's)."""
    paths = context.paths
    state = context.state
    ops = context.address("ops")
    return {
        "repositories": {
            "local": {"url": str(paths.repository_dir), "password_file": str(paths.restic_password_file),
                      "init": True},
            "offsite": {"url": f"s3:http://{ops}:{state.ports.moto}/{aws.BUCKET}",
                        "password_file": str(paths.restic_password_file),
                        "environment_file": str(paths.aws_environment_file), "init": True},
        },
        "datasets": {
            "recordings": {"paths": [str(paths.recordings_dir("main"))]},
            "crm-db": {"postgres": {"dsn": postgres.dsn(context, "main", postgres.CRM_DATABASE),
                                    "passfile": str(paths.postgres_passfile)}},
            "ivr-config": {"command": ["tar", "-C", str(paths.ivr_dir("main")), "-cf", "-", "."]},
        },
        "aws": {"endpoint_url": aws.endpoint_url(state), "region": aws.REGION,
                "credentials_file": str(paths.aws_environment_file)},
        "dns": {"zone": aws.ZONE, "record": aws.RECORD, "ttl": aws.RECORD_TTL, "values": dict(state.dns_values)},
        "call_log": {"dsn": postgres.dsn(context, "calllog", postgres.CALL_LOG_DATABASE),
                     "passfile": str(paths.postgres_passfile)},
        "incident_record": str(paths.faults_file),
        **({"network_namespace": "ops"} if context.netns else {}),  # where Lifeline reaches the sites from
        "sites": {  # main in Shanghai's Pudong, dr in Hangzhou: a warning for one leaves the other be
            "main": {"description": "Primary site (lab)",
                     "area": {"location": [31.22, 121.54], "geocodes": ["ADCODE=310115"], "labels": {"site": "main"}}},
            "dr": {"description": "Disaster-recovery site (lab)",
                   "area": {"location": [30.27, 120.15], "geocodes": ["ADCODE=330100"], "labels": {"site": "dr"}},
                   "agents": ["agent-3", "agent-4"]},
        },
        "intake": {"token_file": str(paths.intake_token_file), "host": ops, "port": state.ports.intake},
        "status_page": {"bucket": aws.STATUS_BUCKET, "components": {
            "phone-service": {"name": {"zh": "电话客服", "en": "Phone service"},
                              "services": ["phone-main", "phone-dr", "crm-main", "crm-dr"]},
            "customer-records": {"name": {"zh": "客户资料查询", "en": "Customer records"},
                                 "services": ["crm-main", "crm-dr"]}}},
        "hosts": {
            site: {"site": site, "address": context.address(site),
                   "port": state.ports.for_component(f"sshd-{site}"), "user": context.user.name,
                   "key_file": str(paths.client_key), "known_hosts_file": str(paths.known_hosts),
                   **({"key_passphrase_file": str(paths.client_key_passphrase_file)}
                      if paths.client_key_passphrase_file.exists() else {})}  # a lab made before keys had one
            for site in SITES
        },
    }


def lab_recovery_values(context: LabContext) -> dict[str, Any]:
    """What the lab knows about recovery, in the shapes of ``lifeline.configs.recovery``:
    services with their health checks, the CRM database's two instances, and a fence command
    per site (``lab power SITE off``). Rendered only for the keys the plan schema has."""
    paths = context.paths
    state = context.state
    fence = [sys.executable, "-m", "lifeline.infra.lab", "--home", str(paths.root.parent), "power"]
    return {
        "services": {
            **{f"crm-{site}": {
                "site": site,
                "critical": True,
                "checks": [{"type": "http", "name": f"crm {site} health",
                            "url": f"http://{context.address(site)}:{state.ports.for_component(f'service-{site}')}/health"}],
            } for site in SITES},
            **{f"phone-{site}": {  # RTO runs to healthy rounds that include a test call answered at the site
                "site": site,
                "critical": True,
                "checks": [{"type": "sip", "name": f"test call answered at {site}", "address": context.address("ops"),
                            "port": state.ports.sip, "number": SERVICE_NUMBER, "caller_id": TEST_CALLER_ID,
                            "expect_answered_by": pbx_address(context, site)}],
            } for site in SITES},
        },
        "telephony": lab_telephony_values(context),
        "databases": {
            "crm": {
                "primary": "main",
                "instances": {
                    site: {"host": site, "dsn": postgres.dsn(context, site, postgres.CRM_DATABASE),
                           "passfile": str(paths.postgres_passfile), "data_dir": str(paths.data_dir(site)),
                           "bin_dir": str(postgres.binaries()), "socket_dir": str(paths.socket_dir(site))}
                    for site in SITES
                },
                "replication_slot": postgres.REPLICATION_SLOT,
                "replication_user": context.user.name,
                "pitr": lab_pitr_values(context),
            }
        },
        "fencing": {site: {"command": [*fence, site, "off"]} for site in SITES},
        "scenarios": lab_scenarios(context),
    }


def pbx_address(context: LabContext, site: str) -> str:
    return f"{listen_address(context.state, site)}:{context.state.ports.for_component(f'pbx-{site}')}"


def lab_telephony_values(context: LabContext) -> dict[str, Any]:
    """Kamailio is the carrier's SBC; each site's PBX is a dispatcher destination, its agents register in
    `<site>.lab`, its IVR plays from the site's ivr folder (reached over SSH as the lab user)."""
    ops, state = context.address("ops"), context.state
    return {
        "sbc": {"address": ops, "port": state.ports.sip, "rpc_url": f"http://{ops}:{state.ports.sip_rpc}/RPC",
                "dispatcher_group": 1},
        "service_number": SERVICE_NUMBER,
        "test_caller_id": TEST_CALLER_ID,
        # short, so that a test call hears all of it in seconds (the default names the hotline in both languages)
        "announcement": {"zh": {"body": "您好，{{ site }} 备用中心正在为您服务。"},
                         "en": {"body": "Hello, our {{ site }} backup centre is serving you."}},
        "sites": {site: {"destination": f"sip:{pbx_address(context, site)}", "agents_domain": f"{site}.lab",
                         "agents_required": AGENTS_REQUIRED, "ivr_host": site,
                         "announcement_path": str(context.paths.ivr_dir(site) / "emergency.ulaw")}
                  for site in SITES},
    }


def lab_pitr_values(context: LabContext) -> dict[str, Any]:
    """pgBackRest for the CRM database: a folder on the (one) lab machine and the bucket cc-pitr behind the lab's
    TLS; WAL archived at least every 10 s while there are writes. The TLS endpoint is named `localhost`, which the
    sites of a --netns lab do not reach: there only the folder (an unreachable repository stops all archiving)."""
    paths, state = context.paths, context.state
    repositories: list[dict[str, Any]] = [{"path": str(paths.pgbackrest_repository_dir), "retention_full": 2}]
    if not context.netns:
        repositories.append(
            {"s3": {"bucket": aws.PITR_BUCKET, "endpoint": "localhost", "port": state.ports.s3_tls,
                    "region": aws.REGION, "uri_style": "path", "ca_file": str(paths.tls_ca_file),
                    "credentials_file": str(paths.aws_environment_file)},
             "retention_full": 2})
    return {
        "stanza": "crm", "dataset": "crm-db", "work_dir": str(paths.pgbackrest_dir),
        "staging_port": state.ports.postgres_staging, "archive_timeout_seconds": 10, "rpo_minutes": 1,
        "repositories": repositories,
    }


def lab_scenarios(context: LabContext) -> dict[str, Any]:
    """The emergency plan's drills, wired to the lab's fault and power verbs: the five of issue 6, and three
    that rehearse the communication plan."""
    paths = context.paths
    lab = [sys.executable, "-m", "lifeline.infra.lab", "--home", str(paths.root.parent)]
    row = {"database": "crm", "table": "drill_sentinels", "row_survives": True}
    network_fault = ["fault", "site-link-cut"] if context.netns else ["fault", "main-unreachable"]
    return {
        "site-loss": {
            "description": "Natural disaster: the main site loses power. The call centre fails over to dr.",
            "kind": "natural-disaster",
            "fault": {"command": [*lab, "power", "main", "off"], "undo": [*lab, "power", "main", "on"], "probe_site": "main"},
            "recovery": {"failover": True}, "sentinel": row, "cadence_days": 180,
        },
        "network-outage": {
            "description": "Network outage: nothing of the main site answers. The call centre fails over to dr.",
            "kind": "network-outage",
            "fault": {"command": [*lab, *network_fault], "undo": [*lab, "heal"], "probe_site": "main"},
            "recovery": {"failover": True}, "sentinel": row, "cadence_days": 90,
        },
        "system-crash": {
            "description": "System crash: main's CRM database goes down. The standby at dr is promoted.",
            "kind": "system-crash",
            "fault": {"command": [*lab, "fault", "main-db-down"], "undo": [*lab, "heal"], "probe_site": "main"},
            "recovery": {"failover": True}, "sentinel": row, "cadence_days": 90,
        },
        "data-corruption": {
            "description": "Data corruption: the call recordings at main are lost. The last good snapshot is restored.",
            "kind": "data-corruption",
            "fault": {"command": [*lab, "fault", "recordings-lost"], "undo": [*lab, "heal"]},
            "recovery": {"restore": {"dataset": "recordings"}},
            "sentinel": {"dataset": "recordings", "file_survives": False},
            "targets": {"rto_minutes": 15, "rpo_minutes": 1500}, "cadence_days": 90,
        },
        "data-leak": {
            "description": ("Security incident: main's host is compromised. It is isolated, the backups move to a new "
                            "repository holding only snapshots recorded before the compromise, and data is restored "
                            "from the newest of those."),
            "kind": "security-incident",
            "fault": {"command": [*lab, "fault", "main-compromised"], "undo": [*lab, "heal"]},
            "recovery": {"leak": {"host": "main", "dataset": "recordings",
                                  "new_repository_url": str(paths.root / "repo-clean"),
                                  "new_password_file": str(paths.secrets_dir / "restic-clean.pw"),
                                  "database_role": "crm_app"}},
            "sentinel": {"dataset": "recordings", "file_survives": False},
            "targets": {"rto_minutes": 30, "rpo_minutes": 1500}, "cadence_days": 365,
        },
        "logical-corruption": {
            "description": "Logical corruption: a buggy release overwrites the e-mail of every gold and platinum "
                           "customer at main; replication carries it to dr at once. The check query finds it; "
                           "the customers table is repaired from a point-in-time restore to the second before.",
            "kind": "logical-corruption",
            "fault": {"command": [*lab, "fault", "crm-corrupted"], "undo": [*lab, "heal"]},
            "recovery": {"point_in_time": {"database": "crm", "tables": ["customers", "drill_sentinels"],
                                           "check": faults.CORRUPTION_CHECK, "rewind_seconds": 1}},
            "sentinel": row, "targets": {"rto_minutes": 10, "rpo_minutes": 1}, "cadence_days": 90,
        },
        "comms-failure": {
            "description": "Communications failure: SMS is down. The liaison and leadership must still be told, "
                           "through the fallback channel, within targets.notify_minutes.",
            "kind": "communications-failure",
            "fault": {"command": [*lab, "fault", "sms-down"], "undo": [*lab, "heal"]},
            "recovery": {"notify": {"audiences": ["liaison", "leadership"]}},
            "targets": {"rto_minutes": 2, "rpo_minutes": 0, "notify_minutes": 2}, "cadence_days": 90,
        },
        "staff-shortage": {
            "description": "Staff shortage: the approver does not answer. The escalation reaches her deputy, "
                           "who approves in the form.",
            "kind": "staff-shortage",
            "fault": {"instructions": "wang-fang does not answer: in the lab nobody plays her"},
            "recovery": {"approval": {"absent": "wang-fang", "deputies_after_seconds": 5}},
            "targets": {"rto_minutes": 5, "rpo_minutes": 0}, "cadence_days": 180,
        },
        "severe-weather": {
            "description": "Severe weather: a weather service's CAP warning (an exercise) for main's area reaches "
                           "intake. Preparedness must make a fresh off-site snapshot, find dr READY and tell "
                           "leadership within the targets.",
            "kind": "natural-disaster",
            "fault": {"instructions": "the drill posts the warning to `lifeline intake`, as the weather service would"},
            "recovery": {"alert": {"site": "main", "kind": "weather", "headline": "Drill: typhoon warning for Pudong"}},
            "targets": {"rto_minutes": 10, "rpo_minutes": 0, "notify_minutes": 10}, "cadence_days": 180,
        },
    }


def _schema_keys() -> set[str]:
    """Top-level keys the plan schema accepts (it forbids unknown ones); empty if unavailable."""
    try:
        from lifeline.configs.plan import Plan
    except ImportError:
        return set()
    return set(Plan.model_fields)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings: the lab's values win, the template keeps everything else.
    ``repositories``, ``hosts`` and ``sites`` entries are the lab's alone."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render(context: LabContext, template: Path | None = None) -> dict[str, Any]:
    plan = load_template(template)
    values = lab_plan_values(context)
    datasets = plan.get("datasets") or {}
    # a template dataset the lab cannot back (e.g. a command over a path it lacks) is dropped
    plan["datasets"] = {name: spec for name, spec in datasets.items() if name in values["datasets"]}
    if "ivr-config" not in datasets:
        values["datasets"].pop("ivr-config")
    accepted = _schema_keys()
    values.update({key: value for key, value in lab_recovery_values(context).items() if key in accepted})
    values.update({key: value for key, value in lab_communication_values(context).items() if key in accepted})
    for name in ("repositories", "hosts", "services", "databases", "fencing"):
        plan.pop(name, None)
    return merge(plan, values)


def write(context: LabContext, template: Path | None = None) -> Path:
    """Render and write ``plan.yaml``; returns its absolute path."""
    plan = render(context, template)
    header = ("# The lab's plan, rendered by `lifeline lab up` from configs/callcenter.yaml.\n"
              "# Regenerated by every `lab up`: edit the template, not this file.\n")
    text = header + yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, width=110)
    target = context.paths.plan_file
    temporary = target.with_suffix(".yaml.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(target)
    return target.absolute()
