"""An empty flow, served the way `lifeline serve` serves Lifeline's: the start benchmark's baseline."""

from prefect import flow, serve


@flow(name="empty")
def empty() -> None:
    pass


def serve_empty(query_seconds: float) -> None:
    serve(empty.to_deployment(name="empty"), query_seconds=query_seconds, limit=None)
