"""The restic adapter against real restic and temporary repositories.

Each restic command pays about 0.7 s of key derivation, so repositories that tests only
add to are shared per module; tests that need a pristine repository make their own.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lifeline.tasks.adapters import restic
from lifeline.tasks.adapters.commands import CommandResult, CommandTimeout, build_environment, run_command, run_pipeline
from lifeline.tasks.adapters.restic import (
    Features,
    ProducerFailed,
    RepositoryLocked,
    RepositoryMissing,
    ResticFailed,
    ResticRepository,
    SnapshotGone,
    WrongPassword,
    backup_arguments,
    check_arguments,
    classify_failure,
    copy_arguments,
    forget_arguments,
    init_arguments,
    ls_arguments,
    parse_restic_time,
    restore_arguments,
    snapshots_arguments,
)

RESTIC = shutil.which("restic")
needs_restic = pytest.mark.skipif(RESTIC is None, reason="restic is not installed")
CANARY = f"canary-{secrets.token_hex(16)}"  # the repository password: must never be seen anywhere


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_server():
    """The adapter knows nothing of Prefect: these tests skip the suite's session server (10-17 s to start)."""
    yield None


@pytest.fixture(autouse=True)
def no_password_anywhere(monkeypatch) -> Iterator[list]:
    """Records every argv, environment override and output the adapter handles; the canary must be in none."""
    seen: list = []

    def recording(real):
        def run(*arguments, **options):
            seen.append((arguments, options.get("env"), options.get("producer_env"), options.get("consumer_env")))
            result = real(*arguments, **options)
            seen.append(result)
            return result

        return run

    monkeypatch.setattr(restic, "run_command", recording(restic.run_command))
    monkeypatch.setattr(restic, "run_pipeline", recording(restic.run_pipeline))
    yield seen
    for item in seen:
        assert CANARY not in repr(item)


def assert_clean(error: BaseException, repository_name: str) -> None:
    message = str(error)
    assert CANARY not in message and CANARY not in repr(error.args)
    assert repository_name in message and "\n" not in message


def make_repository(folder: Path, name: str, password_file: Path, **options) -> ResticRepository:
    return ResticRepository(
        name=name, url=str(folder / "repo"), password_file=password_file, cache_dir=folder / "cache", **options
    )


