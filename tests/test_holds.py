"""Repository holds in the ledger: the first hold stands, whoever else holds the repository at the same moment."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from lifeline.tasks.run.holds import Holds, RepositoryHold
from lifeline.tasks.run.ledger import Ledger


def test_runs_holding_one_repository_at_once_all_get_the_one_hold_that_stands(ledger_url: str) -> None:
    holds = Holds(Ledger(ledger_url))
    wanted = [RepositoryHold(repository="local-0a1b", name="local", url="/srv/restic", reason=f"leak {number}",
                             run_id=f"run-{number}") for number in range(8)]
    for _ in range(5):
        with ThreadPoolExecutor(len(wanted)) as pool:
            placed = list(pool.map(holds.place, wanted))
        [standing] = holds.all()
        assert standing in wanted and all(hold == standing for hold in placed)
        assert holds.release("local-0a1b") == standing and holds.release("local-0a1b") is None
