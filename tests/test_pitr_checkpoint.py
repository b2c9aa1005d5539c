"""Before a PITR backup, a primary whose pg_control still names the timeline it was promoted from is
checkpointed (pgBackRest refuses such a backup with [058]); any other primary is left alone."""

from lifeline.tasks.adapters.pgbackrest.archiving import checkpoint_after_promotion
from lifeline.tasks.adapters.postgres.connection import connection_info


def test_a_primary_whose_pg_control_names_its_timeline_is_not_checkpointed(postgres_server):
    connection = connection_info(postgres_server.dsn(), str(postgres_server.passfile))
    before = postgres_server.query("postgres", "SELECT checkpoint_lsn FROM pg_control_checkpoint()")
    assert checkpoint_after_promotion(connection) is False
    assert postgres_server.query("postgres", "SELECT checkpoint_lsn FROM pg_control_checkpoint()") == before