@pytest.fixture(scope="module")
def password_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "restic.pw"
    path.write_text(CANARY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def shared(tmp_path_factory, password_file) -> ResticRepository:
    """restic init costs about 3 s (key calibration): one repository for all tests that only add to it."""
    repository = make_repository(tmp_path_factory.mktemp("shared"), "shared-local", password_file)
    assert not repository.exists()
    repository.init()
    assert repository.exists()
    return repository


def write_tricky_tree(root: Path) -> Path:
    (root / "with space" / "nested" / "deeper").mkdir(parents=True)
    (root / "录音 2026-11-28.wav").write_bytes(secrets.token_bytes(70_000))
    (root / "with space" / "nested" / "deeper" / "note.txt").write_text("call 4711 → callback\n")
    (root / "empty.bin").write_bytes(b"")
    (root / "link to recording").symlink_to("录音 2026-11-28.wav")
    (root / "link to folder").symlink_to("with space")
    return root


def tree_listing(root: Path) -> dict[str, tuple[str, bytes | str]]:
    listing: dict[str, tuple[str, bytes | str]] = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                listing[key] = ("link", os.readlink(path))
            elif path.is_dir():
                listing[key] = ("dir", "")
            else:
                listing[key] = ("file", path.read_bytes())
    return listing


@pytest.fixture(scope="module")
def tree_backup(tmp_path_factory, shared) -> tuple[Path, restic.BackupSummary, list[tuple[float, int]]]:
    source = write_tricky_tree(tmp_path_factory.mktemp("source"))
    progress: list[tuple[float, int]] = []
    summary = shared.backup([source], tags=["dataset=recordings"], on_progress=lambda *report: progress.append(report))
    return source, summary, progress


def start_stdin_backup(repository: ResticRepository, tag: str) -> subprocess.Popen:
    """A real restic backup holding its lock until its stdin closes; returns once restic reports progress."""
    process = subprocess.Popen(
        [repository.binary, *backup_arguments(stdin_filename="held.bin", tags=[tag])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=build_environment(repository.restic_environment()),
    )
    assert process.stdout is not None
    assert b'"message_type":"status"' in process.stdout.readline()  # the lock is written by now
    return process


# --- pure parts ---------------------------------------------------------------------------------


def test_argument_builders_are_pure_and_carry_no_secret(password_file):
    argvs = [
        backup_arguments(["/srv/录音 a", "-odd"], exclude=["*.tmp"], tags=["plan=x", "dataset=r"], host="h",
                         time=datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)),
        backup_arguments(stdin_filename="crm.sql", tags=["dataset=crm"]),
        forget_arguments(["dataset=r"], {"daily": 7, "weekly": 4, "monthly": 0}),
        check_arguments("5%"), copy_arguments(["abc"]), init_arguments(True),
        restore_arguments("abc", "/staging", verify=True), snapshots_arguments(["dataset=r"]), ls_arguments("abc"),
    ]
    repository = ResticRepository(name="n", url="s3:http://k:v@h/b", password_file=password_file, cache_dir=Path("/c"))
    for argv in argvs:
        assert all(isinstance(part, str) for part in argv)
        assert CANARY not in " ".join(argv) and str(password_file) not in " ".join(argv)
        assert repository.url not in " ".join(repository.argv(argv))
    assert argvs[0][-3:] == ("--", "/srv/录音 a", "-odd")  # a path starting with "-" is not an option
    assert ("--tag", "plan=x,dataset=r") == argvs[0][argvs[0].index("--tag"):][:2]
    assert argvs[2] == ("forget", "--json", "--tag", "dataset=r", "--group-by", "host,tags",
                        "--keep-daily", "7", "--keep-weekly", "4")
    assert argvs[1][:5] == ("backup", "--json", "--stdin", "--stdin-filename", "crm.sql")
    assert repository.display_url == "s3:http://h/b"
    environment = repository.restic_environment()
    assert environment["RESTIC_PASSWORD_FILE"] == str(password_file) and "RESTIC_PASSWORD" not in {
        name for name, value in environment.items() if value is not None}


def test_forget_never_runs_without_a_tag_or_a_policy():
    with pytest.raises(ValueError, match="every snapshot"):
        forget_arguments([], {"daily": 7})
    with pytest.raises(ValueError, match="keeps nothing"):
        forget_arguments(["dataset=r"], {"daily": 0})
    with pytest.raises(ValueError):
        backup_arguments(["/a"], stdin_filename="x")


def test_password_never_accepted_as_an_environment_variable(password_file):
    with pytest.raises(ValueError, match="password_file"):
        ResticRepository(name="n", url="/r", password_file=password_file, cache_dir=Path("/c"),
                         environment={"RESTIC_PASSWORD": "x"})


@pytest.mark.parametrize(
    ("returncode", "stderr", "kind", "transient"),
    [
        (1, "Fatal: wrong password or no key found\n", WrongPassword, False),
        (12, '{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"}',
         WrongPassword, False),
        (1, "Fatal: unable to open config file: stat /r/config: no such file or directory\n"
            "Is there a repository at the following location?\n/r\n", RepositoryMissing, False),
        (10, "Fatal: repository does not exist: unable to open config file\n", RepositoryMissing, False),
        (1, "unable to create lock in backend: repository is already locked by PID 7 on vm by root (UID 0, GID 0)\n"
            "lock was created at 2026-11-28 21:40:13 (2s ago)\nstorage ID 537659aa\n"
            "the `unlock` command can be used to remove stale locks\n", RepositoryLocked, True),
        (11, "Fatal: repository is already locked exclusively by PID 7\n", RepositoryLocked, True),
        (1, 'Fatal: unable to open config file: Stat: Get "http://127.0.0.1:1/b/?location=": dial tcp 127.0.0.1:1: '
            "connect: connection refused\nIs there a repository at the following location?\n", ResticFailed, True),
        (1, "Fatal: Save(<data/1234>) returned error: 503 Service Unavailable\n", ResticFailed, True),
        (1, "Fatal: unable to open config file: Stat: The specified bucket does not exist\n"
            "Is there a repository at the following location?\ns3:http://127.0.0.1:9000/cc\n",
         RepositoryMissing, False),
        (1, "Fatal: unable to open config file: open /r/config: permission denied\n"
            "Is there a repository at the following location?\n/r\n", ResticFailed, False),
        (1, "Fatal: unable to create lock in backend: repository is already locked by PID 503 on vm by root\n",
         RepositoryLocked, True),
        (1, "Fatal: no such file or directory: /srv/x (PID 503 on vm)\n", ResticFailed, False),
        (1, 'Fatal: invalid id "7c99": no matching ID found for prefix "7c99"\n', SnapshotGone, False),
    ],
)
def test_one_function_classifies_every_failure(returncode, stderr, kind, transient):
    result = CommandResult(("restic", "snapshots"), returncode, b"", stderr.encode())
    error = classify_failure(result, operation="snapshots", repository="offsite")
    assert type(error) is kind and error.transient is transient
    assert str(error).startswith("restic snapshots on repository 'offsite' failed: ") and "\n" not in str(error)
    assert "Is there a repository" not in str(error) and "Fatal:" not in str(error)


def test_features_follow_the_version_and_times_parse():
    assert not Features((0, 14, 0)).json_restore and not Features((0, 17, 0)).json_restore
    assert Features((0, 17, 1)).json_restore and Features((0, 18, 1)).json_restore
    moment = parse_restic_time("2026-11-28T21:40:13.259067162+08:00")
    assert moment == datetime(2026, 11, 28, 13, 40, 13, 259067, tzinfo=UTC)


def test_commands_drain_both_pipes_and_time_out_whole_groups(tmp_path):
    noisy = ["sh", "-c", "head -c 3000000 /dev/zero >&2; printf 'a\\nb\\n'; exit 4"]
    lines: list[str] = []
    result = run_command(noisy, on_line=lines.append)
    assert (result.returncode, len(result.stderr), lines) == (4, 3_000_000, ["a", "b"])
    assert run_command(["sh", "-c", "printf \"${X-unset}\""], env={"X": None}).stdout == b"unset"
    piped = run_pipeline(["sh", "-c", "head -c 2000000 /dev/zero; head -c 300000 /dev/zero >&2; exit 3"],
                         ["wc", "-c"], producer_env={}, consumer_env={})
    assert (piped.producer.returncode, len(piped.producer.stderr), piped.consumer.stdout.strip()) == (
        3, 300_000, b"2000000")
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        run_command(["sh", "-c", "sleep 30 & wait"], timeout=0.3)
    assert time.monotonic() - started < 3


# --- real restic --------------------------------------------------------------------------------


@needs_restic
def test_restic_version_is_read_and_cached():
    assert restic.restic_version(RESTIC) >= (0, 14, 0)
    assert restic.restic_version(RESTIC) is restic.restic_version(RESTIC)


@needs_restic
def test_nothing_but_init_creates_a_repository(tmp_path, password_file):
    repository = make_repository(tmp_path, "fresh", password_file)
    assert not repository.exists()
    for operation in (repository.snapshots, repository.check, lambda: repository.backup([tmp_path])):
        with pytest.raises(RepositoryMissing) as missing:
            operation()
        assert not missing.value.transient
        assert_clean(missing.value, "fresh")
    assert not (tmp_path / "repo").exists()  # init itself is exercised by the `shared` fixture


@needs_restic
def test_backup_and_verified_restore_round_trip(tmp_path, shared, tree_backup):
    source, summary, progress = tree_backup
    assert len(summary.snapshot_id) == 64 and summary.short_id == summary.snapshot_id[:8]
    assert summary.total_files_processed == 3 and summary.total_bytes_processed > 70_000 and not summary.warnings
    assert progress and all(0.0 <= fraction <= 1.0 for fraction, _ in progress)
    shared.restore(summary.snapshot_id, tmp_path / "staging", verify=True)
    restored = tree_listing(tmp_path / "staging" / source.relative_to("/"))
    assert sum(kind == "file" for kind, _ in restored.values()) == 3
    assert restored == tree_listing(source)
    nodes = {node.path.rsplit("/", 1)[-1]: node for node in shared.ls(summary.snapshot_id)}
    assert nodes["录音 2026-11-28.wav"].size == 70_000 and nodes["empty.bin"].type == "file"
    assert nodes["link to recording"].type == "symlink" and nodes["deeper"].type == "dir"
    snapshot = shared.snapshot(summary.short_id)
    assert snapshot.id == summary.snapshot_id and snapshot.time.tzinfo is not None
    assert snapshot.tags == ("dataset=recordings",) and snapshot.paths == (str(source),)


@needs_restic
def test_backup_from_a_command_and_a_failing_producer_leaves_no_snapshot(tmp_path, shared):
    summary = shared.backup_from_command(["printf", "ivr config\n"], stdin_filename="ivr.tar", tags=["dataset=ivr"])
    assert summary.total_bytes_processed == len("ivr config\n")
    with pytest.raises(ProducerFailed) as failed:
        shared.backup_from_command(
            ["sh", "-c", "head -c 50000 /dev/urandom; echo 'pg_dump: error: connection lost' >&2; exit 1"],
            producer_env={"PGPASSFILE": "/nonexistent"}, stdin_filename="crm.sql", tags=["dataset=crm"],
        )
    assert "sh exited with 1" in str(failed.value) and "connection lost" in str(failed.value)
    assert "forgotten" in str(failed.value) and not failed.value.transient
    assert_clean(failed.value, "shared-local")
    with pytest.raises(ProducerFailed, match="cannot run"):
        shared.backup_from_command(["/nonexistent/pg_dump"], stdin_filename="crm.sql", tags=["dataset=crm"])
    tags = {snapshot.id: snapshot.tags for snapshot in shared.snapshots()}
    assert ("dataset=crm",) not in tags.values() and tags[summary.snapshot_id] == ("dataset=ivr",)


@needs_restic
def test_wrong_password_is_permanent(tmp_path, shared):
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not-the-password\n")
    repository = ResticRepository(name="offsite", url=shared.url, password_file=wrong, cache_dir=shared.cache_dir)
    with pytest.raises(WrongPassword) as error:
        repository.snapshots()
    assert not error.value.transient and "wrong password" in str(error.value)
    assert_clean(error.value, "offsite")


@needs_restic
def test_unreachable_server_is_transient_not_missing(tmp_path, password_file):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repository = ResticRepository(name="remote", url=f"rest:http://127.0.0.1:{port}/", password_file=password_file,
                                  cache_dir=tmp_path / "cache")
    with pytest.raises(ResticFailed) as error:
        repository.snapshots()
    assert error.value.transient and "connection refused" in str(error.value)


@needs_restic
def test_live_lock_is_reported_transient_and_survives_unlock(shared):
    holder = start_stdin_backup(shared, "dataset=lock-holder")
    try:
        with pytest.raises(RepositoryLocked) as locked:
            shared.check()
        assert locked.value.transient and "already locked" in str(locked.value)
        assert_clean(locked.value, "shared-local")
        shared.remove_stale_locks()  # a live process's lock is not stale
        assert any((Path(shared.url) / "locks").iterdir())
    finally:
        holder.communicate(b"held data")
    assert holder.returncode == 0


@needs_restic
def test_killed_backup_leaves_a_stale_lock_that_unlock_removes(shared):
    victim = start_stdin_backup(shared, "dataset=killed")
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    with pytest.raises(RepositoryLocked):
        shared.prune()
    shared.remove_stale_locks()
    assert not any((Path(shared.url) / "locks").iterdir())
    shared.check()


@needs_restic
def test_forget_touches_only_the_tagged_dataset(shared, tree_backup):
    now = datetime.now(UTC)
    jobs = [("retention-a", now - timedelta(hours=2)), ("retention-a", now - timedelta(hours=1)), ("retention-b", now)]
    with ThreadPoolExecutor(len(jobs)) as pool:  # backups share the repository: restic locks them non-exclusively
        made = list(pool.map(lambda job: shared.backup_from_command(
            ["printf", job[0]], stdin_filename="x", tags=[f"dataset={job[0]}"], time=job[1]), jobs))
    forgotten = shared.forget(["dataset=retention-a"], {"last": 1})
    assert forgotten.removed == (made[0].snapshot_id,) and forgotten.kept == (made[1].snapshot_id,)
    after = {snapshot.id for snapshot in shared.snapshots()}
    assert made[0].snapshot_id not in after
    assert {made[1].snapshot_id, made[2].snapshot_id, tree_backup[1].snapshot_id} <= after


@needs_restic
def test_copy_to_a_second_repository(tmp_path, password_file, shared, tree_backup):
    source, summary, _ = tree_backup
    offsite = make_repository(tmp_path, "offsite", password_file)
    offsite.init(copy_chunker_params_from=shared)
    offsite.copy_from(shared, snapshot_ids=[summary.snapshot_id])
    copied = offsite.snapshots(tags=["dataset=recordings"])
    assert len(copied) == 1 and copied[0].paths == (str(source),)


def _unprivileged_runner(folder: Path) -> str:
    """restic as-is when not root; when root (which reads mode-000 files), restic as `nobody`."""
    if os.geteuid() != 0:
        return RESTIC or "restic"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    wrapper = folder / "restic-as-nobody"
    wrapper.write_text(f'#!/bin/sh\nexec {setpriv} --reuid={nobody.pw_uid} --regid={nobody.pw_gid} '
                       f'--clear-groups {RESTIC} "$@"\n')
    wrapper.chmod(0o755)
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, nobody.pw_uid, grp.getgrnam(group).gr_gid)
    return str(wrapper)


@needs_restic
def test_unreadable_file_gives_a_partial_backup_with_a_warning():
    folder = Path(tempfile.mkdtemp(prefix="lifeline-unreadable-"))  # pytest's tmp_path is closed to `nobody`
    try:
        folder.chmod(0o755)
        (folder / "data").mkdir()
        (folder / "data" / "readable.wav").write_bytes(b"ok")
        (folder / "data" / "locked away.wav").write_bytes(b"secret")
        (folder / "pw").write_text(CANARY)
        binary = _unprivileged_runner(folder)
        (folder / "pw").chmod(0o400)
        (folder / "data" / "locked away.wav").chmod(0o000)
        repository = make_repository(folder, "partial", folder / "pw", binary=binary)
        repository.init()
        summary = repository.backup([folder / "data"], tags=["dataset=partial"])
        assert summary.total_files_processed == 1
        assert len(summary.warnings) == 1 and "locked away.wav" in summary.warnings[0]
        assert "permission denied" in summary.warnings[0].lower() and len(summary.snapshot_id) == 64
    finally:
        shutil.rmtree(folder, ignore_errors=True)
