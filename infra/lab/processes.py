"""Running things for the lab: the lab user, commands, daemons, pid files, liveness, ports.

Daemons are started detached (their own session, stdin from /dev/null, output to a log file in
the lab directory) and tracked by pid files. A pid only counts as ours while the process is alive
(not a zombie) and its command line mentions the lab directory, which protects against pid reuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lifeline.tasks.adapters import daemons
from lifeline.tasks.adapters.daemons import running

IP = "/usr/sbin/ip"
SETPRIV = "/usr/bin/setpriv"
PLAIN_SHELLS = ("/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash", "/bin/dash", "/usr/bin/dash")


class LabError(Exception):
    """The lab could not do what was asked (exit 1)."""


class LabUsageError(LabError):
    """The request itself is wrong: bad name, missing privilege, port taken (exit 2)."""


def say(message: str) -> None:
    """Progress goes to stderr; stdout is reserved for results."""
    print(f"lab: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class LabUser:
    """The unprivileged account that owns PostgreSQL and is the SSH login user."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        environment = {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
        }
        environment.update(extra or {})
        return environment


def is_root() -> bool:
    return os.geteuid() == 0


def _shadow_password(name: str) -> str | None:
    try:
        for line in Path("/etc/shadow").read_text(encoding="utf-8").splitlines():
            fields = line.split(":")
            if fields and fields[0] == name and len(fields) > 1:
                return fields[1]
    except OSError:
        return None
    return None


def ensure_lab_user(name: str = "lifeline", log: Callable[[str], None] = say) -> LabUser:
    """As root: make sure the system user exists with a plain shell, a home and no locked
    password (sshd with ``UsePAM no`` refuses locked accounts). Without root: the current user."""
    if not is_root():
        entry = pwd.getpwuid(os.geteuid())
        return LabUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        home = _home_for(name)
        log(f"creating system user {name!r} (shell /bin/sh, home {home})")
        run(["/usr/sbin/useradd", "--system", "--user-group", "--shell", "/bin/sh",
             "--home-dir", home, "--password", "*", name])  # '*': no password, yet not locked
        entry = pwd.getpwnam(name)
        _make_home(home, entry)
    if entry.pw_shell not in PLAIN_SHELLS:
        log(f"user {name!r} has shell {entry.pw_shell}; setting /bin/sh for plain-shell logins")
        run(["/usr/sbin/usermod", "--shell", "/bin/sh", name])
    if (_shadow_password(name) or "").startswith("!"):
        log(f"user {name!r} is locked ('!'), which sshd refuses without PAM; setting '*' (no password)")
        run(["/usr/sbin/usermod", "--password", "*", name])
    if not Path(entry.pw_dir).is_dir():
        _give_home(entry, log)
    entry = pwd.getpwnam(name)
    return LabUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _home_for(name: str) -> str:
    return f"/var/lib/{name}"


def _make_home(home: str, entry: pwd.struct_passwd) -> None:
    Path(home).mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)


def _give_home(entry: pwd.struct_passwd, log: Callable[[str], None]) -> None:
    """A login user without a home makes sshd print "Could not chdir to home directory" on every
    command's stderr. Give it one if we can (usermod refuses while the user runs processes)."""
    home = _home_for(entry.pw_name)
    completed = run(["/usr/sbin/usermod", "--home", home, entry.pw_name], check=False)
    if completed.returncode != 0:
        log(f"user {entry.pw_name!r} has no home directory ({entry.pw_dir}) and usermod cannot change it now "
            f"({completed.stderr.strip()}); SSH commands will warn on stderr that they cannot chdir there")
        return
    log(f"user {entry.pw_name!r} had no home directory ({entry.pw_dir}); now {home}")
    _make_home(home, entry)


def lab_user_by_name(name: str) -> LabUser:
    entry = pwd.getpwnam(name)
    return LabUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def grant_traverse(path: Path, user: LabUser, log: Callable[[str], None] = say) -> None:
    """Make sure ``user`` can reach ``path``: add the search bit (o+x, never read) on ancestors
    that block it, and say so. Only ever needed as root (e.g. /root is 0700 on Debian)."""
    if user.is_current:
        return
    for ancestor in reversed([path, *path.parents]):
        if not ancestor.exists():
            continue
        status = ancestor.stat()
        if status.st_uid == user.uid:
            continue
        group_search = status.st_gid == user.gid and status.st_mode & 0o010
        if not (status.st_mode & 0o001) and not group_search:
            os.chmod(ancestor, status.st_mode | 0o001)
            log(f"added search permission (o+x) on {ancestor} so user {user.name!r} can reach the lab")


