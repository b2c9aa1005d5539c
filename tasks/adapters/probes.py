"""Health checks: run `http`, `tcp`, `sql`, `ssh` and `sip` probes, many at once.

Knows nothing of Prefect or the plan (tasks/run/adapter_inputs.py makes the plan's checks into probes).
An unhealthy target is a result, never an exception: refused, timed out, a wrong status or a wrong
answer all come back as `healthy=False` with a one-line `detail`.
Targets are shown without passwords or token-like query parameters.

`CheckRunner` keeps one thread pool, one HTTP client (keep-alive connections) and the SSH pool
across rounds, which is what repeated verification rounds want.
"""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import replace as replaced_copy
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import psycopg
from lifeline.tasks.adapters import sip, ssh
from lifeline.tasks.adapters.postgres import ConnectionInfo, PostgresError, redact_dsn

if TYPE_CHECKING:
    from lifeline.tasks.adapters.ssh.pool import SshPool

MAX_WORKERS = 32  # checks of one round run at once
BODY_LIMIT_BYTES = 1 << 20  # expect_text is looked for in the first MiB of the body
SECRET_PARAMETER_WORDS = ("pass", "token", "secret", "key", "signature", "auth", "credential")
TRUE_WORDS = ("true", "t", "yes", "on", "1")


@dataclass(frozen=True)
class HttpProbe:
    """GET `url`: healthy on `expect_status` with `expect_text` (if any) in the body."""

    type: ClassVar[str] = "http"
    url: str
    expect_status: int
    expect_text: str | None
    timeout_seconds: float
    name: str | None


@dataclass(frozen=True)
class TcpProbe:
    type: ClassVar[str] = "tcp"
    host: str
    port: int
    timeout_seconds: float
    name: str | None


@dataclass(frozen=True)
class SqlProbe:
    """Run `query`; with `expect`, the first column of the first row must read as it (booleans as true/false)."""

    type: ClassVar[str] = "sql"
    dsn: str  # without a password: that lives in passfile
    passfile: Path | None
    query: str
    expect: str | None
    timeout_seconds: float
    name: str | None


@dataclass(frozen=True)
class SshProbe:
    """Run `command` on the SSH host named `host`: healthy on exit status `expect_exit`."""

    type: ClassVar[str] = "ssh"
    host: str
    command: tuple[str, ...]
    expect_exit: int
    timeout_seconds: float
    name: str | None


@dataclass(frozen=True)
class SipProbe:
    """Place a test call through the SBC at `address`:`port`: healthy when answered (by `expect_answered_by`)."""

    type: ClassVar[str] = "sip"
    address: str
    port: int
    number: str
    caller_id: str
    expect_answered_by: str | None
    timeout_seconds: float
    name: str | None


Probe = HttpProbe | TcpProbe | SqlProbe | SshProbe | SipProbe


@dataclass(frozen=True)
class CheckResult:
    name: str
    type: str
    target: str  # redacted
    healthy: bool
    latency_ms: float
    detail: str


