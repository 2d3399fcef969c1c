"""`civicflow replay query`: rebuild the read model from the event store (added through an entry point)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import typer

from civicflow.reach import database_url


def replay_query() -> None:
    """Rebuild the query service's read model from the event store (CIVICFLOW_DATABASE_URL's, or the
    system `civicflow dev` is running)."""
    count = asyncio.run(_rebuild(database_url()))
    typer.echo(f"read model rebuilt from {count} events")


async def _rebuild(url: str) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from civicflow.db import make_engine
    from civicflow.eventstore import PostgresEventStore
    from services.query.readmodel import replay

    engine = make_engine(url)
    try:
        # transient and on stderr: the one line this command prints stays what it was
        with Progress(transient=True, console=Console(stderr=True)) as progress:
            task = progress.add_task("replaying events", total=None)
            extra: dict[str, Any] = {}
            if "progress" in inspect.signature(replay).parameters:  # a replay that reports how far it got
                extra["progress"] = _reporter(lambda done, total: progress.update(task, completed=done, total=total))
            return await replay(engine, PostgresEventStore(), **extra)
    finally:
        await engine.dispose()


def _reporter(show: Callable[[int, int | None], None]) -> Callable[..., None]:
    """Takes (events done) or (events done, events in all), as numbers or by those names."""

    def report(*numbers: int, **named: int) -> None:
        values = [*numbers, *named.values()]
        if values:
            show(values[0], values[1] if len(values) > 1 else None)

    return report
