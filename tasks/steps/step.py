"""`@step`: a Prefect task that is also a journal entry.

Every step declares its retries and timeout where it is defined. Only failures that a
retry can fix are retried (errors carry `transient`); a wrong password fails at once.
The timeout bounds every program the step runs (Prefect's own task timeout cannot
interrupt a blocking call in a worker thread; a child process can always be stopped).
Each attempt is timed into the run's journal, so the record shows what ran and how often.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from lifeline.tasks.adapters.deadline import time_limit
from lifeline.tasks.adapters.errors import LifelineError
from lifeline.tasks.run.record import Journal
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

__all__ = ["LifelineError", "is_transient", "step"]

P = ParamSpec("P")
R = TypeVar("R")


def is_transient(error: BaseException | None) -> bool:
    return bool(getattr(error, "transient", False))


def _retry_only_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # the state's own exception, as Prefect stored it
            error = raised
    return is_transient(error)


def step(
    *,
    retries: int = 0,
    retry_delay_seconds: float | list[float] = 2.0,
    timeout_seconds: float | None = None,
) -> Callable[[Callable[P, R]], Task[..., R]]:
    """Make a function a journaled Prefect task.

    The task takes extra keyword arguments: `journal` (the run's Journal), `step_name`
    (how the step is called in the journal, e.g. "backup recordings") and
    `time_limit_seconds` (a plan's own timeout for this step).
    A result with a `detail` dict is copied into the step; a result with non-empty
    `warnings` marks the step as "warning", one with a `skipped` reason as "skipped".
    """

    def decorate(function: Callable[P, R]) -> Task[..., R]:
        task_name = function.__name__.replace("_", "-")

        def run(
            *args: Any, journal: Journal, step_name: str | None = None, time_limit_seconds: float | None = None, **kwargs: Any
        ) -> R:
            with journal.step(step_name or task_name) as entry, time_limit(time_limit_seconds or timeout_seconds):
                result = function(*args, **kwargs)
                entry.detail.update(getattr(result, "detail", None) or {})
                if getattr(result, "skipped", None):
                    entry.status = "skipped"
                    entry.detail["reason"] = result.skipped
                elif getattr(result, "warnings", None):
                    entry.status = "warning"
                    entry.detail["warnings"] = list(result.warnings)
            return result

        signature = inspect.signature(function)
        extra = [
            inspect.Parameter("journal", inspect.Parameter.KEYWORD_ONLY),
            inspect.Parameter("step_name", inspect.Parameter.KEYWORD_ONLY, default=None),
            inspect.Parameter("time_limit_seconds", inspect.Parameter.KEYWORD_ONLY, default=None),
        ]
        run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]
        run.__name__, run.__qualname__ = function.__name__, function.__qualname__
        run.__module__, run.__doc__ = function.__module__, function.__doc__
        return task(
            run,
            name=task_name,
            task_run_name=lambda: _task_run_name(task_name),
            retries=retries,
            retry_delay_seconds=retry_delay_seconds,
            retry_condition_fn=_retry_only_transient,
            cache_policy=NO_CACHE,
            log_prints=False,
        )

    return decorate


def _task_run_name(default: str) -> str:
    from prefect.runtime import task_run

    return str(task_run.parameters.get("step_name") or default)
