"""pgBackRest's command lines, its configuration and its `info` output, from plain values (the adapter's pure half)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import PurePosixPath

import pytest
from lifeline.tasks.adapters.pgbackrest import parse_info, render_config
from lifeline.tasks.adapters.pgbackrest.archiving import ArchiverStatus
from lifeline.tasks.adapters.pgbackrest.arguments import (
    archive_command,
    backup_arguments,
    restore_arguments,
    restore_target,
)
from lifeline.tasks.adapters.pgbackrest.errors import classify
from lifeline.tasks.adapters.postgres.recovery_log import StoppedRecovery

INFO = [{"name": "crm", "status": {"code": 0, "message": "ok"},
         "archive": [{"id": "15-1", "min": "000000010000000000000001", "max": "000000010000000000000003"}],
         "backup": [{"label": "20261204-054710F", "type": "full", "database": {"id": 1, "repo-key": 2},
                     "timestamp": {"start": 1796363230, "stop": 1796363234},
                     "archive": {"start": "000000010000000000000003", "stop": "000000010000000000000003"},
                     "info": {"size": 23066305, "repository": {"size": 3050822, "delta": 3050822}, "delta": 23066305}}]}]


def test_a_staging_restore_stops_before_the_target_promotes_and_never_archives_into_the_live_stanza() -> None:
    moment = datetime(2026, 12, 4, 5, 47, 10, 123456, tzinfo=UTC)
    target = restore_target(to_time=moment)
    assert target == ("--type=time", "--target=2026-12-04 05:47:10.123456+00:00", "--target-exclusive",
                      "--target-action=promote")
    assert restore_arguments(PurePosixPath("/srv/staging"), target, port=5499) == (
        "restore", "--pg1-path=/srv/staging", "--archive-mode=off", "--recovery-option=port=5499", *target)
    replacing = restore_arguments(PurePosixPath("/srv/data"), restore_target(before_xid=742), archiving=True)
    assert "--archive-mode=preserve" in replacing and replacing[-4:-2] == ("--type=xid", "--target=742")
    with pytest.raises(ValueError, match="exactly one"):
        restore_target(to_time=moment, before_xid=1)
    with pytest.raises(ValueError, match="not one of"):
        backup_arguments("weekly", 1)
    assert backup_arguments("diff", 2) == ("backup", "--type=diff", "--repo=2")


def test_archive_command_quotes_every_part_for_the_shell_postgresql_runs_it_in() -> None:
    assert archive_command("pgbackrest", PurePosixPath("/etc/life line/pgbackrest.conf"), "crm") == \
        "pgbackrest '--config=/etc/life line/pgbackrest.conf' --stanza=crm archive-push %p"


def test_info_gives_the_backups_with_their_repository_and_the_archived_wal_range() -> None:
    [crm] = parse_info(json.dumps(INFO))
    assert (crm.stanza, crm.status, crm.wal_min, crm.wal_max) == (
        "crm", "ok", "000000010000000000000001", "000000010000000000000003")
    assert crm.backups[0].repository == 2 and crm.newest_backup(1) is None
    assert crm.oldest_restorable == datetime.fromtimestamp(1796363235, UTC)  # pgBackRest wants a later second


def test_the_config_is_rendered_in_sections_and_refuses_a_value_that_would_add_a_line() -> None:
    text = render_config({"repo1-type": "s3", "repo1-s3-key-secret": "s3cr3t"}, {"crm": {"pg1-port": 5433}})
    assert text == "[global]\nrepo1-type=s3\nrepo1-s3-key-secret=s3cr3t\n\n[crm]\npg1-port=5433\n"
    with pytest.raises(ValueError, match="one line"):
        render_config({"repo1-path": "/srv\n[evil]"}, {})


def test_errors_name_the_code_and_only_lock_and_network_codes_are_retried() -> None:
    lock = classify(50, "P00  ERROR: [050]: unable to acquire lock on file '/tmp/crm.lock'", "backup", "stanza crm")
    assert lock.transient and lock.code == "050" and "[050]: unable to acquire lock" in str(lock)
    wrong = classify(28, "ERROR: [028]: backup and archive info files exist but do not match", "check", "stanza crm")
    assert not wrong.transient and "check (stanza crm) failed [028]" in str(wrong)


def test_exposure_counts_from_the_oldest_completed_segment_still_waiting_for_the_archive() -> None:
    now = datetime(2026, 12, 4, 6, 0, 0, tzinfo=UTC)
    # after a crash pg_stat_archiver starts empty: only the segments waiting in archive_status tell the truth
    current = ArchiverStatus("on", "pgbackrest ...", "000000010000000000000005", None, None, None, None, now, 0, None)
    assert current.exposure_seconds == 0.0
    behind = ArchiverStatus("on", "pgbackrest ...", "000000010000000000000009", "000000010000000000000004",
                            datetime(2026, 12, 4, 5, 59, 0, tzinfo=UTC), "000000010000000000000005",
                            datetime(2026, 12, 4, 5, 59, 30, tzinfo=UTC), now, 4,
                            datetime(2026, 12, 4, 5, 59, 15, tzinfo=UTC))
    assert behind.failing and behind.exposure_seconds == 45.0
    unset = ArchiverStatus("on", "", "000000010000000000000009", None, None, None, None, now, 3,
                           datetime(2026, 12, 4, 5, 0, 0, tzinfo=UTC))
    assert not unset.configured and unset.exposure_seconds is None


# A staging cluster's log after two site-loss drills: main was powered off before it archived segment 0A
GAP_LOG = """\
2026-12-05 06:24:53.974 UTC [27501] LOG:  starting point-in-time recovery to 2026-12-05 06:24:46.428926+00
2026-12-05 06:24:54.150 UTC [27501] LOG:  restored log file "000000010000000000000009" from archive
2026-12-05 06:24:54.194 UTC [27501] LOG:  redo done at 0/90553E8 system usage: CPU: user: 0.00 s, system: 0.00 s
2026-12-05 06:24:54.194 UTC [27501] LOG:  last completed transaction was at log time 2026-12-05 06:23:35.477892+00
2026-12-05 06:24:54.194 UTC [27501] FATAL:  recovery ended before configured recovery target was reached
2026-12-05 06:24:54.197 UTC [27498] LOG:  startup process (PID 27501) exited with exit code 1
2026-12-05 06:24:54.198 UTC [27498] LOG:  shutting down due to startup process failure
2026-12-05 06:24:54.199 UTC [27498] LOG:  database system is shut down""".splitlines()


def test_a_recovery_that_ran_out_of_wal_says_so_and_where_it_stopped() -> None:
    stopped = StoppedRecovery.from_log(GAP_LOG)
    assert stopped.ended_before_target
    assert stopped.last_transaction_at == datetime(2026, 12, 5, 6, 23, 35, 477892, tzinfo=UTC)
    assert stopped.reason == "recovery ended before configured recovery target was reached"


def test_any_other_stopped_recovery_names_its_fatal_line_not_the_shutdown_after_it() -> None:
    lines = ['2026-12-05 06:24:54 UTC [1] FATAL:  could not locate required checkpoint record',
             '2026-12-05 06:24:54 UTC [2] LOG:  shutting down due to startup process failure']
    stopped = StoppedRecovery.from_log(lines)
    assert not stopped.ended_before_target and stopped.last_transaction_at is None
    assert stopped.reason == "could not locate required checkpoint record"
