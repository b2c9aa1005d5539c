"""A throwaway PostgreSQL cluster for the tests: `postgres_server`, one per session.

initdb refuses root, so when the tests run as root the cluster runs as the unprivileged system user
`lifeline` (created here if missing, as the lab does). The superuser `lifeline` authenticates with a
generated password that lives only in a 0600 passfile handed to libpq through PGPASSFILE: never on a
command line. Built for speed: `initdb -N`, fsync off, small buffers, immediate stop.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from lifeline.infra.lab.processes import ensure_lab_user
from psycopg import sql

from tests.servers import free_port

CLUSTER_USER = "lifeline"
SUPERUSER = "lifeline"


def postgres_bin_dir() -> Path:
    """LIFELINE_POSTGRES_BIN_DIR, else the newest /usr/lib/postgresql/*/bin, else wherever initdb is on PATH."""
    configured = os.environ.get("LIFELINE_POSTGRES_BIN_DIR")
    if configured:
        return Path(configured)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("PostgreSQL server programs not found: install them or set LIFELINE_POSTGRES_BIN_DIR")


@dataclass
class PostgresServer:
    bin_dir: Path
    base_dir: Path
    port: int
    passfile: Path
    password: str = field(repr=False)
    host: str = "127.0.0.1"
    user: str = SUPERUSER

    @property
    def cluster_dir(self) -> Path:
        """Owned by the cluster's user: data directory, socket, log."""
        return self.base_dir / "cluster"

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.cluster_dir / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        """postgresql://lifeline@127.0.0.1:PORT/DATABASE: no password, the passfile supplies it."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def sqlalchemy_url(self, database: str = "postgres") -> str:
        """For SQLAlchemy (e.g. the ledger): psycopg driver, the passfile named as a libpq option."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}?passfile={self.passfile}"

    def environment(self) -> dict[str, str]:
        """os.environ plus PGPASSFILE, for running psql/pg_dump against this server."""
        return {**os.environ, "PGPASSFILE": str(self.passfile), "PGCONNECT_TIMEOUT": "5"}

    def connect(self, database: str = "postgres", *, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname=database,
            passfile=str(self.passfile), autocommit=autocommit,
        )

    def execute(self, database: str, *statements: str) -> None:
        with self.connect(database) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]

    def query(self, database: str, statement: str) -> list[tuple]:
        with self.connect(database) as connection:
            return connection.execute(statement).fetchall()  # type: ignore[arg-type]

    def databases(self) -> set[str]:
        return {row[0] for row in self.query("postgres", "SELECT datname FROM pg_database")}

    def create_database(self, name: str) -> None:
        with self.connect() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _cluster_user() -> tuple[int, int] | None:
    """(uid, gid) to run the cluster as, or None when we are not root and run it as ourselves.

    The same system user the lab runs PostgreSQL and SSH logins as, made the same way.
    """
    if os.geteuid() != 0:
        return None
    user = ensure_lab_user(CLUSTER_USER, log=lambda message: None)
    return user.uid, user.gid


def _as_cluster_user(argv: Sequence[str], owner: tuple[int, int] | None) -> list[str]:
    if owner is None:
        return list(argv)
    uid, gid = owner
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *argv]


def _run(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    completed = subprocess.run(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name if argv[0] != 'setpriv' else argv[-1]} failed: "
                           f"{' '.join(argv)}\n{completed.stdout}\n{completed.stderr}")


def _configuration(settings: dict[str, str]) -> str:
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def _write_passfile(path: Path, server: PostgresServer) -> None:
    """libpq's passfile for the server's superuser, 0600 as libpq wants it."""
    path.write_text(f"{server.host}:{server.port}:*:{server.user}:{server.password}\n")
    path.chmod(0o600)


def start_postgres_server(base_dir: Path, bin_dir: Path | None = None, *, replication: bool = False) -> PostgresServer:
    """initdb a cluster under base_dir (empty or not there yet) and start it on a free loopback port;
    `replication`: it can have a standby."""
    bin_dir = bin_dir or postgres_bin_dir()
    owner = _cluster_user()
    password = secrets.token_urlsafe(24)
    cluster_dir = base_dir / "cluster"
    data_dir, password_file = cluster_dir / "data", cluster_dir / "initdb-password"
    cluster_dir.mkdir(mode=0o700, parents=True)
    data_dir.mkdir(mode=0o700)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    if owner is not None:
        for path in (cluster_dir, data_dir, password_file):
            os.chown(path, *owner)
    _run(
        _as_cluster_user(
            [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "--auth=scram-sha-256",
             f"--pwfile={password_file}", "-N", "-E", "UTF8", "--locale=C"],
            owner,
        ),
        cluster_dir,
    )
    password_file.unlink()
    passfile = base_dir / "pgpass"
    server = PostgresServer(bin_dir=bin_dir, base_dir=base_dir, port=0, passfile=passfile, password=password)
    for attempt in range(3):  # a free port can be taken between probing and binding it
        server.port = free_port()
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(server.port), "unix_socket_directories": f"'{cluster_dir}'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "shared_buffers": "16MB",
            "max_connections": "40", "wal_level": "replica" if replication else "minimal",
            "max_wal_senders": "4" if replication else "0", "max_wal_size": "256MB",
            "log_min_messages": "warning",
        }
        (data_dir / "postgresql.auto.conf").write_text(_configuration(settings))
        start = [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(server.log_file), "-w", "-t", "30", "start"]
        try:
            _run(_as_cluster_user(start, owner), cluster_dir)
            break
        except RuntimeError:
            if attempt == 2:
                raise RuntimeError(f"PostgreSQL did not start:\n{server.log_file.read_text(errors='replace')}") from None
    _write_passfile(passfile, server)
    return server


def start_standby(primary: PostgresServer, base_dir: Path, **settings: str) -> PostgresServer:
    """A streaming standby of `primary` (wal_level replica) by `pg_basebackup -R`, on its own free port;
    `settings` are added to its postgresql.auto.conf."""
    owner = _cluster_user()
    standby = PostgresServer(bin_dir=primary.bin_dir, base_dir=base_dir, port=free_port(),
                             passfile=base_dir / "pgpass", password=primary.password)
    standby.cluster_dir.mkdir(mode=0o700, parents=True)
    replication_passfile = standby.cluster_dir / "replication-pgpass"  # the cluster's user reads it
    _write_passfile(replication_passfile, primary)
    if owner is not None:
        for path in (standby.cluster_dir, replication_passfile):
            os.chown(path, *owner)
    copy = [str(primary.bin_dir / "pg_basebackup"), "-D", str(standby.data_dir), "-R", "-X", "stream", "-c", "fast",
            "-h", primary.host, "-p", str(primary.port), "-U", primary.user, "-w"]
    _run(_as_cluster_user(copy, owner), standby.cluster_dir, env={**os.environ, "PGPASSFILE": str(replication_passfile)})
    own = {"port": str(standby.port), "unix_socket_directories": f"'{standby.cluster_dir}'", **settings}
    with open(standby.data_dir / "postgresql.auto.conf", "a", encoding="utf-8") as configuration:
        configuration.write(_configuration(own))
    start_stopped_postgres_server(standby)
    _write_passfile(standby.passfile, standby)
    return standby


def start_stopped_postgres_server(server: PostgresServer) -> None:
    start = [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(server.log_file), "-w", "-t", "30",
             "start"]
    _run(_as_cluster_user(start, _cluster_user()), server.cluster_dir)


def stop_postgres_server(server: PostgresServer) -> None:
    owner = _cluster_user()
    _run(_as_cluster_user([str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", "immediate",
                           "-w", "stop"], owner), server.cluster_dir)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    base_dir = Path(tempfile.mkdtemp(prefix="lifeline-pg-"))
    base_dir.chmod(0o755)
    try:
        server = start_postgres_server(base_dir)
        try:
            yield server
        finally:
            stop_postgres_server(server)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty ledger's URL: once in SQLite, once in PostgreSQL (the session's server), the two it may live in."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"ledger_{secrets.token_hex(4)}"
    server.create_database(name)
    return server.sqlalchemy_url(name)
