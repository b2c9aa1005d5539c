"""Post a warning to a running `lifeline intake`, as a sender does (the drills and the benchmark use it)."""

from __future__ import annotations

import httpx
from lifeline.tasks.adapters.alerts import MalformedAlert
from lifeline.tasks.adapters.errors import LifelineError


class IntakeUnreachable(LifelineError):
    transient = True


def post_alert(url: str, token: str, body: bytes, *, timeout: float = 30.0) -> tuple[int, dict]:
    """(status code, answer) for a 2xx; a refused warning raises, naming what intake said."""
    try:
        response = httpx.post(url, content=body, timeout=timeout, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as error:
        raise IntakeUnreachable(f"intake at {url} cannot be reached ({type(error).__name__}): "
                                "is `lifeline intake` running?") from None
    answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code in (400, 401, 413):
        raise MalformedAlert(f"intake at {url} refused the warning ({response.status_code}): {answer.get('error')}")
    if response.status_code >= 300:
        raise IntakeUnreachable(f"intake at {url} answered {response.status_code}: {answer.get('error', '')}")
    return response.status_code, answer
