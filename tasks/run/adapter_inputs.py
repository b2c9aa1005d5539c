"""The plan's models turned into the adapters' own inputs: checks into probes, databases into replicated
databases. Steps and flows convert here, so the adapters never see the plan."""

from __future__ import annotations

from collections.abc import Iterable

from lifeline.configs.checks import Check, HttpCheck, SipCheck, SqlCheck, TcpCheck
from lifeline.configs.plan import Aws
from lifeline.configs.recovery import Database, DatabaseInstance
from lifeline.tasks.adapters.aws import AwsSession
from lifeline.tasks.adapters.probes import HttpProbe, Probe, SipProbe, SqlProbe, SshProbe, TcpProbe
from lifeline.tasks.adapters.replication.database import DatabaseNode, ReplicatedDatabase


def probe(check: Check) -> Probe:
    if isinstance(check, HttpCheck):
        return HttpProbe(url=check.url, expect_status=check.expect_status, expect_text=check.expect_text,
                         timeout_seconds=check.timeout_seconds, name=check.name)
    if isinstance(check, TcpCheck):
        return TcpProbe(host=check.host, port=check.port, timeout_seconds=check.timeout_seconds, name=check.name)
    if isinstance(check, SqlCheck):
        return SqlProbe(dsn=check.dsn, passfile=check.passfile, query=check.query, expect=check.expect,
                        timeout_seconds=check.timeout_seconds, name=check.name)
    if isinstance(check, SipCheck):
        return SipProbe(address=check.address, port=check.port, number=check.number, caller_id=check.caller_id,
                        expect_answered_by=check.expect_answered_by, timeout_seconds=check.timeout_seconds,
                        name=check.name)
    return SshProbe(host=check.host, command=tuple(check.command), expect_exit=check.expect_exit,
                    timeout_seconds=check.timeout_seconds, name=check.name)


def probes(checks: Iterable[Check]) -> list[Probe]:
    return [probe(check) for check in checks]


def database_node(instance: DatabaseInstance) -> DatabaseNode:
    return DatabaseNode(host=instance.host, dsn=instance.dsn, data_dir=instance.data_dir, bin_dir=instance.bin_dir,
                        passfile=instance.passfile)


def replicated_database(database: Database) -> ReplicatedDatabase:
    return ReplicatedDatabase(
        primary=database.primary,
        instances={site: database_node(instance) for site, instance in database.instances.items()},
        replication_user=database.replication_user,
        replication_slot=database.replication_slot,
    )


def aws_session(aws: Aws) -> AwsSession:
    """The plan's AWS account (its `aws` section), shared per process for the same endpoint and credentials."""
    return AwsSession.from_credentials_file(region=aws.region, endpoint_url=aws.endpoint_url,
                                            credentials_file=aws.credentials_file)
