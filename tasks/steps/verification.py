"""Service verification: one round of every check of a site, or rounds until the site is recovered.

A site is recovered at the first of N consecutive rounds in which every critical service is
healthy (the run ends at the Nth); N and the probe interval come from the plan.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime

from lifeline.configs.plan import Plan
from lifeline.configs.recovery import Service
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.adapters.probes import CheckResult, CheckRunner
from lifeline.tasks.adapters.ssh import SshTarget
from lifeline.tasks.run import topology
from lifeline.tasks.run.adapter_inputs import probes
from lifeline.tasks.run.record import utc_now
from lifeline.tasks.steps.step import step
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
    def detail(self) -> dict:
        unhealthy = [f"{r.service}: {r.detail}" for r in self.results if not r.healthy]
        return {"site": self.site, "checks": len(self.results), "unhealthy": unhealthy}


class Recovered(BaseModel):
    site: str
    recovered_at: datetime
    rounds: int
    last_round: VerificationRound
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
    deadline = time.monotonic() + settings.timeout_seconds
    streak: list[VerificationRound] = []
    rounds = 0
    try:
        while True:
            started = time.monotonic()
            current = check_round(runner, services, site)
            rounds += 1
            streak = [*streak, current] if current.critical_healthy else []
            if len(streak) >= settings.rounds:
                return Recovered(
                    site=site,
                    recovered_at=streak[0].at,
                    rounds=rounds,
                    last_round=current,
                    detail={"site": site, "rounds": rounds, "healthy_in_a_row": len(streak),
                            "recovered_at": streak[0].at.isoformat()},
                )
            if time.monotonic() > deadline:
                unhealthy = "; ".join(current.detail["unhealthy"]) or "not enough healthy rounds"
                raise NotRecovered(f"site {site} not recovered within {settings.timeout_seconds:g} s: {unhealthy}")
            time.sleep(max(0.0, settings.interval_seconds - (time.monotonic() - started)))
    finally:
        runner.close()
