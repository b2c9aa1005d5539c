"""Warning benchmark: from a CAP warning's POST to intake to the preparedness run's `ready` milestone
(a fresh off-site snapshot, the DR site's preflight READY, leadership notified), each part broken out.

    uv run python -m tests.benchmarks.run warning [--runs 3]

One lab on free ports with its Prefect server (as `drills` does), one untimed backup, then `lifeline serve`
and `lifeline intake` as the operator runs them. Each run posts a new CAP warning (status Exercise, so the
public text needs no person) for main's area and reads the alert run's record:

- intake answers: POST to 202;
- pickup: 202 to the alert run's record opening (the served runner polls every 0.25 s);
- off-site snapshot: the record opening to `offsite_snapshot` (backup of the critical datasets, copied);
- preflight: to `preflight_ready`; notify: to `notified` (every recipient's delivery recorded); then `ready`.

Side by side, in the same run, the off-site snapshot alone done by hand with restic and pg_dump, one command
after another (backup of each critical dataset to the local repository, then `restic copy` of both to the
off-site one): what preparedness costs beyond the data it must move.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from lifeline.tasks.adapters.deadline import wait_until

from tests.benchmarks.common import bench_tmpdir, log, median, print_table, quiet_prefect_environment, spread
from tests.benchmarks.lab import LabRun, backed_up_lab

POLL_SECONDS = 0.05


def start(argv: list[str], log_file: Path) -> subprocess.Popen:
    with open(log_file, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=os.environ.copy(), start_new_session=True)


def serve_and_intake(lab: LabRun, root: Path) -> tuple[list[subprocess.Popen], str]:
    from lifeline.configs.loading import load_plan

    cli = [sys.executable, "-m", "lifeline.flows.cli"]
    intake = load_plan(lab.plan).plan.intake
    url = f"http://{intake.host}:{intake.port}"
    processes = [start([*cli, "serve", "--plan", str(lab.plan)], root / "serve.log"),
                 start([*cli, "intake", "--plan", str(lab.plan)], root / "intake.log")]

    if not wait_until(lambda: healthy(url) and served(lab), timeout=120, interval=0.2):
        raise RuntimeError("lifeline serve and lifeline intake: not up within 120 s")
    return processes, f"{url}/v1/alerts/cap"


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def served(lab: LabRun) -> bool:
    from lifeline.configs.loading import load_plan
    from prefect.client.orchestration import get_client

    name = load_plan(lab.plan).plan.name
    try:
        with get_client(sync_client=True) as client:
            return client.read_deployment_by_name(f"alert/{name}-alert").status.value == "READY"
    except Exception:  # noqa: BLE001 - not registered yet
        return False


def post_warning(lab: LabRun, url: str) -> dict:
    from lifeline.configs.loading import load_plan
    from lifeline.configs.settings import load_settings
    from lifeline.tasks.adapters.alerts.cap import compose_cap
    from lifeline.tasks.adapters.alerts.posting import post_alert
    from lifeline.tasks.run.ledger import Ledger

    plan = load_plan(lab.plan).plan
    warning = compose_cap(identifier=f"bench-{uuid.uuid4().hex[:8]}", sender="bench@localhost",
                          sent=datetime.now(UTC).replace(microsecond=0), headline="Benchmark: typhoon warning",
                          area="main", geocodes=plan.sites["main"].area.geocode_pairs())
    posted_at, started = datetime.now(UTC), time.perf_counter()
    _, answer = post_alert(url, plan.intake.token_file.read_text().strip(), warning)
    answered = time.perf_counter() - started
    ledger = Ledger(load_settings().ledger)
    deadline = time.monotonic() + 300
    while True:
        record = ledger.run(answer["run_id"])
        if record is not None and ("ready" in record.milestones or record.status != "running"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"alert run {answer['run_id']} not ready within 300 s")
        time.sleep(POLL_SECONDS)
    if "ready" not in record.milestones:
        raise RuntimeError(f"alert run {record.id} ended {record.status}: {record.error}")
    marks = record.milestones

    def since(earlier: datetime, later: datetime) -> float:
        return (later - earlier).total_seconds()

    def window(prefix: str) -> float:
        """First start to last end of the steps named `prefix...`: how long that part held the run up."""
        steps = [step for step in record.steps if step.name.startswith(prefix) and step.ended_at]
        return since(min(step.started_at for step in steps), max(step.ended_at for step in steps)) if steps else 0.0

    return {"intake": answered, "pickup": since(posted_at, record.started_at) - answered,
            "prepare": window("prepare "), "backups": window("backup "), "copies": window("copy "),
            "offsite": since(record.started_at, marks["offsite_snapshot"]),
            "preflight": since(marks["offsite_snapshot"], marks["preflight_ready"]),
            "notify": since(marks["preflight_ready"], marks["notified"]),
            "ready": since(posted_at, marks["ready"])}


def by_hand(lab: LabRun) -> float:
    """The off-site snapshot of the same datasets with restic and pg_dump, one command after another."""
    from lifeline.configs.loading import load_plan
    from lifeline.configs.settings import load_settings
    from lifeline.tasks.steps.preparedness import critical_datasets
    from lifeline.tasks.steps.repositories import open_repository

    plan, settings = load_plan(lab.plan).plan, load_settings()
    names = critical_datasets(plan, plan.preparedness["weather"])
    started = time.perf_counter()
    snapshots: dict[str, list[str]] = {}
    for name in names:
        dataset = plan.datasets[name]
        repository = open_repository(plan, dataset.repository, settings)
        environment = {**os.environ, **{k: v for k, v in repository.restic_environment().items() if v is not None}}
        if dataset.paths:
            backup = subprocess.run(["restic", "backup", "-q", "--json", *map(str, dataset.paths)], env=environment,
                                    capture_output=True, text=True, check=True)
        else:
            dump = subprocess.Popen(["pg_dump", "--format=custom", "-d", dataset.postgres.dsn], stdout=subprocess.PIPE,
                                    env={**os.environ, "PGPASSFILE": str(dataset.postgres.passfile)})
            backup = subprocess.run(["restic", "backup", "-q", "--json", "--stdin", "--stdin-filename", f"{name}.dump"],
                                    stdin=dump.stdout, env=environment, capture_output=True, text=True, check=True)
            dump.stdout.close()
            if dump.wait() != 0:
                raise RuntimeError("pg_dump failed")
        messages = [json.loads(line) for line in backup.stdout.splitlines() if line.startswith("{")]
        snapshot = [message for message in messages if message.get("message_type") == "summary"][-1]["snapshot_id"]
        for target in dataset.copy_to:
            snapshots.setdefault(f"{dataset.repository}>{target}", []).append(snapshot)
    for route, ids in snapshots.items():
        source_name, target_name = route.split(">")
        source, target = (open_repository(plan, n, settings) for n in (source_name, target_name))
        environment = {**os.environ, **{k: v for k, v in target.restic_environment().items() if v is not None},
                       **target.copy_source_environment(source)}
        subprocess.run(["restic", "copy", "-q", *ids], env=environment, capture_output=True, text=True, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warning", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args(argv)
    quiet_prefect_environment()
    parts: dict[str, list[float]] = {name: [] for name in ("intake", "pickup", "offsite", "prepare", "backups", "copies",
                                                           "preflight", "notify", "ready")}
    hand: list[float] = []
    with bench_tmpdir("lifeline-bench-warning-") as root, backed_up_lab(root) as lab:
        processes, url = serve_and_intake(lab, root)
        try:
            post_warning(lab, url)  # warm-up: the first run imports and connects (not counted)
            for number in range(1, arguments.runs + 1):
                hand.append(by_hand(lab))
                measured = post_warning(lab, url)
                for name, seconds in measured.items():
                    parts[name].append(seconds)
                log(f"run {number}: ready {measured['ready']:.2f} s (by hand, the off-site copy alone: {hand[-1]:.2f} s)")
        finally:
            for process in processes:
                os.killpg(process.pid, 15)
                process.wait(20)
    rows = [
        ["POST -> intake answers 202", median(parts["intake"]), spread(parts["intake"])],
        ["202 -> alert run starts (pickup)", median(parts["pickup"]), spread(parts["pickup"])],
        ["off-site snapshot (backup + copy)", median(parts["offsite"]), spread(parts["offsite"])],
        ["  of which: repositories opened (prepare)", median(parts["prepare"]), spread(parts["prepare"])],
        ["  of which: backups, both at once", median(parts["backups"]), spread(parts["backups"])],
        ["  of which: copies, each as its backup ends", median(parts["copies"]), spread(parts["copies"])],
        ["preflight of dr READY", median(parts["preflight"]), spread(parts["preflight"])],
        ["liaison and leadership notified", median(parts["notify"]), spread(parts["notify"])],
        ["POST -> ready (total)", median(parts["ready"]), spread(parts["ready"])],
        ["by hand: restic + pg_dump, off-site copy only", median(hand), spread(hand)],
    ]
    ratio = median(parts["ready"]) / median(hand)
    offsite = median(parts["offsite"]) / median(hand)
    print_table(["part", "median s", "range"], rows, title="From a CAP warning to ready (lab, exercise warnings)",
                notes=[f"{arguments.runs} run(s) after one warm-up; ready / by hand = {ratio:.2f}x, off-site snapshot / "
                       f"by hand = {offsite:.2f}x (by hand moves the same data but records, checks and tells nothing).",
                       "The parts of the off-site snapshot overlap: backups start while the off-site repository is "
                       "being opened, copies as each backup ends."])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
