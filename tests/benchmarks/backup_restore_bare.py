"""Backup and restore benchmark, its data set and bare restic: what both sides back up and restore, and
the baseline side. Used by backup_restore.py (a helper module, not a benchmark).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.common import run_timed

DATASET = "recordings"
PLAN_NAME = "bench"
CHUNK = 8 << 20


# --- the data set -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    root: Path
    files: int
    bytes: int


def generate_dataset(root: Path, size_bytes: int, small_files: int = 2000, large_files: int = 4,
                     seed: int = 2026) -> DataSet:
    """An eighth of the bytes in up to `small_files` small files (64 KiB on average at 1 GiB) in 40
    folders, the rest in `large_files` large ones. Mersenne Twister bytes: incompressible, repeatable."""
    rng = random.Random(seed)
    small_total = size_bytes // 8
    count = max(1, min(small_files, small_total // 1024))
    average = small_total // count
    sizes = [rng.randint(average // 2, average * 3 // 2) for _ in range(count)]
    large = max(1, large_files)
    large_size = max(0, size_bytes - sum(sizes)) // large
    written = 0
    for index, size in enumerate(sizes):
        folder = root / "calls" / f"day-{index % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"call-{index:05d}.wav").write_bytes(rng.randbytes(size))
        written += size
    (root / "archives").mkdir(parents=True, exist_ok=True)
    for index in range(large):
        with open(root / "archives" / f"month-{index + 1:02d}.tar", "wb") as output:
            remaining = large_size
            while remaining:
                chunk = min(CHUNK, remaining)
                output.write(rng.randbytes(chunk))
                remaining -= chunk
        written += large_size
    return DataSet(root=root, files=count + large, bytes=written)


def measure_tree(root: Path) -> tuple[int, int]:
    files = total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            files, total = files + 1, total + os.lstat(os.path.join(folder, name)).st_size
    return files, total


def expect_restored(root: Path, data: DataSet, who: str) -> None:
    found = measure_tree(root)
    if found != (data.files, data.bytes):
        raise RuntimeError(f"{who}: restored {found[0]} files / {found[1]} bytes, expected {data.files} / {data.bytes}")


# --- bare restic --------------------------------------------------------------------------------


def restic_binary() -> str:
    return os.environ.get("LIFELINE_RESTIC_BINARY", "restic")  # the binary Lifeline's settings would use


def restic_environment(repository: Path, password_file: Path, cache_dir: Path) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("RESTIC_")}
    environment.update(
        RESTIC_REPOSITORY=str(repository), RESTIC_PASSWORD_FILE=str(password_file), RESTIC_CACHE_DIR=str(cache_dir)
    )
    return environment


def restic_init(repository: Path, password_file: Path, scratch: Path) -> None:
    run_timed([restic_binary(), "init"], restic_environment(repository, password_file, scratch / "init-cache")).check(
        "restic init"
    )
    shutil.rmtree(scratch / "init-cache", ignore_errors=True)


def fresh_copy(template: Path, repository: Path) -> None:
    shutil.rmtree(repository, ignore_errors=True)
    shutil.copytree(template, repository)


def bare_backup(environment: dict[str, str], data: DataSet) -> float:
    tags = f"plan={PLAN_NAME},dataset={DATASET}"
    run = run_timed(
        [restic_binary(), "backup", "--json", "--tag", tags, "--host", socket.gethostname(), "--", str(data.root)],
        environment,
    ).check("restic backup")
    summary = [line for line in map(_json_line, run.stdout.splitlines()) if line.get("message_type") == "summary"]
    if not summary or summary[-1].get("total_files_processed") != data.files:
        raise RuntimeError(f"restic backup: unexpected summary {summary[-1:] or run.stdout[-300:]}")
    return run.seconds


def bare_restore(environment: dict[str, str], target: Path, data: DataSet) -> float:
    run = run_timed([restic_binary(), "restore", "latest", "--target", str(target), "--verify"], environment)
    run.check("restic restore")
    expect_restored(target / data.root.relative_to(data.root.anchor), data, "restic restore")
    return run.seconds


def _json_line(line: str) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
