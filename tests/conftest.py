"""Test infrastructure from one resolver: the environment, testcontainers, or the embedded pair.

Each test session gets its own database and its own topics, so runs never see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

import asyncpg
import pytest

from civicflow.db import libpq_url
from civicflow.infra import Infrastructure, provide
from civicflow.migrate import migrate
from civicflow.settings import KernelSettings

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    with provide(ROOT / ".civicflow" / "test") as infra:
        yield infra


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


@contextlib.asynccontextmanager
async def fresh_database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A new, migrated database of its own, dropped afterwards."""
    from civicflow.cli import migration_sets

    name = f"cf_test_{uuid4().hex[:12]}"
    admin = await asyncpg.connect(libpq_url(infrastructure.database_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = _with_database(infrastructure.database_url, name)
        await migrate(url, migration_sets())
        yield url
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def database_url(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A fresh, migrated database for this session's integration tests."""
    async with fresh_database(infrastructure) as url:
        yield url


@pytest.fixture
def settings(infrastructure: Infrastructure, database_url: str, tmp_path: Path) -> KernelSettings:
    """Kernel settings with topics of this test's own."""
    suffix = uuid4().hex[:10]
    return KernelSettings(
        database_url=database_url,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        case_events_topic=f"civicflow.case-events.{suffix}",
        dead_letter_topic=f"civicflow.case-events.{suffix}.dlq",
        state_dir=tmp_path,
        handler_retry_base_seconds=0.01,
    )


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 30, what: str = "outcome") -> T:
    """Poll probe until it returns something truthy, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
