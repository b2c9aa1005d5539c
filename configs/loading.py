"""Reading a plan file: YAML → typed Plan, with every problem named by its field path."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from lifeline.configs.plan import Plan
from pydantic import ValidationError


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class PlanInvalid(Exception):
    """The plan cannot be used; `problems` lists every reason."""

    def __init__(self, path: Path, problems: list[Problem]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(map(str, problems)))


@dataclass(frozen=True)
class LoadedPlan:
    plan: Plan
    path: Path
    sha256: str


def load_plan(path: Path) -> LoadedPlan:
    path = Path(path).expanduser().absolute()
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PlanInvalid(path, [Problem("", f"cannot read the plan: {error.strerror}")]) from None
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise PlanInvalid(path, [Problem(where, f"not valid YAML: {getattr(error, 'problem', error)}")]) from None
    if not isinstance(document, dict):
        raise PlanInvalid(path, [Problem("", "the plan must be a YAML mapping")])
    try:
        plan = Plan.model_validate(document, context={"base_dir": path.parent})
    except ValidationError as error:
        raise PlanInvalid(path, [_problem_from(detail) for detail in error.errors()]) from None
    problems = consistency_problems(plan)
    if problems:
        raise PlanInvalid(path, problems)
    return LoadedPlan(plan=plan, path=path, sha256=hashlib.sha256(raw).hexdigest())


def _problem_from(detail: dict) -> Problem:
    field = ".".join(str(part) for part in detail["loc"])
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        message = "unknown key"
    return Problem(field, message)


def consistency_problems(plan: Plan) -> list[Problem]:
    """What the types alone cannot say: references, sources, files that must exist."""
    problems: list[Problem] = []
    for name, repository in plan.repositories.items():
        for key in ("password_file", "environment_file"):
            file = getattr(repository, key)
            if file is not None and not file.is_file():
                problems.append(Problem(f"repositories.{name}.{key}", f"file not found: {file}"))
    for name, dataset in plan.datasets.items():
        where = f"datasets.{name}"
        if dataset.repository not in plan.repositories:
            problems.append(Problem(f"{where}.repository", f"no repository named {dataset.repository!r}"))
        for target in dataset.copy_to:
            if target not in plan.repositories:
                problems.append(Problem(f"{where}.copy_to", f"no repository named {target!r}"))
            elif target == dataset.repository:
                problems.append(Problem(f"{where}.copy_to", "a dataset cannot be copied to its own repository"))
        sources = [key for key in ("paths", "postgres", "command") if getattr(dataset, key)]
        if not sources:
            problems.append(Problem(where, "no source: set one of paths, postgres or command"))
        elif len(sources) > 1:
            problems.append(Problem(where, f"more than one source ({', '.join(sources)}): choose one"))
        if dataset.command and not dataset.stdin_filename:
            problems.append(Problem(f"{where}.stdin_filename", "required with command"))
        if dataset.exclude and not dataset.paths:
            problems.append(Problem(f"{where}.exclude", "only applies to paths"))
    for name, host in plan.hosts.items():
        if host.site is not None and host.site not in plan.sites:
            problems.append(Problem(f"hosts.{name}.site", f"no site named {host.site!r}"))
    if plan.dns is not None:
        for site in plan.dns.values:
            if plan.sites and site not in plan.sites:
                problems.append(Problem(f"dns.values.{site}", f"no site named {site!r}"))
    return problems
