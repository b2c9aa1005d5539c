"""Every wait stops at its step's time limit (tasks/adapters/deadline.py)."""

from __future__ import annotations

import time

import pytest
from lifeline.tasks.adapters.deadline import time_limit, wait_until, within_step
from lifeline.tasks.adapters.locks import RepositoryBusy, repository_lock


def test_wait_until_returns_the_first_true_result():
    answers = iter([None, [], "ready", "later"])
    assert wait_until(lambda: next(answers), timeout=10, interval=0.01) == "ready"


def test_wait_until_asks_at_least_once_and_returns_the_last_false_result():
    calls = []
    assert wait_until(lambda: calls.append(1) or [], timeout=0, interval=1) == []
    assert calls == [1]


def test_a_wait_does_not_outlive_its_step():
    started = time.monotonic()
    with time_limit(0.3):
        assert within_step(600) <= 0.3
        assert not wait_until(lambda: False, timeout=600, interval=0.05)
    assert time.monotonic() - started < 5  # the step's 0.3 s, not the wait's own 600 s
    assert within_step(600) == 600  # outside the step, a wait keeps its own timeout


def test_a_repository_held_by_another_run_is_busy_when_the_step_runs_out(tmp_path):
    with repository_lock(tmp_path, "local", "/srv/repo", exclusive=True):
        with time_limit(0.3), pytest.raises(RepositoryBusy, match="repository local: still in use"):
            with repository_lock(tmp_path, "local", "/srv/repo", exclusive=False):
                pass
    with repository_lock(tmp_path, "local", "/srv/repo", exclusive=False):  # free again once released
        pass
