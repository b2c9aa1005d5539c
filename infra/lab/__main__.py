"""``python -m lifeline.infra.lab ...`` runs the lab CLI (the same as ``lifeline lab ...``)."""

from .cli import main

main()
