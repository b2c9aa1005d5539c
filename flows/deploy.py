"""`lifeline deploy`: the plan's flows as deployments on Prefect work pools, one process pool per site, so
that a failover runs on the DR site's worker and depends on nothing at the site it rescues.

- Failover, failback, restore, verify, drill and escalation run on the DR site's pool (the site that is
  not the normal primary): those are the runs an operator needs when the primary site is gone.
- Backups run on the pool of the site that holds the data (each dataset's `site`), one deployment per site.
- Each repository and each host gets its Prefect global concurrency limit, sized by the plan (see
  repository_slots and host_slots).
- Names carry the plan's name (`<plan>-failover`), so two plans on one server do not collide; deploying
  again updates each deployment in place.

Workers import the flows by module path (`lifeline.flows.failover.failover_flow`) from their own
installation of Lifeline; `lifeline worker --site NAME` starts one.
"""

from __future__ import annotations

from lifeline.configs.loading import LoadedPlan
from lifeline.configs.settings import load_settings
from lifeline.flows.crashed_runs import ensure_crash_detection
from lifeline.flows.serve import deployment_name, deployments
from lifeline.tasks.run import topology
from lifeline.tasks.steps.host_slots import ensure_host_limits
from lifeline.tasks.steps.repositories import open_repository
from lifeline.tasks.steps.repository_slots import ensure_limits
from prefect.deployments.runner import RunnerDeployment

POOL_TYPE = "process"


def site_pool(site: str) -> str:
    return f"lifeline-{site}"


def placed_deployments(loaded: LoadedPlan) -> list[RunnerDeployment]:
    """Serve's deployments, each placed on its site's pool; the backup once per site that holds data."""
    plan = loaded.plan
    dr = topology.other_site(plan, topology.normal_primary_site(plan))
    placed: list[RunnerDeployment] = []
    for deployment in deployments(loaded):
        if deployment.name == deployment_name(plan.name, "backup"):
            for site in topology.dataset_sites(plan):
                copy = deployment.model_copy(deep=True)
                copy.parameters = {**copy.parameters, "site": site}
                copy._parameter_openapi_schema.properties["site"]["default"] = site
                placed.append(_placed(copy, f"{deployment.name}-{site}", site))
        else:
            placed.append(_placed(deployment, deployment.name, dr))
    return placed


def _placed(deployment: RunnerDeployment, name: str, site: str) -> RunnerDeployment:
    deployment.name = name
    deployment.work_pool_name = site_pool(site)
    deployment.description = f"{deployment.description} Runs on site {site}'s workers."
    return deployment


def ensure_pools(sites: list[str]) -> list[str]:
    """Create the process pool of each site that has none; returns those created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    created = []
    with get_client(sync_client=True) as client:
        for site in sites:
            try:
                client.read_work_pool(site_pool(site))
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=site_pool(site), type=POOL_TYPE,
                                                       description=f"Lifeline's workers at site {site}"))
                created.append(site_pool(site))
    return created


def deploy_plan(loaded: LoadedPlan) -> list[tuple[str, str, str]]:
    """Create the pools and apply every deployment (in place when it exists); (deployment, pool, id) each."""
    ensure_pools(list(loaded.plan.sites))
    ensure_crash_detection()
    settings = load_settings()
    ensure_limits(loaded.plan, {name: open_repository(loaded.plan, name, settings) for name in loaded.plan.repositories})
    ensure_host_limits(loaded.plan)
    applied = []
    for deployment in placed_deployments(loaded):
        deployment_id = deployment.apply(work_pool_name=deployment.work_pool_name)
        applied.append((f"{deployment.flow_name}/{deployment.name}", deployment.work_pool_name, str(deployment_id)))
    return applied
