"""Backup and restore benchmark: Lifeline's flows next to bare restic doing the same work.

    uv run python -m tests.benchmarks.run backup_restore [--size-mib 1024] [--rounds 3] [--cli-rounds 3]

One run, side by side, on a generated data set (about 2,000 small files and a few large ones of
random bytes under $TMPDIR; generating it is not timed):

- bare restic, run here with subprocess: `restic backup --json --tag ... --host ... -- PATH` into a
  fresh repository with a fresh cache dir (cold), then `restic restore latest --target DIR --verify`;
- Lifeline in this process against a Prefect server started here: `backup_flow(plan)` (one files
  dataset, no retention, no copy, `check --read-data-subset 1K`), then `restore_flow(...)`.
  The restic work inside the flow is read from the run record's step timings (`backup recordings`,
  `restore recordings to staging and verify`); the other steps and the rest of the flow (Prefect,
  ledger, artifacts) are reported apart, as overhead;
- the fixed cost of Prefect and the CLI on a one-file plan: the flow in-process, `lifeline backup
  --plan ... --json` as a process against the server, the same with the flow heartbeat off (the CLI's
  `prefect_for_cli()`), and with an ephemeral Prefect (no PREFECT_API_URL). Each run's own step time
  (its restic work, read from its run record) is taken off its wall time, so restic's noise stays out.

Fairness: both repositories of a round are copies of one repository initialised once (`restic init`
is not timed), so they share KDF parameters and chunker polynomial; each round gets fresh copies
and empty caches. Bare and Lifeline alternate (bare, Lifeline, bare, Lifeline) and the tables show
medians. Before each timed run the file systems are synced. The source data sits in the page cache
for both. restic calls made by Lifeline are timed by wrapping `lifeline.tasks.adapters.restic.run_command`
in this process (an observer only: arguments and results pass through unchanged).

Modules: backup_restore_bare.py (the data set, bare restic), backup_restore_flows.py (Lifeline's flows,
the samples, the fixed costs), backup_restore_tables.py (the tables).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from tests.benchmarks.backup_restore_bare import (
    DATASET,
    PLAN_NAME,
    DataSet,
    bare_backup,
    bare_restore,
    expect_restored,
    fresh_copy,
    generate_dataset,
    restic_binary,
    restic_environment,
    restic_init,
)
from tests.benchmarks.backup_restore_flows import (
    ResticCalls,
    Samples,
    fixed_costs,
    record_backup,
    record_restore,
    run_flow,
    write_plan,
)
from tests.benchmarks.backup_restore_tables import report
from tests.benchmarks.common import (
    CpuMeter,
    bench_tmpdir,
    environment,
    log,
    prefect_server,
    quiet_prefect_environment,
    settle,
    timed,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backup_restore", description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the data set (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/Lifeline rounds (default 3)")
    parser.add_argument("--cli-rounds", type=int, default=3, help="rounds of the fixed-cost measurements (default 3)")
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--large-files", type=int, default=4)
    arguments = parser.parse_args(argv)
    if arguments.size_mib < 1 or arguments.rounds < 1 or arguments.cli_rounds < 1:
        parser.error("--size-mib, --rounds and --cli-rounds must be at least 1")
    if shutil.which(restic_binary()) is None:
        print(f"backup_restore: {restic_binary()} not found (run `make setup`)", file=sys.stderr)
        return 2
    quiet_prefect_environment()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with bench_tmpdir("lifeline-bench-backup-") as root:
        samples = run_benchmark(root, arguments)
    report(samples, arguments, (load_before, os.getloadavg()[0]))
    log(f"backup_restore: {time.perf_counter() - started:.0f} s in all")
    return 1 if samples.failures else 0


def run_benchmark(root: Path, arguments: argparse.Namespace) -> Samples:
    samples = Samples()
    with environment({"LIFELINE_HOME": str(root / "lifeline-home")}, remove=("LIFELINE_PLAN", "LIFELINE_LEDGER_URL")):
        seconds, data = timed(lambda: generate_dataset(
            root / "data", arguments.size_mib << 20, arguments.small_files, arguments.large_files))
        log(f"data set: {data.files} files, {data.bytes / 2**20:.0f} MiB in {data.root} ({seconds:.1f} s, not timed)")
        password_file = root / "restic.pw"
        password_file.write_text("benchmark-" + os.urandom(8).hex() + "\n")
        password_file.chmod(0o600)
        template = root / "repo-template"
        restic_init(template, password_file, root)
        tiny_data = root / "tiny-data"
        tiny_data.mkdir()
        (tiny_data / "note.txt").write_bytes(os.urandom(1024))
        restic_init(root / "repo-tiny", password_file, root)
        plan = write_plan(root / "plan.yaml", PLAN_NAME, data.root, root / "repo-lifeline", password_file)
        tiny_plan = write_plan(root / "plan-tiny.yaml", PLAN_NAME + "-tiny", tiny_data, root / "repo-tiny", password_file)

        with prefect_server(root / "prefect") as server:
            from lifeline.flows.backup import backup_flow
            from lifeline.flows.restore import restore_flow

            calls, meter = ResticCalls(), CpuMeter(server)
            try:
                # The first flow runs of a process pay one-time costs (clients, flow registration): count them apart.
                first = run_flow(lambda: backup_flow(str(tiny_plan)), calls)
                samples.add_run("first tiny flow", first.seconds, sum(first.steps.values()))
                run_flow(lambda: restore_flow(str(tiny_plan), DATASET, str(root / "tiny-restored")), calls)
                shutil.rmtree(root / "tiny-restored")
                for number in range(1, arguments.rounds + 1):
                    core_round(number, root, data, plan, password_file, template, calls, meter, samples,
                               arguments.rounds)
                fixed_costs(root, tiny_plan, server.api_url, calls, samples, arguments.cli_rounds)
            finally:
                calls.close()
    return samples


def core_round(number: int, root: Path, data: DataSet, plan: Path, password_file: Path, template: Path,
               calls: ResticCalls, meter: CpuMeter, samples: Samples, rounds: int) -> None:
    from lifeline.configs.settings import load_settings
    from lifeline.flows.backup import backup_flow
    from lifeline.flows.restore import restore_flow

    bare_repository, bare_cache = root / "repo-bare", root / "cache-bare"
    lifeline_repository, lifeline_cache = root / "repo-lifeline", load_settings().restic_cache_dir
    bare_env = restic_environment(bare_repository, password_file, bare_cache)

    # bare backup, Lifeline backup: both into fresh copies of the template, with empty caches
    fresh_copy(template, bare_repository)
    shutil.rmtree(bare_cache, ignore_errors=True)
    settle()
    with meter.measure() as use:
        samples.add("bare backup", bare_backup(bare_env, data))
    samples.add_cpu("bare backup", use())

    fresh_copy(template, lifeline_repository)
    shutil.rmtree(lifeline_cache, ignore_errors=True)
    settle()
    with meter.measure() as use:
        backup = run_flow(lambda: backup_flow(str(plan)), calls)
    samples.add_cpu("backup flow", use())
    record_backup(backup, samples)

    # bare restore, Lifeline restore: each from the repository it just wrote (caches as the backup left them)
    bare_target, lifeline_target = root / "restored-bare", root / "restored-lifeline"
    settle()
    with meter.measure() as use:
        samples.add("bare restore", bare_restore(bare_env, bare_target, data))
    samples.add_cpu("bare restore", use())
    settle()
    with meter.measure() as use:
        restore = run_flow(lambda: restore_flow(str(plan), DATASET, str(lifeline_target)), calls)
    samples.add_cpu("restore flow", use())
    expect_restored(lifeline_target, data, "restore flow")
    record_restore(restore, samples)
    log(
        f"round {number}/{rounds}: backup bare {samples.values['bare backup'][-1]:.2f} s, "
        f"step {samples.values['backup step'][-1]:.2f} s (flow {backup.seconds:.2f} s); "
        f"restore bare {samples.values['bare restore'][-1]:.2f} s, "
        f"step {samples.values['restore step'][-1]:.2f} s (flow {restore.seconds:.2f} s)"
    )
    # Deleting happens between rounds, not between the runs compared (the file system discards freed blocks).
    for path in (bare_target, lifeline_target, bare_repository, lifeline_repository):
        shutil.rmtree(path)


if __name__ == "__main__":
    sys.exit(main())
