"""Repository faults through the `lifeline` command: restic killed mid-backup and mid-prune, stale and live
locks, a full restore target, and a backup, a restore and a check on one repository at once.

Each ends in a clear one-line error or a success, never a silent loss, a retry storm or data overwritten.
Real restic, real file systems, real `lifeline` processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import files_plan, one_line_error, run_cli, tree, wait_for, write_password, write_plan

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def setup(tmp_path, lifeline_home):
    """A plan with one dataset of ~12 MB of incompressible data, so restic takes long enough to be killed."""
    data = tmp_path / "srv" / "recordings"
    (data / "day").mkdir(parents=True)
    for index in range(3):
        (data / "day" / f"call-{index}.wav").write_bytes(os.urandom(4 * 1024 * 1024))
    (data / "notes.txt").write_text("customer called twice\n")
    write_password(tmp_path / "plan" / "restic.pw")
    plan = write_plan(tmp_path / "plan", files_plan(tmp_path / "plan", data, retention={"last": 1}))
    return plan, data


def start_cli(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lifeline.flows.cli", *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=dict(os.environ))


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def restic_child(root: int, verb: str) -> int | None:
    for pid in descendants(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"restic") and verb.encode() in argv:
            return pid
    return None


def restic(plan: Path, *arguments: str, **options) -> subprocess.CompletedProcess:
    """restic itself, as an operator checking the repository would run it."""
    environment = {**os.environ, "RESTIC_REPOSITORY": str(plan.parent / "repo"),
                   "RESTIC_PASSWORD_FILE": str(plan.parent / "restic.pw"),
                   "RESTIC_CACHE_DIR": str(plan.parent / "cache")}
    return subprocess.run(["restic", *arguments], env=environment, capture_output=True, text=True,
                          stdin=options.pop("stdin", subprocess.DEVNULL), **options)


def locks(plan: Path) -> list[Path]:
    """restic's lock files (not the temporary files its local backend writes them through)."""
    return sorted(path for path in (plan.parent / "repo" / "locks").iterdir() if "-tmp-" not in path.name)


def snapshots(plan: Path) -> list[dict]:
    listing = restic(plan, "snapshots", "--json", "--no-lock")
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)


