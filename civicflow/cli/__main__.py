"""`python -m civicflow.cli`: the command line, as the launcher starts each service."""

from civicflow.cli import app

app()
