"""`make soak` part 2: two hours of a call centre's life compressed into 20 minutes, on the lab.

    uv run python -m tests.reliability.soak                 # 20 minutes
    uv run python -m tests.reliability.soak --minutes 5     # shorter

`lifeline serve` serves the plan to a Prefect server, with the schedules squeezed: the nightly backup every
minute, a drill (the most overdue scenario) every 3 minutes; a service verification is started through its
deployment every 10 s; the lab's callers place 20 calls/s. Every 15 s the soak samples the resident memory and
open file descriptors of `serve` itself and of the flow-run processes it starts (its workers here: a served
deployment runs each flow run as a child process), and the ledger's size. At the end it prints the runs
completed and failed by kind, the failures by cause, and the growth of memory, descriptors and the ledger.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from lifeline.infra.lab.processes import process_tree, resident_kib
from lifeline.tasks.run.record import RunRecord

from tests.benchmarks.common import bench_tmpdir, log, print_table
from tests.benchmarks.lab import backed_up_lab

SCHEDULES = {"backup": "* * * * *", "drill": "*/3 * * * *", "verify": None}
VERIFY_EVERY_SECONDS = 10.0
SAMPLE_EVERY_SECONDS = 15.0
CALL_RATE = 20.0
WARM_AFTER_SECONDS = 60.0


@dataclass
class Sample:
    at: float  # seconds since the soak began
    serve_rss_mib: float
    serve_fds: int
    workers: int
    workers_rss_mib: float
    workers_fds: int
    ledger_bytes: int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    options = parser.parse_args(argv)
    if options.minutes <= 0:
        print(f"soak: --minutes: must be more than 0, not {options.minutes}", file=sys.stderr)
        return 2
    with bench_tmpdir("lifeline-soak-") as root, backed_up_lab(root, call_rate=CALL_RATE) as lab_run:
        from tests.lab_fixtures import FreshBackups, Lab

        fresh = FreshBackups(Lab(lab_run.home), taken_at=time.monotonic())
        fresh.ensure()  # the WAL archive, as preflight wants
        fresh.ensure_pitr_backup()  # what the logical-corruption drill restores from
        plan = squeezed_plan(lab_run.plan)
        began_at = datetime.now(UTC)
        samples, verifies_started = soak(plan, root, options.minutes * 60)
        report(began_at, samples, verifies_started, options.minutes)
    return 0


def squeezed_plan(plan: Path) -> Path:
    document = yaml.safe_load(plan.read_text(encoding="utf-8"))
    document["schedules"] = SCHEDULES
    squeezed = plan.with_name("plan-soak.yaml")  # beside the lab's plan: its relative paths still hold
    squeezed.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return squeezed


def soak(plan: Path, root: Path, seconds: float) -> tuple[list[Sample], int]:
    from lifeline.configs.loading import load_plan
    from lifeline.configs.settings import load_settings

    name = load_plan(plan).plan.name
    ledger_file = Path(load_settings().ledger.removeprefix("sqlite:///"))
    with open(root / "serve.log", "wb") as serve_log:
        serve = subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", "serve", "--plan", str(plan)],
                                 stdout=serve_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    samples: list[Sample] = []
    stop = threading.Event()
    started = time.monotonic()
    sampler = threading.Thread(target=sample_until, args=(stop, serve.pid, ledger_file, started, samples), daemon=True)
    sampler.start()
    verifies = 0
    try:
        wait_for_deployment(f"verify/{name}-verify", serve)
        log(f"serving {plan.name}: backup every minute, a drill every 3 minutes, verify every 10 s, "
            f"{CALL_RATE:g} calls/s, for {seconds / 60:g} minutes")
        next_verify, logged_minute = time.monotonic(), -1
        while time.monotonic() - started < seconds:
            if serve.poll() is not None:
                raise RuntimeError(f"lifeline serve ended ({serve.returncode}); see {root / 'serve.log'}")
            if time.monotonic() >= next_verify:
                start_run(f"verify/{name}-verify")
                verifies += 1
                next_verify += VERIFY_EVERY_SECONDS
            minute = int((time.monotonic() - started) // 60)
            if samples and minute > logged_minute:
                logged_minute = minute
                log(f"minute {minute}: serve {samples[-1].serve_rss_mib:.0f} MiB, {samples[-1].serve_fds} fds; "
                    f"{samples[-1].workers} flow-run processes")
            time.sleep(0.5)
    finally:
        stop.set()
        sampler.join(30)
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(30)
    return samples, verifies


def wait_for_deployment(name: str, serve: subprocess.Popen, timeout: float = 300) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise RuntimeError(f"lifeline serve ended ({serve.returncode}) before serving {name}")
        try:
            with get_client(sync_client=True) as client:
                client.read_deployment_by_name(name)
                return
        except Exception:  # noqa: BLE001 - not registered yet
            time.sleep(1)
    raise TimeoutError(f"{name} was not served within {timeout:g} s")


def start_run(deployment: str) -> None:
    from prefect.deployments import run_deployment

    try:
        run_deployment(deployment, timeout=0)
    except Exception as error:  # noqa: BLE001 - counted by what the ledger does not show
        log(f"could not start {deployment}: {error}")


def sample_until(stop: threading.Event, serve_pid: int, ledger_file: Path, started: float,
                 samples: list[Sample]) -> None:
    while not stop.is_set():
        workers = process_tree(serve_pid)[1:]
        samples.append(Sample(
            at=time.monotonic() - started, serve_rss_mib=resident_kib(serve_pid) / 1024, serve_fds=fds(serve_pid),
            workers=len(workers), workers_rss_mib=sum(resident_kib(pid) for pid in workers) / 1024,
            workers_fds=sum(fds(pid) for pid in workers),
            ledger_bytes=sum(path.stat().st_size for path in ledger_file.parent.glob(ledger_file.name + "*")),
        ))
        stop.wait(SAMPLE_EVERY_SECONDS)


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def keep_records(records: list[RunRecord]) -> Path | None:
    """The soak's home is deleted at its end: a failed run's whole record is kept where it can be read."""
    if not records:
        return None
    folder = Path(tempfile.gettempdir()) / f"lifeline-soak-failed-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        (folder / f"{record.kind}-{record.id}.json").write_text(record.model_dump_json(indent=2), encoding="utf-8")
    return folder


def report(began_at: datetime, samples: list[Sample], verifies_started: int, minutes: float) -> None:
    from tests.helpers import ledger

    runs = [record for record in ledger().runs() if record.started_at >= began_at]
    kinds = sorted({record.kind for record in runs})
    print_table(["kind", "runs", "completed", "failed", "cancelled", "still running"], [
        (kind, sum(r.kind == kind for r in runs), *(sum(r.kind == kind and r.status == status for r in runs)
                                                     for status in ("completed", "failed", "cancelled", "running")))
        for kind in kinds], title=f"Soak: {minutes:g} minutes ({minutes / 10:g} hours compressed 6 times), runs by kind",
        notes=[f"verify runs started through the deployment: {verifies_started}"])
    print()
    by_state, failed = prefect_runs(began_at)
    print_table(["deployment", "state", "flow runs"], by_state,
                title="Prefect's flow runs of the soak (a run the one-at-a-time limit cancelled has no Lifeline record)")
    print()
    print_table(["deployment", "Prefect's state message", "flow runs"], failed or [("(none)", "", 0)],
                title="Prefect's failed and crashed flow runs by message (a PITR backup's record is kind backup)")
    causes = Counter(f"{record.kind}: {first_line(record.error)}" for record in runs
                     if record.status in ("failed", "cancelled"))
    print()
    kept = keep_records([record for record in runs if record.status in ("failed", "cancelled")])
    print_table(["cause", "runs"], causes.most_common() or [("(none)", 0)],
                title="Failed and cancelled runs by cause",
                notes=[f"their whole records (steps and details) are kept in {kept}"] if kept else [])
    warm = [sample for sample in samples if sample.at >= WARM_AFTER_SECONDS]  # serve has imported and registered
    if len(warm) >= 2:
        first, last = warm[0], warm[-1]
        hours = (last.at - first.at) / 3600
        print()
        print_table(["measure", "first", "last", "max", "growth per soak hour"], [
            ("serve resident MiB", first.serve_rss_mib, last.serve_rss_mib, max(s.serve_rss_mib for s in samples),
             (last.serve_rss_mib - first.serve_rss_mib) / hours),
            ("serve open fds", first.serve_fds, last.serve_fds, max(s.serve_fds for s in samples),
             (last.serve_fds - first.serve_fds) / hours),
            ("flow-run processes", first.workers, last.workers, max(s.workers for s in samples), None),
            ("flow-run processes' MiB", first.workers_rss_mib, last.workers_rss_mib,
             max(s.workers_rss_mib for s in samples), None),
            ("flow-run processes' fds", first.workers_fds, last.workers_fds, max(s.workers_fds for s in samples), None),
            ("ledger KiB", first.ledger_bytes / 1024, last.ledger_bytes / 1024, max(s.ledger_bytes for s in samples)
             / 1024, (last.ledger_bytes - first.ledger_bytes) / 1024 / hours),
        ], title=f"Growth from minute {first.at / 60:.0f} to {last.at / 60:.0f}, {len(warm)} samples, one every "
                 f"{SAMPLE_EVERY_SECONDS:g} s", digits=1)


def prefect_runs(since: datetime) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """Flow runs by deployment and state, and the failed and crashed ones by deployment and state message."""
    import httpx

    api = os.environ["PREFECT_API_URL"]
    names = {deployment["id"]: deployment["name"] for deployment in
             httpx.post(f"{api}/deployments/filter", json={"limit": 200}, timeout=30).json()}
    counted: Counter[tuple[str, str]] = Counter()
    failed: Counter[tuple[str, str]] = Counter()
    offset = 0
    while True:
        page = httpx.post(f"{api}/flow_runs/filter", timeout=60, json={
            "flow_runs": {"expected_start_time": {"after_": since.isoformat()}}, "limit": 200, "offset": offset}).json()
        counted.update((names.get(run["deployment_id"], "(none)"), run["state_type"]) for run in page)
        failed.update((names.get(run["deployment_id"], "(none)"), first_line((run.get("state") or {}).get("message")))
                      for run in page if run["state_type"] in ("FAILED", "CRASHED"))
        if len(page) < 200:
            return ([(*key, count) for key, count in sorted(counted.items())],
                    [(*key, count) for key, count in failed.most_common()])
        offset += 200


def first_line(text: str | None) -> str:
    return (text or "no error recorded").strip().splitlines()[0][:110]


if __name__ == "__main__":
    sys.exit(main())
