"""Point-in-time recovery benchmark: restoring a 1 GiB CRM database to a moment with pgBackRest, next to
restoring the same data from a `pg_dump`; and how far archiving lags behind the primary under the lab's load.

    uv run python -m tests.benchmarks.run pitr [--size-mib 1024] [--lag-samples 8]

One lab on free ports with its Prefect server. The CRM database at main grows by `--size-mib` of rows (a
`payload` table), archiving is set up and one full backup taken into each repository (a folder and S3 behind
the lab's TLS), untimed. Then, in the same run:

- **PITR, side mode**: `lifeline restore crm-db --to-time T` as an operator types it (T: just before a marked
  bad write): a staging cluster restored, WAL replayed to T, promoted, the point proven; the record's RPO;
- **pg_dump, by hand**: `pg_dump -Fc` of the same database after the backup (timed apart: the older copy), then,
  after the PITR restore, `pg_restore -j 2` of it into a new database: what a dump gives back, and how old;
- **archive lag**: a row committed at main, then the time until the WAL segment holding it is archived
  (`pg_stat_archiver`), repeated; and the archiver's unarchived-data window sampled meanwhile.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import datetime
from pathlib import Path

from tests.benchmarks.common import bench_tmpdir, log, median, print_table, quiet_prefect_environment, run_timed
from tests.benchmarks.lab import LabRun, backed_up_lab

PAYLOAD_ROW_BYTES = 2000


def query(lab: LabRun, sql: str, parameters: tuple = ()) -> list[tuple]:
    from lifeline.infra.lab import open_lab
    from lifeline.infra.lab import postgres as lab_postgres

    return lab_postgres.query(open_lab(lab.home), "main", sql, database="crm", parameters=parameters)


def grow(lab: LabRun, size_mib: int) -> float:
    rows = size_mib * 1024 * 1024 // PAYLOAD_ROW_BYTES
    query(lab, "CREATE TABLE IF NOT EXISTS payload (id bigint PRIMARY KEY, customer_id integer, body text)")
    batch = 50_000
    for start in range(0, rows, batch):
        query(lab, "INSERT INTO payload SELECT n, n %% 2000 + 1, repeat(md5(n::text), %s) "
                   "FROM generate_series(%s, %s) AS n", (PAYLOAD_ROW_BYTES // 32, start, min(rows, start + batch) - 1))
    return query(lab, "SELECT pg_database_size('crm')")[0][0] / 2**30


def cli(lab: LabRun, *arguments: str):  # noqa: ANN201 - ProcessRun
    return run_timed([sys.executable, "-m", "lifeline.flows.cli", *arguments, "--plan", str(lab.plan)],
                     env=os.environ.copy())


def libpq(lab: LabRun) -> tuple[list[str], dict[str, str]]:
    from lifeline.infra.lab import open_lab
    from lifeline.infra.lab import postgres as lab_postgres

    parameters = lab_postgres.connection_parameters(open_lab(lab.home), "main", "crm")
    flags = ["-h", parameters["host"], "-p", str(parameters["port"]), "-U", parameters["user"]]
    return flags, {**os.environ, "PGPASSFILE": parameters["passfile"]}


def dump(lab: LabRun, root: Path) -> tuple[float, Path]:
    from lifeline.infra.lab.postgres import tool

    flags, env = libpq(lab)
    target = root / "crm.dump"
    dumped = run_timed([tool("pg_dump"), *flags, "-Fc", "-Z", "1", "-f", str(target), "crm"], env=env)
    dumped.check("pg_dump")
    return dumped.seconds, target


def restore_dump(lab: LabRun, dump_file: Path) -> float:
    """Into a new database of the same cluster, `-j 2` as on a 2-core machine; dropped afterwards."""
    from lifeline.infra.lab.postgres import tool

    flags, env = libpq(lab)
    run_timed([tool("createdb"), *flags, "crm_from_dump"], env=env).check("createdb")
    restored = run_timed([tool("pg_restore"), *flags, "-j", "2", "-d", "crm_from_dump", str(dump_file)], env=env)
    restored.check("pg_restore")
    run_timed([tool("dropdb"), *flags, "crm_from_dump"], env=env)
    return restored.seconds


def archive_lag(lab: LabRun, samples: int) -> tuple[list[float], list[float]]:
    """Seconds from a commit to its segment archived; and the unarchived window seen meanwhile."""
    from lifeline.configs.loading import load_plan
    from lifeline.tasks.adapters.pgbackrest.archiving import archiver_status
    from lifeline.tasks.run.pitr_inputs import instance_connection

    database = load_plan(lab.plan).plan.databases["crm"]
    connection = instance_connection(database, "main")
    timeout = database.pitr.archive_timeout_seconds
    lags, windows = [], []
    for _ in range(samples):
        committed_at = time.monotonic()
        segment = query(lab, "WITH w AS (INSERT INTO payload VALUES (-1 * (extract(epoch FROM clock_timestamp()) "
                             "* 1e6)::bigint, 1, 'lag probe') RETURNING 1) "
                             "SELECT pg_walfile_name(pg_current_wal_insert_lsn()) FROM w")[0][0]
        while True:
            status = archiver_status(connection)
            if status.exposure_seconds is not None:
                windows.append(status.exposure_seconds)
            archived = status.last_archived_wal or ""
            if archived[:8] == segment[:8] and archived[8:] >= segment[8:]:
                lags.append(time.monotonic() - committed_at)
                break
            time.sleep(0.1)
        time.sleep(random.uniform(0, timeout))  # probes land anywhere in archive_timeout's cycle
    return lags, windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pitr")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--lag-samples", type=int, default=8)
    options = parser.parse_args(argv)
    quiet_prefect_environment()
    with bench_tmpdir("lifeline-bench-pitr-") as root, backed_up_lab(root) as lab:
        seconds = time.perf_counter()
        size_gib = grow(lab, options.size_mib)
        log(f"crm grew to {size_gib:.2f} GiB in {time.perf_counter() - seconds:.0f} s")
        backup = cli(lab, "pitr", "backup", "--type", "full").check("pitr backup")
        log(f"pgBackRest full backup into both repositories: {backup.seconds:.1f} s (not compared)")
        backed_up_lsn = query(lab, "SELECT pg_current_wal_lsn()")[0][0]
        dump_seconds, dump_file = dump(lab, root)  # the pg_dump is the older copy: it is taken before the damage
        dumped_at = time.monotonic()
        query(lab, "CREATE TABLE IF NOT EXISTS marks (mark text)")
        query(lab, "INSERT INTO marks VALUES ('before')")
        time.sleep(0.5)
        target, replay_bytes = query(lab, "SELECT clock_timestamp(), pg_wal_lsn_diff(pg_current_wal_lsn(), %s)",
                                     (backed_up_lsn,))[0]
        time.sleep(0.5)
        query(lab, "UPDATE customers SET email = 'bench@invalid' WHERE tier = 'gold'")
        restore = cli(lab, "restore", "crm-db", "--to-time", target.isoformat(), "--json")
        restore.check("lifeline restore --to-time")
        import json

        record = json.loads(restore.stdout)
        steps = {step["name"]: step for step in record["steps"]}
        dump_age = time.monotonic() - dumped_at  # what the dump lacks by the time the restore is asked for
        pg_restore_seconds = restore_dump(lab, dump_file)
        lags, windows = archive_lag(lab, options.lag_samples)

    def seconds_of(name: str) -> float:
        step = steps[name]
        return (datetime.fromisoformat(step["ended_at"]) - datetime.fromisoformat(step["started_at"])).total_seconds()

    ratio = restore.seconds / pg_restore_seconds
    print_table(
        ["restore of the CRM database", "seconds", "data lost (s)"],
        [[f"PITR side mode: `lifeline restore crm-db --to-time` ({size_gib:.2f} GiB)", restore.seconds,
          record["rpo_seconds"]],
         ["  of which (record): RTO, run start -> data back", record["rto_seconds"], None],
         ["  of which: find the window (switch WAL, wait for it archived)", seconds_of("find the restorable window"),
          None],
         [f"  of which: pgBackRest restore, start, replay {replay_bytes / 2**20:.0f} MiB of WAL, promote",
          seconds_of("restore crm into a staging cluster"), None],
         ["  of which: prove the point (row counts)", seconds_of("prove the restored point"), None],
         ["pg_restore -j 2 of a pg_dump -Fc (by hand)", pg_restore_seconds, dump_age],
         ["  (pg_dump -Fc -Z 1 before it, not counted)", dump_seconds, None]],
        title=f"Point-in-time restore next to a pg_dump restore of the same {size_gib:.2f} GiB",
        notes=[f"PITR / pg_restore = {ratio:.2f}x the time; the dump's data was {dump_age:.0f} s old here "
               "(a nightly dump's: up to a day); PITR lost "
               f"{record['rpo_seconds']:.3f} s before T (T minus the newest transaction it kept).",
               "PITR replays the WAL written since its last backup: the longer since the backup, the longer the "
               "restore (a day of a busy CRM's WAL is minutes); the dump restore does not depend on it.",
               "The payload rows are repeated md5 text: lz4 (pgBackRest) and pg_dump -Z 1 compress them well."])
    print()
    print_table(
        ["archive lag at main, lab load, archive_timeout 10 s", "median s", "max s", "samples"],
        [["commit -> its WAL segment archived", median(lags), max(lags), len(lags)],
         ["unarchived-data window seen by preflight", median(windows), max(windows), len(windows)]],
        notes=["A segment is archived when it fills or when archive_timeout ends it: the lab's writes fill "
               "few segments, so the timeout bounds the window; the RPO target is 60 s.",
               "After a bulk load, the first reads set hint bits, which wal_log_hints (pg_rewind needs it) writes as "
               "full pages: the pg_dump above made the WAL the restore replays about as large as the table."])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
