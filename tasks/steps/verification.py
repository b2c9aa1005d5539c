"""Service verification: one round of every check of a site, or rounds until the site is recovered.

A site is recovered at the first of N consecutive rounds in which every critical service is
healthy (the run ends at the Nth); N and the probe interval come from the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from lifeline.configs.plan import Plan
from lifeline.configs.recovery import Service
from lifeline.tasks.adapters.deadline import wait_until
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.probes import CheckResult, CheckRunner
from lifeline.tasks.adapters.ssh import SshTarget
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import probes
from lifeline.tasks.run.record import utc_now
from lifeline.tasks.steps.step import step
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field


class NotRecovered(LifelineError):
    pass


class ServiceCheck(BaseModel):
    service: str
    critical: bool
    check: str
    target: str
    healthy: bool
    latency_ms: float
    detail: str


class VerificationRound(BaseModel):
    site: str
    at: datetime
    results: list[ServiceCheck]

    @property
    def critical_healthy(self) -> bool:
        return all(result.healthy for result in self.results if result.critical)

    @property
    def critical_failures(self) -> list[str]:
        """"service (what failed)" for each critical check that failed."""
        return [f"{r.service} ({r.detail})" for r in self.results if r.critical and not r.healthy]

    @property
    def detail(self) -> dict:
        unhealthy = [f"{r.service}: {r.detail}" for r in self.results if not r.healthy]
        return {"site": self.site, "checks": len(self.results), "unhealthy": unhealthy}


class Recovered(BaseModel):
    recovered_at: datetime  # the first round of the healthy streak
    detail: dict = Field(default_factory=dict)


def site_services(plan: Plan, site: str | None) -> dict[str, Service]:
    return {name: service for name, service in plan.services.items() if site is None or service.site == site}


def check_round(runner: CheckRunner, services: Mapping[str, Service], site: str) -> VerificationRound:
    pairs = [(name, service, check) for name, service in services.items() for check in service.checks]
    at = utc_now()
    results: list[CheckResult] = runner.run(probes(check for _, _, check in pairs))
    return VerificationRound(
        site=site,
        at=at,
        results=[
            ServiceCheck(
                service=name, critical=service.critical, check=result.name, target=result.target,
                healthy=result.healthy, latency_ms=result.latency_ms, detail=result.detail,
            )
            for (name, service, _), result in zip(pairs, results, strict=True)
        ],
    )


def verify_site(plan: Plan, site: str | None, hosts: Mapping[str, SshTarget] | None = None) -> VerificationRound:
    runner = CheckRunner(hosts if hosts is not None else topology.ssh_targets(plan.hosts))
    try:
        return check_round(runner, site_services(plan, site), site or "all")
    finally:
        runner.close()


@step(retries=0, timeout_seconds=600)
def wait_until_recovered(plan: Plan, site: str) -> Recovered:
    """Probe every interval until N consecutive rounds find every critical service of `site` healthy."""
    settings = plan.recovery.verification
    services = {name: s for name, s in site_services(plan, site).items() if s.critical}
    if not services:
        raise NotRecovered(f"site {site} has no critical service to verify: add services to the plan")
    runner = CheckRunner(topology.ssh_targets(plan.hosts))
    rounds: list[VerificationRound] = []
    streak: list[VerificationRound] = []

    def healthy_streak() -> bool:
        nonlocal streak
        rounds.append(current := check_round(runner, services, site))
        streak = [*streak, current] if current.critical_healthy else []
        said = f"healthy: {len(streak)} of {settings.rounds} in a row" if streak else \
            "not healthy: " + "; ".join(current.detail["unhealthy"])
        get_run_logger().info("verify %s: round %d %s", site, len(rounds), said)
        return len(streak) >= settings.rounds

    try:
        if not wait_until(healthy_streak, timeout=settings.timeout_seconds, interval=settings.interval_seconds):
            unhealthy = "; ".join(rounds[-1].detail["unhealthy"]) or "not enough healthy rounds"
            raise NotRecovered(f"site {site} not recovered within {settings.timeout_seconds:g} s: {unhealthy}")
        return Recovered(
            recovered_at=streak[0].at,
            detail={"site": site, "rounds": len(rounds), "healthy_in_a_row": len(streak),
                    "recovered_at": streak[0].at.isoformat()},
        )
    finally:
        runner.close()
