"""Before a PITR backup, a primary whose pg_control still names the timeline it was promoted from is
checkpointed (pgBackRest refuses such a backup with [058]); any other primary is left alone."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifeline.tasks.adapters.pgbackrest.archiving import checkpoint_after_promotion
from lifeline.tasks.adapters.postgres.connection import connection_info

from tests.helpers import wait_for
from tests.pg_fixtures import PostgresServer, start_postgres_server, start_standby, stop_postgres_server


def test_a_primary_whose_pg_control_names_its_timeline_is_not_checkpointed(postgres_server):
    connection = connection_info(postgres_server.dsn(), str(postgres_server.passfile))
    before = postgres_server.query("postgres", "SELECT checkpoint_lsn FROM pg_control_checkpoint()")
    assert checkpoint_after_promotion(connection) is False
    assert postgres_server.query("postgres", "SELECT checkpoint_lsn FROM pg_control_checkpoint()") == before


@pytest.fixture
def promoted_standby() -> Iterator[PostgresServer]:
    """A standby promoted a moment ago, its end-of-recovery checkpoint still spread over minutes: thousands of
    buffers it replayed are dirty, and a promotion asks for that checkpoint without hurry."""
    base = Path(tempfile.mkdtemp(prefix="lifeline-pg-promoted-"))
    base.chmod(0o755)
    servers: list[PostgresServer] = []
    try:
        primary = start_postgres_server(base / "primary", replication=True)
        servers.append(primary)
        standby = start_standby(primary, base / "standby", checkpoint_timeout="'10min'")
        servers.append(standby)
        primary.execute("postgres", "CREATE TABLE calls AS SELECT id, repeat('x', 400) AS note "
                                    "FROM generate_series(1, 50000) AS id")
        (written,) = primary.query("postgres", "SELECT pg_current_wal_lsn()")[0]
        wait_for(lambda: standby.query("postgres", f"SELECT pg_last_wal_replay_lsn() >= '{written}'")[0][0],
                 30, "the standby to replay the calls table")
        assert standby.query("postgres", "SELECT pg_promote(true, 30)") == [(True,)]
        yield standby
    finally:
        for server in servers:
            stop_postgres_server(server)
        shutil.rmtree(base, ignore_errors=True)


def test_a_just_promoted_primary_is_checkpointed_so_pg_control_names_its_new_timeline(promoted_standby):
    connection = connection_info(promoted_standby.dsn(), str(promoted_standby.passfile))
    timelines = ("SELECT (SELECT timeline_id FROM pg_control_checkpoint()), "
                 "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int")
    (control, writing), = promoted_standby.query("postgres", timelines)
    assert control == writing - 1  # the window in which pgBackRest refuses a backup: [058]
    assert checkpoint_after_promotion(connection) is True
    assert promoted_standby.query("postgres", timelines) == [(writing, writing)]
    assert checkpoint_after_promotion(connection) is False  # once is enough
