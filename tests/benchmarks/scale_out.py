"""Scale-out: 50 datasets of 20 MB over 10 repositories, backed up on a worker per site against the same
backups one after another, measured side by side in one run.

    uv run python -m tests.benchmarks.run scale_out [--datasets 50] [--mib 20] [--repositories 10]

Datasets alternate between the sites main and dr; dataset i goes to repository i % R. Each mode backs up the
same data into fresh repositories of its own, so deduplication favours none:

- one after another: `restic init` of each repository, then one `restic backup` per dataset, in turn;
- one process: `lifeline backup` of every dataset (its steps run concurrently within the repositories' slots),
  against the embedded default (the background server on SQLite) and against a server on PostgreSQL;
- two workers: a server on PostgreSQL (a cluster of its own, initdb into the temporary folder), `lifeline
  deploy`, a `lifeline worker` per site, then both sites' backup deployments started through the API at one
  moment, as the nightly schedule does.

Where the time goes is read from the run records: the window in which backups ran, the time steps waited for
their repository's slots, prune and check (due on a first run), and the rest (Prefect, the ledger).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tests.benchmarks.common import (
    bench_tmpdir,
    cli_argv,
    log,
    print_table,
    process_group_cpu_seconds,
    ratio,
    run_timed,
)
from tests.pg_fixtures import start_postgres_server, stop_postgres_server
from tests.servers import free_port

SITES = ("main", "dr")


def make_data(root: Path, datasets: int, mib: int) -> list[Path]:
    folders = []
    for number in range(datasets):
        folder = root / "data" / f"d{number:02d}"
        folder.mkdir(parents=True)
        with open(folder / "recording.bin", "wb") as out:
            for _ in range(mib):
                out.write(os.urandom(1 << 20))
        folders.append(folder)
    return folders


def write_plan(root: Path, name: str, folders: list[Path], repositories: int, password: Path) -> Path:
    plan = {
        "name": name, "timezone": "UTC",
        "sites": {site: {} for site in SITES},
        "repositories": {f"r{index}": {"url": str(root / name / f"repo{index}"), "password_file": str(password),
                                       "init": True} for index in range(repositories)},
        "datasets": {folder.name: {"repository": f"r{number % repositories}", "paths": [str(folder)],
                                   "site": SITES[number % len(SITES)]} for number, folder in enumerate(folders)},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def one_after_another(root: Path, folders: list[Path], repositories: int, password: Path) -> tuple[float, float]:
    """(seconds for the inits and the backups, seconds for the backups alone)"""
    env = {**os.environ, "RESTIC_CACHE_DIR": str(root / "restic-cache"), "RESTIC_PASSWORD_FILE": str(password)}
    repository = [root / "sequential" / f"repo{index}" for index in range(repositories)]
    started = time.perf_counter()
    for folder in repository:
        run_timed(["restic", "init", "-q", "-r", str(folder)], env).check("restic init")
    initialised = time.perf_counter()
    for number, data in enumerate(folders):
        run_timed(["restic", "backup", "-q", "-r", str(repository[number % repositories]), str(data)],
                  env).check("restic backup")
    return time.perf_counter() - started, time.perf_counter() - initialised


@dataclass
class Server:
    """A `lifeline server` this benchmark started, and how to read its CPU and the machine's."""

    env: dict[str, str]  # what the CLI, deploy and the workers run with (PREFECT_API_URL set)
    pid: int

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{Path(self.env['LIFELINE_HOME']) / 'ledger.sqlite'}"

    def reading(self) -> tuple[float, float]:
        """(CPU seconds the whole machine has been busy, the server's own)"""
        with open("/proc/stat") as stat:
            user, nice, system = (int(value) for value in stat.readline().split()[1:4])
        return (user + nice + system) / os.sysconf("SC_CLK_TCK"), process_group_cpu_seconds(self.pid)


