"""Reading a plan file: YAML → typed Plan, with every problem named by its field path."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import get_args

import yaml
from lifeline.configs.base import Problem
from lifeline.configs.communications import communication_problems
from lifeline.configs.messages import template_problems
from lifeline.configs.pitr import Pitr
from lifeline.configs.plan import Plan
from lifeline.configs.secret_files import missing_secret_files, open_secret_files
from lifeline.configs.telephony import ANNOUNCEMENT_FIELDS
from pydantic import TypeAdapter, ValidationError


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
    warnings: tuple[Problem, ...] = ()  # what works but should not be so (a secret file others may read)


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
        if isinstance(error, yaml.reader.ReaderError):  # a control character: it has a position, not a mark
            before = raw[:error.position] if error.encoding else raw.decode("utf-8", "replace")[:error.position]
            code = error.character if isinstance(error.character, int) else ord(error.character)
            line, problem = before.count(b"\n" if error.encoding else "\n") + 1, f"{error.reason} (U+{code:04X})"
        else:
            line, problem = (mark.line + 1 if mark else None), getattr(error, "problem", None) or str(error)
        where = f"line {line}" if line else "YAML"
        raise PlanInvalid(path, [Problem(where, f"not valid YAML: {' '.join(str(problem).split())}")]) from None
    if not isinstance(document, dict):
        raise PlanInvalid(path, [Problem("", "the plan must be a YAML mapping")])
    context = {"base_dir": path.parent}
    try:
        plan = Plan.model_validate(document, context=context)
    except ValidationError as error:
        # Every problem in one pass: the references among what did validate are checked too.
        problems = [_problem_from(detail) for detail in error.errors()]
        problems += consistency_problems(_what_validates(document, context), Names.defined_in(document))
        raise PlanInvalid(path, problems) from None
    problems = consistency_problems(plan, Names.defined_in(document)) + network_namespace_problems(plan)
    named = {problem.field for problem in problems}
    problems += [problem for problem in missing_secret_files(plan) if problem.field not in named]
    if problems:
        raise PlanInvalid(path, problems)
    return LoadedPlan(plan=plan, path=path, sha256=hashlib.sha256(raw).hexdigest(),
                      warnings=tuple(open_secret_files(plan)))


def _problem_from(detail: dict) -> Problem:
    field = ".".join(str(part) for part in detail["loc"])
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        message = "unknown key"
    return Problem(field, message)


NAMED_NETWORK_NAMESPACES = Path("/run/netns")
"""Where `ip netns add` puts the namespaces it names."""


def network_namespace_problems(plan: Plan) -> list[Problem]:
    """Outside the plan's namespace every address leads elsewhere: say so instead of failing on them."""
    wanted = plan.network_namespace
    if wanted is None:
        return []
    advice = f"run Lifeline inside it: ip netns exec {wanted} lifeline ..."
    try:
        named = (NAMED_NETWORK_NAMESPACES / wanted).stat()
    except OSError:
        return [Problem("network_namespace", f"there is no network namespace {wanted!r} here (is the lab up?); {advice}")]
    current = Path("/proc/self/ns/net").stat()
    if (named.st_dev, named.st_ino) != (current.st_dev, current.st_ino):
        return [Problem("network_namespace", f"Lifeline runs outside network namespace {wanted!r}: {advice}")]
    return []


NAMED_SECTIONS = ("repositories", "datasets", "sites", "hosts", "services", "databases", "fencing", "scenarios",
                  "contacts", "oncall", "channels", "audiences")
WHOLE_SECTIONS = ("dns", "recovery", "escalation", "templates", "notifications", "hotline", "intake", "preparedness",
                  "status_page", "telephony")


def _what_validates(document: dict, context: dict) -> Plan:
    """The plan made of the entries (and the dns and recovery sections) that validate on their own."""

    def validated(adapter: TypeAdapter, value: object) -> object | None:
        try:
            return adapter.validate_python(value, context=context)
        except ValidationError:
            return None

    sections: dict[str, object] = {}
    for key in NAMED_SECTIONS:
        entry = TypeAdapter(get_args(Plan.model_fields[key].annotation)[1])
        raw = document.get(key)
        entries = {str(name): validated(entry, value) for name, value in raw.items()} if isinstance(raw, dict) else {}
        sections[key] = {name: value for name, value in entries.items() if value is not None}
    for key in WHOLE_SECTIONS:
        section = validated(TypeAdapter(Plan.model_fields[key].annotation), document[key]) if key in document else None
        if section is not None:
            sections[key] = section
    return Plan.model_construct(**sections)