def command(argv: Sequence[str], *, user: LabUser | None = None, netns: str | None = None) -> list[str]:
    """``argv`` run inside a network namespace and/or as the lab user (``ip netns exec`` and
    ``setpriv`` both exec, so the pid of the started process is the program's own pid)."""
    prefix: list[str] = []
    if netns:
        prefix += [IP, "netns", "exec", netns]
    if user is not None and not user.is_current:
        prefix += [SETPRIV, f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]
    return prefix + [str(argument) for argument in argv]


def run(
    argv: Sequence[str],
    *,
    user: LabUser | None = None,
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing output. Raises LabError on failure when ``check``."""
    full = command(argv, user=user, netns=netns)
    environment = dict(env) if env is not None else (user.environment() if user else None)
    try:
        completed = subprocess.run(
            full,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise LabError(f"{Path(full[0]).name} {' '.join(full[1:4])}... timed out after {timeout:.0f}s") from error
    if check and completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise LabError(f"{' '.join(argv[:3])} failed (exit {completed.returncode}): {' | '.join(detail)}")
    return completed


def start_daemon(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    user: LabUser | None = None,
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a long-running process detached from us, as the lab's user and in its namespace, and record its pid."""
    return daemons.start_daemon(command(argv, user=user, netns=netns), pid_file=pid_file, log_file=log_file,
                                env=env, cwd=cwd)


def arguments(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


def mentions(pid: int, root: str) -> bool:
    """Does the command line name ``root`` or a path under it? (Words are checked too: sshd
    rewrites its command line into one string.)"""
    words = [word for argument in arguments(pid) for word in argument.split()]
    return any(word == root or word.startswith(root + "/") for word in words)


def is_alive(pid: int | None, marker: str | None = None) -> bool:
    """Alive, not a zombie, and (if given) its command line names the path ``marker``."""
    return running(pid) and (marker is None or mentions(pid, marker))


def processes_mentioning(root: str) -> list[int]:
    """Every live process whose command line names a path under ``root`` (the lab's daemons
    all take the lab directory as an argument)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and is_alive(int(entry.name), root):
            found.append(int(entry.name))
    return found


def read_pid(pid_file: Path) -> int | None:
    """The first line of a pid file (PostgreSQL's postmaster.pid has the pid on line one)."""
    try:
        first = pid_file.read_text(encoding="utf-8").split("\n", 1)[0].strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (collected before anything is killed: orphans are
    reparented and could no longer be found)."""
    children = children_map()
    tree: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def resident_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def proportional_kib(pid: int) -> int:
    """Proportional set size: shared pages (PostgreSQL's shared buffers) divided among the
    processes that share them, so a sum over processes is the real footprint."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="utf-8").splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def signal_all(pids: Sequence[int], signal_number: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal_number)


def boot_clock() -> float:
    """Seconds since boot, the clock /proc's process start times are counted on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_before(pid: int, moment: float) -> bool:
    """Did the process now holding ``pid`` start before ``moment`` (a `boot_clock` reading)? A pid stopped a
    moment ago may already belong to somebody else: the kernel hands pids out again (pid_max is often 32768)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return int(fields[19]) / os.sysconf("SC_CLK_TCK") < moment


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    remaining = list(pids)
    while True:
        remaining = [pid for pid in remaining if is_alive(pid)]
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(0.02)


def stop_tree(pid: int | None, *, first_signal: int = signal.SIGTERM, timeout: float = 3.0) -> list[int]:
    """Stop a process and its descendants: ``first_signal``, then SIGKILL after ``timeout``.
    Returns the pids that were stopped."""
    if not pid or not is_alive(pid):
        return []
    tree = process_tree(pid)
    signal_all(tree, first_signal)
    survivors = wait_gone(tree, timeout)
    if survivors:
        signal_all(survivors, signal.SIGKILL)
        survivors = wait_gone(survivors, 2.0)
    if survivors:
        raise LabError(f"processes {survivors} survived SIGKILL")
    return tree


def port_open(host: str, port: int, timeout: float = 0.25) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        content = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(content[-lines:])


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Serialise lab commands that change the lab (up, down, fault, heal, power)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
