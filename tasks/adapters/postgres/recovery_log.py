"""What a PostgreSQL server's log says about a recovery that stopped: its fatal line, and whether the WAL ran out
before the recovery target (a gap in the archive) and where the last replayed transaction was."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

ENDED_BEFORE_TARGET = "recovery ended before configured recovery target was reached"
_LAST_TRANSACTION = re.compile(r"last completed transaction was at log time (\S+ \S+)")
_FATAL = re.compile(r"\b(FATAL|PANIC):\s+(.*)")


@dataclass(frozen=True)
class StoppedRecovery:
    reason: str  # the first FATAL or PANIC line's message, or the log's last line
    ended_before_target: bool  # the archive had no more WAL: a gap, or WAL never archived
    last_transaction_at: datetime | None  # the newest transaction replayed before it stopped

    @classmethod
    def from_log(cls, lines: list[str]) -> StoppedRecovery:
        fatal = next((match.group(2).strip() for line in lines if (match := _FATAL.search(line))), None)
        replayed = [match.group(1) for line in lines if (match := _LAST_TRANSACTION.search(line))]
        return cls(reason=fatal or (lines[-1].strip() if lines else "no log"),
                   ended_before_target=any(ENDED_BEFORE_TARGET in line for line in lines),
                   last_transaction_at=datetime.fromisoformat(replayed[-1]) if replayed else None)
