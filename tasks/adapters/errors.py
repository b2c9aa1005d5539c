"""Errors Lifeline explains in one line.

`transient`: a retry may fix it (a lock held by a live process, a network error).
`user_error`: bad input — the plan, an argument, a password, a host key — exit code 2.
"""

from __future__ import annotations


class LifelineError(Exception):
    transient = False
    user_error = False