@dataclass
class Measured:
    seconds: float
    record_ids: list[str]
    machine_cpu: float = 0.0
    server_cpu: float = 0.0
    pickup: list[float] = field(default_factory=list)


@contextmanager
def lifeline_server(home: Path, database_url: str | None = None, passfile: Path | None = None) -> Iterator[Server]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL", "PREFECT_UI_API_URL")}
    env.update({"LIFELINE_HOME": str(home), "LIFELINE_SERVER_PORT": str(port)})
    if database_url:
        env.update({"LIFELINE_SERVER_DATABASE_URL": database_url, "PGPASSFILE": str(passfile)})
    run_timed([*cli_argv(), "server", "start"], env).check("lifeline server start")
    try:
        pid = int((home / "prefect" / "lifeline-server.pid").read_text().split()[0])
        yield Server({**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}, pid)
    finally:
        run_timed([*cli_argv(), "server", "stop"], env)


@contextmanager
def measured(server: Server) -> Iterator[Measured]:
    result = Measured(0.0, [])
    before, started = server.reading(), time.perf_counter()
    yield result
    after = server.reading()
    result.seconds = result.seconds or time.perf_counter() - started
    result.machine_cpu, result.server_cpu = after[0] - before[0], after[1] - before[1]


def one_process(plan: Path, server: Server) -> Measured:
    with measured(server) as result:
        run = run_timed([*cli_argv(), "backup", "--plan", str(plan), "--json"], server.env).check("lifeline backup")
        result.record_ids = [json.loads(run.stdout)["id"]]
    return result


def two_workers(root: Path, plan: Path, plan_name: str, server: Server) -> Measured:
    """From starting both sites' runs to both completed; the deploy and the workers' start are not in it."""
    from tests.serve_fixtures import Api, parse_time

    deployed = run_timed([*cli_argv(), "deploy", "--plan", str(plan)], server.env).check("lifeline deploy")
    log(f"deployed in {deployed.seconds:.1f} s")
    api = Api(server.env["PREFECT_API_URL"])
    workers = []
    for site in SITES:
        with open(root / f"worker-{site}.log", "wb") as out:
            workers.append(subprocess.Popen([*cli_argv(), "worker", "--site", site, "--plan", str(plan)],
                                            env=server.env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True))
    try:
        deadline = time.monotonic() + 120
        while not all(any(worker["status"] == "ONLINE" for worker in
                          api.post(f"/work_pools/lifeline-{site}/workers/filter")) for site in SITES):
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not come online")
            time.sleep(0.5)
        deployments = [api.deployment("backup", f"{plan_name}-backup-{site}")["id"] for site in SITES]
        with measured(server) as result:
            created_at = time.time()
            runs = [api.create_run(deployment) for deployment in deployments]
            finished = [api.wait_for_state(run["id"], {"COMPLETED"}, 3600) for run in runs]
        result.pickup = [parse_time(run["start_time"]) - created_at for run in finished]
        result.record_ids = [api.record_id(run["id"], "backup") for run in runs]
        return result
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(30)