@dataclass(frozen=True)
class Names:
    """The names each section defines, also those of entries with wrong types: a reference to one does not dangle."""

    repositories: frozenset[str]
    datasets: frozenset[str]
    sites: frozenset[str]
    hosts: frozenset[str]
    services: frozenset[str]
    databases: frozenset[str]
    contacts: frozenset[str]
    oncall: frozenset[str]
    channels: frozenset[str]
    audiences: frozenset[str]

    @classmethod
    def defined_in(cls, document: dict) -> Names:
        def keys(section: str) -> frozenset[str]:
            raw = document.get(section)
            return frozenset(map(str, raw)) if isinstance(raw, dict) else frozenset()

        return cls(**{field.name: keys(field.name) for field in fields(cls)})

    def dangling(self, where: str, name: str | None, section: str) -> list[Problem]:
        if name is None or name in getattr(self, section):
            return []
        kind = {"repositories": "repository"}.get(section, section.removesuffix("s"))
        return [Problem(where, f"no {kind} named {name!r}")]


STEP_REFERENCES = {
    "ssh": {"host": "hosts"},
    "postgres_promote": {"database": "databases", "site": "sites"},
    "dns_switch": {"to": "sites"},
    "fence": {"site": "sites"},
    "restore": {"dataset": "datasets"},
    "verify": {"site": "sites"},
    "sip_route": {"to": "sites"},
    "agents_ready": {"site": "sites"},
    "ivr_announcement": {"site": "sites"},
}
TELEPHONY_STEPS = ("sip_route", "agents_ready", "ivr_announcement")
"""Runbook step type → its fields that name something, and the section that defines it."""


def consistency_problems(plan: Plan, names: Names) -> list[Problem]:
    """What the types alone cannot say: references, sources, files that must exist."""
    problems: list[Problem] = []
    for name, repository in plan.repositories.items():
        for key in ("password_file", "environment_file"):
            file = getattr(repository, key)
            if file is not None and not file.is_file():
                problems.append(Problem(f"repositories.{name}.{key}", f"file not found: {file}"))
    for name, dataset in plan.datasets.items():
        where = f"datasets.{name}"
        passfile = dataset.postgres.passfile if dataset.postgres else None
        if passfile is not None and not passfile.is_file():
            problems.append(Problem(f"{where}.postgres.passfile", f"file not found: {passfile}"))
        problems += names.dangling(f"{where}.repository", dataset.repository, "repositories")
        for target in dataset.copy_to:
            if target not in names.repositories:
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
        problems += names.dangling(f"hosts.{name}.site", host.site, "sites")
    if plan.dns is not None and names.sites:
        for site in plan.dns.values:
            problems += names.dangling(f"dns.values.{site}", site, "sites")
    problems += telephony_problems(plan, names)
    return problems + recovery_reference_problems(plan, names) + alert_reference_problems(plan, names) + communication_problems(
        plan, {section: getattr(names, section) for section in ("contacts", "oncall", "channels", "audiences")})


def telephony_problems(plan: Plan, names: Names) -> list[Problem]:
    if plan.telephony is None:
        return [Problem(f"channels.{name}", "a voice channel needs the plan's `telephony` section: its SBC places "
                        "the calls") for name, channel in plan.channels.items() if channel.type == "voice"]
    problems: list[Problem] = []
    for site_name, site in plan.telephony.sites.items():
        where = f"telephony.sites.{site_name}"
        problems += names.dangling(where, site_name, "sites")
        problems += names.dangling(f"{where}.ivr_host", site.ivr_host, "hosts")
        if (site.ivr_host is None) != (site.announcement_path is None):
            problems.append(Problem(where, "give both ivr_host and announcement_path, or neither"))
        if plan.services and not any(check.type == "sip" for service in plan.services.values()
                                     if service.site == site_name and service.critical for check in service.checks):
            problems.append(Problem(where, f"no critical service at {site_name} has a `sip` check: a failover there "
                                    "would count as recovered without one call answered (add e.g. "
                                    f"services.phone-{site_name} with a sip check)"))
    for field, message in template_problems("announcement", plan.telephony.announcement, ANNOUNCEMENT_FIELDS):
        problems.append(Problem(f"telephony.announcement.{field}", message))
    return problems


def alert_reference_problems(plan: Plan, names: Names) -> list[Problem]:
    """Preparedness names datasets and audiences, sites name their agents, the status page names services."""
    problems: list[Problem] = []
    for kind, preparation in plan.preparedness.items():
        for index, dataset in enumerate(preparation.datasets or []):
            problems += names.dangling(f"preparedness.{kind}.datasets.{index}", dataset, "datasets")
        for index, audience in enumerate(preparation.notify if names.audiences else []):  # none: nobody to tell
            problems += names.dangling(f"preparedness.{kind}.notify.{index}", audience, "audiences")
    for site_name, site in plan.sites.items():
        for index, agent in enumerate(site.agents):
            problems += names.dangling(f"sites.{site_name}.agents.{index}", agent, "contacts")
    if plan.status_page is not None:
        for name, component in plan.status_page.components.items():
            for index, service in enumerate(component.services):
                problems += names.dangling(f"status_page.components.{name}.services.{index}", service, "services")
    if plan.intake is not None and not plan.intake.token_file.is_file():
        problems.append(Problem("intake.token_file", f"file not found: {plan.intake.token_file}"))
    return problems


