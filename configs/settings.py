"""Runtime settings: where Lifeline keeps its state, which plan and ledger it uses.

Read from `LIFELINE_*` environment variables and `.env`. Secrets never live here:
the plan names files that hold them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_", env_file=".env", extra="ignore")

    home: Path = Field(Path("~/.lifeline"), description="State: ledger, restic cache, staging, the lab.")
    plan: Path | None = Field(None, description="Default plan file for --plan.")
    ledger_url: str | None = Field(None, description="SQLAlchemy URL; default a SQLite file under home.")
    restic_binary: str = "restic"
    postgres_bin_dir: Path | None = Field(None, description="Where pg_dump and psql live, when not on PATH.")
    metrics_textfile: Path | None = Field(
        None, description="Prometheus text file for node_exporter's textfile collector, rewritten after every run."
    )
    pushgateway_url: str | None = Field(None, description="Pushgateway to push the same metrics to after every run.")
    prefect: Literal["background", "ephemeral"] = Field(
        "background", description="Without PREFECT_API_URL: `background` starts a local Prefect server under home "
        "at the first command and reuses it (`lifeline server status|stop`); `ephemeral` lets Prefect start a "
        "temporary one for every command (8-22 s each)."
    )
    server_host: str = Field("127.0.0.1", description="Where `lifeline server start` listens.")
    server_port: int = Field(4200, ge=1, le=65535, description="Its port; its UI and API are at http://HOST:PORT.")
    server_database_url: str | None = Field(
        None, description="The Prefect server's database (PREFECT_API_DATABASE_CONNECTION_URL), e.g. "
        "postgresql+asyncpg://prefect@db/prefect; default a SQLite file under home/prefect."
    )
    serve_query_seconds: float = Field(
        0.25, gt=0, description="How often `lifeline serve` looks for new runs (Prefect's default, 10 s, "
        "would keep a click waiting that long)."
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().absolute()

    @property
    def ledger(self) -> str:
        return self.ledger_url or f"sqlite:///{self.home_dir / 'ledger.sqlite'}"

    @property
    def restic_cache_dir(self) -> Path:
        return self.home_dir / "cache" / "restic"

    @property
    def locks_dir(self) -> Path:
        return self.home_dir / "locks"

    @property
    def server_dir(self) -> Path:
        """PREFECT_HOME of the local server: its SQLite database, pid file and log."""
        return self.home_dir / "prefect"

    @property
    def drills_dir(self) -> Path:
        """Markers of drills in progress or kept: a killed drill's is swept by the next failover, failback or
        drill, a kept drill's by a failback."""
        return self.home_dir / "drills"


def load_settings() -> Settings:
    return Settings()