def redact_url(url: str) -> str:
    """The URL without userinfo password and with secret-looking query values replaced by ***."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}" if ":" in userinfo else netloc
        query = urlencode([(key, "***" if any(word in key.lower() for word in SECRET_PARAMETER_WORDS) else value)
                           for key, value in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unparsable URL>"


def check_target(check: Probe, hosts: Mapping[str, ssh.SshTarget] | None = None) -> str:
    """What a check looks at, safe to show."""
    if isinstance(check, HttpProbe):
        return redact_url(check.url)
    if isinstance(check, TcpProbe):
        return f"{check.host}:{check.port}"
    if isinstance(check, SqlProbe):
        return redact_dsn(check.dsn)
    if isinstance(check, SipProbe):
        return f"sip:{check.number}@{check.address}:{check.port}"
    target = (hosts or {}).get(check.host)
    where = f"{check.host} {target.address}:{target.port}" if target else check.host
    return f"{where}: {shlex.join(check.command)}"


def check_name(check: Probe) -> str:
    if check.name:
        return check.name
    if isinstance(check, HttpProbe):
        parts = urlsplit(check.url)
        return f"http {parts.netloc.rsplit('@', 1)[-1]}{parts.path or '/'}"
    if isinstance(check, TcpProbe):
        return f"tcp {check.host}:{check.port}"
    if isinstance(check, SqlProbe):
        return f"sql {check.query.split()[0].lower()} {redact_dsn(check.dsn).split('@')[-1]}"
    if isinstance(check, SipProbe):
        return f"sip call {check.number}"
    return f"ssh {check.host} {check.command[0]}"


def _one_line(text: object, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


def _socket_failure(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return f"timed out after {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host: {error.strerror}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return _one_line(error) or type(error).__name__


def _http(check: HttpProbe, client: httpx.Client) -> tuple[bool, str]:
    try:
        with client.stream("GET", check.url, timeout=check.timeout_seconds) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) >= BODY_LIMIT_BYTES:
                    break
    except httpx.TimeoutException:
        return False, f"timed out after {check.timeout_seconds:g} s"
    except httpx.ConnectError as error:
        if "refused" in str(error).lower():
            return False, "connection refused"
        return False, f"cannot connect: {_one_line(error) or type(error).__name__}"
    except httpx.HTTPError as error:
        return False, f"{type(error).__name__}: {_one_line(error)}"
    status = f"{response.status_code} {response.reason_phrase}".strip()
    try:
        text = body.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = body.decode("utf-8", errors="replace")
    if response.status_code != check.expect_status:
        snippet = _one_line(text, 80)
        return False, f"{status} (expected {check.expect_status})" + (f": {snippet}" if snippet else "")
    if check.expect_text is not None and check.expect_text not in text:
        return False, f"{status}, but the body lacks {check.expect_text!r}"
    return True, status


def _tcp(check: TcpProbe) -> tuple[bool, str]:
    try:
        with socket.create_connection((check.host, check.port), timeout=check.timeout_seconds):
            return True, "connected"
    except OSError as error:
        return False, _socket_failure(error, check.timeout_seconds)


def _as_text(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _matches(found: object, expected: str) -> bool:
    if isinstance(found, bool):
        return expected.strip().lower() in (TRUE_WORDS if found else ("false", "f", "no", "off", "0"))
    return _as_text(found) == expected


def _sql(check: SqlProbe) -> tuple[bool, str]:
    try:
        connection_info = ConnectionInfo.from_dsn(check.dsn, check.passfile)
    except PostgresError as error:
        return False, str(error)
    arguments = replaced_copy(
        connection_info, connect_timeout_seconds=max(2, round(check.timeout_seconds)),  # libpq treats less than 2 as 2
        statement_timeout=f"{int(check.timeout_seconds * 1000)}ms",
    ).connect_arguments()
    try:
        with psycopg.connect(autocommit=True, **arguments) as connection:
            cursor = connection.execute(check.query)  # type: ignore[arg-type]  # the plan's own SQL
            row = cursor.fetchone() if cursor.description else None
    except psycopg.errors.QueryCanceled:
        return False, f"the query ran longer than {check.timeout_seconds:g} s"
    except psycopg.Error as error:
        return False, _one_line(error) or type(error).__name__
    if check.expect is None:
        return True, f"answered {_as_text(row[0]) if row else 'no rows'}"
    if row is None:
        return False, f"no rows (expected {check.expect!r})"
    if not _matches(row[0], check.expect):
        return False, f"answered {_one_line(_as_text(row[0]), 80)!r} (expected {check.expect!r})"
    return True, f"answered {check.expect!r}"


def _ssh(check: SshProbe, hosts: Mapping[str, ssh.SshTarget], pool: SshPool) -> tuple[bool, str]:
    target = hosts.get(check.host)
    if target is None:
        return False, f"no host named {check.host!r} in the plan"
    try:
        result = pool.run(target, check.command, check.timeout_seconds)
    except ssh.SshError as error:
        return False, str(error)
    if result.exit_status != check.expect_exit:
        tail = result.stderr_tail(2)
        return False, f"exit {result.exit_status} (expected {check.expect_exit})" + (f": {tail}" if tail else "")
    return True, f"exit {result.exit_status}"


def _sip(check: SipProbe) -> tuple[bool, str]:
    result = sip.place_call(sip.SipEndpoint(check.address, check.port), check.number, check.caller_id,
                            answer_timeout=check.timeout_seconds)
    if result.outcome != "answered":
        return False, result.summary
    if check.expect_answered_by and result.answered_by != check.expect_answered_by:
        return False, f"answered by {result.answered_by}, not {check.expect_answered_by}"
    return True, result.summary


def _run_check(
    check: Probe, hosts: Mapping[str, ssh.SshTarget], http_client: httpx.Client, ssh_pool: SshPool
) -> CheckResult:
    started = time.perf_counter()
    try:
        if isinstance(check, HttpProbe):
            healthy, detail = _http(check, http_client)
        elif isinstance(check, TcpProbe):
            healthy, detail = _tcp(check)
        elif isinstance(check, SqlProbe):
            healthy, detail = _sql(check)
        elif isinstance(check, SipProbe):
            healthy, detail = _sip(check)
        else:
            healthy, detail = _ssh(check, hosts, ssh_pool)
    except Exception as error:  # noqa: BLE001 - a check reports, never crashes its round; detail shows the bug
        healthy, detail = False, f"check failed unexpectedly: {type(error).__name__}: {_one_line(error)}"
    latency_ms = (time.perf_counter() - started) * 1000
    return CheckResult(check_name(check), check.type, check_target(check, hosts), healthy, round(latency_ms, 2), detail)


def _new_http_client(max_connections: int) -> httpx.Client:
    """The client checks share: keep-alive connections, no redirects followed, no proxies from the environment
    (a health check must reach the service itself)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.Client(limits=limits, follow_redirects=False, trust_env=False,
                        headers={"User-Agent": "lifeline-check"})


class CheckRunner:
    """Runs rounds of checks concurrently, reusing threads and connections between rounds."""

    def __init__(self, hosts: Mapping[str, ssh.SshTarget] | None = None) -> None:
        self.hosts = dict(hosts or {})
        self.ssh_pool = ssh.default_pool()
        self.http_client = _new_http_client(MAX_WORKERS)
        self._executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="lifeline-check")

    def run(self, checks: Sequence[Probe]) -> list[CheckResult]:
        """Every check at once (up to MAX_WORKERS); results in the order of checks."""
        def one(check: Probe) -> CheckResult:
            return _run_check(check, self.hosts, self.http_client, self.ssh_pool)

        if len(checks) == 1:
            return [one(checks[0])]
        return list(self._executor.map(one, checks))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.http_client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()
