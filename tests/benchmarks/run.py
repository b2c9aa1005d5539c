"""`make bench`: run every benchmark, or the named ones.

    uv run python -m tests.benchmarks.run                     # all that exist
    uv run python -m tests.benchmarks.run backup_restore      # one
    uv run python -m tests.benchmarks.run backup_restore --size-mib 64   # options go to the named ones
    uv run python -m tests.benchmarks.run --list

A benchmark is a module with `main(argv: list[str] | None) -> int`; register it in BENCHMARKS.
Modules are imported only when run, and a registered module that is not written yet is skipped
when running all (naming it explicitly is an error).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import traceback

BENCHMARKS: dict[str, str] = {
    "backup_restore": "tests.benchmarks.backup_restore",
    "fanout": "tests.benchmarks.fanout",
    "failover": "tests.benchmarks.failover",
    "drills": "tests.benchmarks.drills",
    "report": "tests.benchmarks.report",
    "start": "tests.benchmarks.start",
    "notify": "tests.benchmarks.notify",
    "cli_cost": "tests.benchmarks.cli_cost",
    "scale_out": "tests.benchmarks.scale_out",
    "warning": "tests.benchmarks.warning",
    "pitr": "tests.benchmarks.pitr",
    "telephony": "tests.benchmarks.telephony",
}
EXIT_BAD_USAGE = 2


def exists(module_path: str) -> bool:
    try:
        return importlib.util.find_spec(module_path) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def split_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """Leading benchmark names, then everything from the first option on (or after `--`)."""
    names: list[str] = []
    for index, argument in enumerate(argv):
        if argument == "--":
            return names, argv[index + 1:]
        if argument.startswith("-"):
            return names, argv[index:]
        names.append(argument)
    return names, []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv and argv[0] == "--list":
        for name, module_path in BENCHMARKS.items():
            print(f"{name:16} {module_path}{'' if exists(module_path) else '  (not written yet)'}")
        return 0
    names, options = split_arguments(argv)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return EXIT_BAD_USAGE
    missing = [name for name in names if not exists(BENCHMARKS[name])]
    if missing:
        print(f"not written yet: {', '.join(missing)}", file=sys.stderr)
        return EXIT_BAD_USAGE
    selected = names or [name for name, module_path in BENCHMARKS.items() if exists(module_path)]
    for name in BENCHMARKS:
        if not names and name not in selected:
            print(f"[bench] {name}: skipped (not written yet)", file=sys.stderr)

    failed: list[str] = []
    for name in selected:
        print(f"\n== {name} ==", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            code = module.main(list(options))
        except SystemExit as exit_:  # argparse errors and the like
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
        print(f"[bench] {name}: {'ok' if not code else f'failed ({code})'} in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