def assert_every_snapshot_whole(plan: Path, data: Path) -> None:
    """restic check reads back 100% of the data, and each snapshot lists every file of the dataset."""
    checked = restic(plan, "check", "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    wanted = {str(path) for path in data.rglob("*") if path.is_file()}
    for snapshot in snapshots(plan):
        listed = restic(plan, "ls", "--json", "--no-lock", snapshot["id"])
        files = {node["path"] for line in listed.stdout.splitlines()
                 if (node := json.loads(line)).get("type") == "file"}
        assert wanted <= files, f"snapshot {snapshot['id'][:8]} is half-made: lacks {sorted(wanted - files)[:3]}"


def kill_restic_of(process: subprocess.Popen, verb: str, after: float = 0.3) -> int:
    pid = wait_for(lambda: restic_child(process.pid, verb) or process.poll() is not None, 120,
                   f"restic {verb} to start", poll=0.05)
    assert pid is not True, f"lifeline ended before restic {verb} started: {process.communicate()}"
    time.sleep(after)
    os.kill(pid, signal.SIGKILL)
    return pid


def test_restic_killed_mid_backup_fails_clearly_and_the_next_backup_succeeds(setup):
    plan, data = setup
    victim = start_cli("backup", "--plan", str(plan), "--json")
    kill_restic_of(victim, "backup")
    code, out, err = finish(victim)
    if code != 0:  # a killed restic is not transient: one clear line, no retry
        message = one_line_error(err)
        assert "backup" in message and "local" in message and "killed by SIGKILL" in message, message
        print(f"killed backup: {message}")
        record = json.loads(out)
        step = next(s for s in record["steps"] if s["name"] == "backup recordings")
        assert step["status"] == "failed" and step["attempts"] == 1
    assert snapshots(plan) == [] or code == 0

    result = run_cli("backup", "--plan", str(plan), "--json")
    assert result.returncode == 0, result.stderr  # the killed run's stale lock did not block it
    assert len(snapshots(plan)) >= 1
    assert locks(plan) == []
    assert_every_snapshot_whole(plan, data)


def test_restic_killed_mid_prune_leaves_a_repository_that_checks_clean(setup):
    plan, data = setup
    assert run_cli("backup", "--plan", str(plan)).returncode == 0
    (data / "day" / "call-0.wav").write_bytes(os.urandom(4 * 1024 * 1024))  # the old one becomes prunable
    victim = start_cli("backup", "--plan", str(plan), "--maintain", "--json")
    kill_restic_of(victim, "prune", after=0.2)
    code, out, err = finish(victim)
    assert code != 0
    message = one_line_error(err)
    assert "prune" in message and "local" in message and "killed by SIGKILL" in message, message
    print(f"killed prune: {message}")
    assert restic(plan, "unlock").returncode == 0  # restic's own rule: the killed prune's lock is stale
    checked = restic(plan, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    again = run_cli("backup", "--plan", str(plan), "--maintain", "--json")
    assert again.returncode == 0, again.stderr
    assert locks(plan) == []
    assert_every_snapshot_whole(plan, data)


def test_a_dead_processs_lock_is_removed_and_a_live_one_is_waited_for(setup):
    plan, data = setup
    assert restic(plan, "init").returncode == 0
    dead = subprocess.Popen(["restic", "backup", "--stdin", "--stdin-filename", "dead.out"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RESTIC_REPOSITORY": str(plan.parent / "repo"),
                                 "RESTIC_PASSWORD_FILE": str(plan.parent / "restic.pw")})
    wait_for(lambda: locks(plan), 30, "the doomed backup's lock")
    dead.kill()
    dead.wait()
    dead.stdin.close()
    [stale] = locks(plan)
    # A live backup of another run holds a lock too, for ~4 s.
    live = subprocess.Popen(["restic", "backup", "--stdin", "--stdin-filename", "live.out"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RESTIC_REPOSITORY": str(plan.parent / "repo"),
                                 "RESTIC_PASSWORD_FILE": str(plan.parent / "restic.pw")})
    wait_for(lambda: len(locks(plan)) == 2, 30, "the live backup's lock")
    [live_lock] = [lock for lock in locks(plan) if lock != stale]
    maintain = start_cli("backup", "--plan", str(plan), "--maintain", "--json")
    wait_for(lambda: not stale.exists() or maintain.poll() is not None, 60, "the stale lock removed")
    assert live_lock.exists() and live.poll() is None  # the live lock was left alone
    time.sleep(2)
    assert live_lock.exists() and maintain.poll() is None  # prune waits its turn
    live.stdin.write(b"live data")
    live.stdin.close()
    assert live.wait(30) == 0
    code, out, err = finish(maintain)
    assert code == 0, err
    steps = {s["name"]: s for s in json.loads(out)["steps"]}
    assert all(steps[name]["status"] == "completed" for name in ("prune local", "check local"))
    print("live lock: attempts", {name: steps[name]["attempts"] for name in ("retention recordings", "prune local")})
    assert 1 < max(steps[name]["attempts"] for name in ("retention recordings", "prune local")) <= 4
    assert any(s["paths"] == ["/live.out"] for s in snapshots(plan))  # the live backup's snapshot was kept
    assert locks(plan) == []


@pytest.fixture
def small_mount(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        image = tmp_path / "small.img"
        subprocess.run(["truncate", "-s", "4M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
        mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"neither tmpfs nor a loop mount is allowed here: {mounted.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_restore_onto_a_full_disk_fails_clearly_and_touches_nothing(setup, small_mount):
    plan, _ = setup
    assert run_cli("backup", "--plan", str(plan)).returncode == 0
    target = small_mount / "recordings"
    target.mkdir()
    (target / "today.wav").write_bytes(b"today's calls " * 1000)
    before = tree(small_mount)
    started = time.monotonic()
    result = run_cli("restore", "recordings", "--plan", str(plan), "--target", str(target), "--replace")
    assert result.returncode != 0
    message = one_line_error(result.stderr)
    assert "no space" in message.lower() and str(target) in message, message
    print(f"full disk: {message}")
    assert time.monotonic() - started < 30  # a full disk is not retried
    assert tree(small_mount) == before  # nothing overwritten, moved or deleted; no staging left behind


def test_backup_restore_and_check_on_one_repository_at_once_all_succeed(setup, tmp_path):
    plan, data = setup
    assert run_cli("backup", "--plan", str(plan)).returncode == 0
    target = tmp_path / "drill-target"
    processes = {
        "backup": start_cli("backup", "--plan", str(plan), "--json"),
        "restore": start_cli("restore", "recordings", "--plan", str(plan), "--target", str(target), "--json"),
        "check": start_cli("backup", "--plan", str(plan), "--maintain", "--json"),
    }
    results = {name: finish(process) for name, process in processes.items()}
    for name, (code, _, err) in results.items():
        assert code == 0, f"{name}: {err[-2000:]}"
        assert "locked" not in err.lower(), name
    assert tree(target) == tree(data)
    assert locks(plan) == []
    assert_every_snapshot_whole(plan, data)


@pytest.fixture
def moto(tmp_path):
    """A real moto server on loopback (no authentication), started as its own process so it can be frozen."""
    from tests.servers import free_port

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        wait_for(lambda: _try(lambda: client.create_bucket(Bucket="cc-offsite")), 30, "moto to answer")
        yield server, f"s3:http://127.0.0.1:{port}/cc-offsite"
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(10)


def _try(call) -> bool:
    try:
        call()
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return True


@pytest.mark.soak
def test_s3_frozen_for_30_seconds_during_the_offsite_copy(setup, moto, tmp_path):
    plan, data = setup
    server, url = moto
    document = files_plan(plan.parent, data, retention={"last": 1}, copy_to=["offsite"])
    (plan.parent / "aws.env").write_text("AWS_ACCESS_KEY_ID=test\nAWS_SECRET_ACCESS_KEY=test\n")
    (plan.parent / "aws.env").chmod(0o600)
    document["repositories"]["offsite"] = {"url": url, "password_file": "./restic.pw", "init": True,
                                           "environment_file": "./aws.env"}
    write_plan(plan.parent, document)
    run = start_cli("backup", "--plan", str(plan), "--json")
    wait_for(lambda: restic_child(run.pid, "copy") or run.poll() is not None, 120, "the off-site copy to start",
             poll=0.05)
    os.kill(server.pid, signal.SIGSTOP)  # S3 stops answering: connections hang, nothing is refused
    try:
        time.sleep(30)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    code, out, err = finish(run, timeout=300)
    record = json.loads(out)
    copy = next(s for s in record["steps"] if s["name"] == "copy recordings to offsite")
    if code == 0:
        assert copy["status"] == "completed"
    else:
        message = one_line_error(err)
        assert "offsite" in message, message
    local = snapshots(plan)
    assert len(local) == 1  # the local snapshot stays, whatever S3 did
    offsite = subprocess.run(["restic", "snapshots", "--json", "--no-lock"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL,
                             env={**os.environ, "RESTIC_REPOSITORY": url, "AWS_ACCESS_KEY_ID": "test",
                                  "AWS_SECRET_ACCESS_KEY": "test", "RESTIC_PASSWORD_FILE": str(plan.parent / "restic.pw")})
    if code == 0:
        assert offsite.returncode == 0 and len(json.loads(offsite.stdout)) == 1, offsite.stderr
    print(f"S3 outage: exit {code}, copy attempts {copy['attempts']}, {err.strip().splitlines()[-1:]}")
