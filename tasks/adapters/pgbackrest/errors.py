"""pgBackRest's failures as one line: its own `ERROR: [NNN]: message`, with the codes retrying can fix marked."""

from __future__ import annotations

import re

from lifeline.tasks.adapters.errors import LifelineError

ERROR_LINE = re.compile(r"ERROR: \[(\d{3})\]: (.*)")
TRANSIENT_CODES = {"050", "101", "104"}
"""050: lock held by another process; 101: TLS/IO error talking to the repository; 104: the repository's
service answered an error (5xx): a retry may find it well."""


class PgBackRestFailed(LifelineError):
    def __init__(self, message: str, *, transient: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        self.transient, self.code = transient, code


def classify(exit_status: int, output: str, operation: str, where: str) -> PgBackRestFailed:
    """`where` names the stanza and the host it ran on."""
    found = ERROR_LINE.findall(output)
    if found:
        code, message = found[-1]
        return PgBackRestFailed(f"pgbackrest {operation} ({where}) failed [{code}]: {message.strip()}",
                                transient=code in TRANSIENT_CODES, code=code)
    last = " | ".join(line.strip() for line in output.strip().splitlines()[-2:])[-300:]
    return PgBackRestFailed(f"pgbackrest {operation} ({where}) exited {exit_status}: {last or 'no message'}")
