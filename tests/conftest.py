"""Test infrastructure from one resolver: the environment, testcontainers, or the embedded pair.

Each test session gets its own database and its own topics, so runs never see each other's data.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

import pytest
import uvicorn
from starlette.types import ASGIApp

from civicflow.infra import Infrastructure, provide
from civicflow.sandbox import scratch_database
from civicflow.settings import KernelSettings

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    with provide(ROOT / ".civicflow" / "test") as infra:
        yield infra


@pytest.fixture(scope="session")
async def database_url(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A fresh, migrated database for this session's integration tests."""
    async with scratch_database(infrastructure, "test") as url:
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


@contextmanager
def served_in_thread(app: ASGIApp, port: int, timeout: float = 20) -> Iterator[None]:
    """An ASGI app served by uvicorn on 127.0.0.1:port in a thread of its own, for tests that are not async (a
    CLI under test runs its own event loop): started (waited for under a deadline), then stopped."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, f"the server on port {port} did not start"
        time.sleep(0.05)  # a thread's flag: polled under the deadline above
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