def breakdown(result: Measured, ledger_url: str) -> dict[str, float]:
    """Seconds, from the run records: the runs' window, the backups' window (first backup start to last end),
    the backup steps summed, their waits for slots summed, and prune and check summed."""
    from lifeline.tasks.run.ledger import Ledger

    ledger = Ledger(ledger_url)
    records = [ledger.run(record_id) for record_id in result.record_ids]
    steps = [step for record in records for step in record.steps if step.ended_at]
    backups = [step for step in steps if step.name.startswith("backup ")]
    return {
        "runs": (max(record.ended_at for record in records) - min(record.started_at for record in records))
        .total_seconds(),
        "backups window": (max(step.ended_at for step in backups) - min(step.started_at for step in backups))
        .total_seconds(),
        "backup steps, summed": sum(step.seconds or 0 for step in backups),
        "waiting for slots, summed": sum((datetime.fromisoformat(step.detail["held_from"]) - step.started_at)
                                         .total_seconds() for step in steps if step.detail.get("held_from")),
        "prune + check, summed": sum(step.seconds or 0 for step in steps
                                     if step.name.startswith(("prune ", "check ")) and step.status == "completed"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scale_out")
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--mib", type=int, default=20)
    parser.add_argument("--repositories", type=int, default=10)
    options = parser.parse_args(argv)
    total_mib, cpus = options.datasets * options.mib, os.cpu_count() or 1
    results: dict[str, tuple[Measured, dict[str, float]]] = {}
    with bench_tmpdir("scale-out") as root:
        log(f"writing {options.datasets} datasets of {options.mib} MiB")
        folders = make_data(root, options.datasets, options.mib)
        password = root / "restic.pw"
        password.write_text("bench-password-0123456789\n")
        password.chmod(0o600)

        def plan(name: str) -> Path:
            return write_plan(root, name, folders, options.repositories, password)

        log("one after another (bare restic)")
        sequential, sequential_backups = one_after_another(root, folders, options.repositories, password)
        log("one process, the embedded default (background server on SQLite)")
        with lifeline_server(root / "home-sqlite") as server:
            run = one_process(plan("sqlite"), server)
            results["sqlite"] = run, breakdown(run, server.ledger_url)
        for folder in (root, root / "postgres"):  # the cluster's user traverses them
            folder.mkdir(exist_ok=True)
            folder.chmod(0o755)
        postgres = start_postgres_server(root / "postgres")
        try:
            postgres.create_database("prefect")
            url = f"postgresql+asyncpg://{postgres.user}@{postgres.host}:{postgres.port}/prefect"
            with lifeline_server(root / "home-postgres", url, postgres.passfile) as server:
                log("one process, server on PostgreSQL")
                run = one_process(plan("postgres"), server)
                results["postgres"] = run, breakdown(run, server.ledger_url)
                log("two workers (a run per site), server on PostgreSQL")
                run = two_workers(root, plan("pools"), "pools", server)
                results["workers"] = run, breakdown(run, server.ledger_url)
        finally:
            stop_postgres_server(postgres)
    labels = {"sqlite": "lifeline backup, one process, server on SQLite (default)",
              "postgres": "lifeline backup, one process, server on PostgreSQL",
              "workers": "lifeline backup, two workers (a run per site), PostgreSQL"}
    rows: list[list] = [["restic init + backup, one after another", sequential, total_mib / sequential, "1.00x",
                         "1.00x"]]
    for key, label in labels.items():
        run, times = results[key]
        rows.append([label, run.seconds, total_mib / run.seconds, ratio(sequential, run.seconds),
                     ratio(sequential_backups, times["backups window"])])
    print_table(["mode", "seconds", "MiB/s", "speed-up", "speed-up, backups only"], rows,
                title=f"Scale-out: {options.datasets} datasets x {options.mib} MiB over {options.repositories} "
                      f"repositories, {cpus} CPUs",
                notes=["every mode creates its repositories; the lifeline rows also prune and check them (due on a "
                       "first run) and record everything",
                       f"'backups only': the backups alone one after another ({sequential_backups:.1f} s) against "
                       "the window from the first backup step's start to the last one's end"])
    print()
    names = list(results["sqlite"][1])
    table = [[name, *(results[key][1][name] for key in labels)] for name in names]
    table.append(["machine CPU busy (of all CPUs)",
                  *(f"{results[key][0].machine_cpu / (results[key][0].seconds * cpus):.0%}" for key in labels)])
    table.append(["Prefect server CPU (s)", *(results[key][0].server_cpu for key in labels)])
    table.append(["worker pickup, run created -> running (s)", "", "",
                  " / ".join(f"{seconds:.2f}" for seconds in results["workers"][0].pickup)])
    print_table(["where the time goes (s)", "SQLite, one process", "PostgreSQL, one process", "PostgreSQL, workers"],
                table, title="Where the time goes, from the run records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