def pitr_problems(plan: Plan, where: str, pitr: Pitr) -> list[Problem]:
    problems = []
    if pitr.dataset is not None:
        dataset = plan.datasets.get(pitr.dataset)
        if dataset is None:
            problems.append(Problem(f"{where}.dataset", f"no dataset named {pitr.dataset!r}"))
        elif dataset.kind != "postgres":
            problems.append(Problem(f"{where}.dataset", f"dataset {pitr.dataset!r} is not a postgres dataset"))
    for index, repository in enumerate(pitr.repositories):
        if repository.s3 is not None and not repository.s3.credentials_file.is_file():
            problems.append(Problem(f"{where}.repositories.{index}.s3.credentials_file",
                                    f"file not found: {repository.s3.credentials_file}"))
    return problems


def recovery_reference_problems(plan: Plan, names: Names) -> list[Problem]:
    """Services, databases, fencing, runbook steps and scenarios name sites, hosts, databases and datasets."""
    problems: list[Problem] = []
    for name, service in plan.services.items():
        problems += names.dangling(f"services.{name}.site", service.site, "sites")
        for index, check in enumerate(service.checks):
            if check.type == "ssh":
                problems += names.dangling(f"services.{name}.checks.{index}.host", check.host, "hosts")
    for name, database in plan.databases.items():
        if database.primary not in database.instances:
            problems.append(Problem(f"databases.{name}.primary", f"no instance at site {database.primary!r}"))
        for site, instance in database.instances.items():
            problems += names.dangling(f"databases.{name}.instances.{site}", site, "sites")
            problems += names.dangling(f"databases.{name}.instances.{site}.host", instance.host, "hosts")
        if database.pitr is not None:
            problems += pitr_problems(plan, f"databases.{name}.pitr", database.pitr)
    for site in plan.fencing:
        problems += names.dangling(f"fencing.{site}", site, "sites")
    for index, approver in enumerate(plan.recovery.approvers):
        problems += names.dangling(f"recovery.approvers.{index}", approver, "contacts")
    for name, dataset in plan.datasets.items():
        problems += names.dangling(f"datasets.{name}.site", dataset.site, "sites")
    for phase in ("failover", "failback"):
        for group_index, group in enumerate(getattr(plan.recovery, phase)):
            for step_index, step in enumerate(group.steps):
                for key, section in STEP_REFERENCES.get(step.type, {}).items():
                    where = f"recovery.{phase}.{group_index}.steps.{step_index}.{key}"
                    problems += names.dangling(where, getattr(step, key), section)
                if step.type in TELEPHONY_STEPS and plan.telephony is None:
                    problems.append(Problem(f"recovery.{phase}.{group_index}.steps.{step_index}",
                                            f"a {step.type} step needs the plan's `telephony` section"))
                for index, audience in enumerate(getattr(step, "audiences", [])):
                    where = f"recovery.{phase}.{group_index}.steps.{step_index}.audiences.{index}"
                    problems += names.dangling(where, audience, "audiences")
    for name, scenario in plan.scenarios.items():
        where = f"scenarios.{name}"
        problems += names.dangling(f"{where}.fault.probe_site", scenario.fault.probe_site, "sites")
        if scenario.recovery.restore is not None:
            problems += names.dangling(f"{where}.recovery.restore.dataset", scenario.recovery.restore.dataset, "datasets")
        point_in_time = scenario.recovery.point_in_time
        if point_in_time is not None:
            database = plan.databases.get(point_in_time.database)
            if database is None or database.pitr is None:
                problems.append(Problem(f"{where}.recovery.point_in_time.database",
                                        f"no database named {point_in_time.database!r} with a `pitr` section"))
        if scenario.recovery.leak is not None:
            problems += names.dangling(f"{where}.recovery.leak.host", scenario.recovery.leak.host, "hosts")
            problems += names.dangling(f"{where}.recovery.leak.dataset", scenario.recovery.leak.dataset, "datasets")
        recovery = scenario.recovery
        for index, audience in enumerate(recovery.notify.audiences if recovery.notify else []):
            problems += names.dangling(f"{where}.recovery.notify.audiences.{index}", audience, "audiences")
        if recovery.approval is not None and recovery.approval.absent not in plan.recovery.approvers:
            problems.append(Problem(f"{where}.recovery.approval.absent",
                                    f"{recovery.approval.absent!r} is not one of recovery.approvers"))
        if recovery.alert is not None:
            problems += names.dangling(f"{where}.recovery.alert.site", recovery.alert.site, "sites")
            if plan.intake is None:
                problems.append(Problem(f"{where}.recovery.alert", "needs the plan's `intake`: the warning is posted there"))
        problems += names.dangling(f"{where}.sentinel.database", scenario.sentinel.database, "databases")
        problems += names.dangling(f"{where}.sentinel.dataset", scenario.sentinel.dataset, "datasets")
    return problems
