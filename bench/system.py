"""The system under benchmark: embedded (or environment) infrastructure, a fresh database, unique topics,
and every service started as a process — the same recipe as the end-to-end tests, without importing them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import asyncpg
from cryptography.fernet import Fernet

from civicflow.cli import migration_sets
from civicflow.db import libpq_url
from civicflow.infra import Infrastructure
from civicflow.kafka import ensure_topics
from civicflow.launcher import Ports, SystemProcesses
from civicflow.migrate import migrate
from civicflow.settings import KernelSettings

STATE_DIR = Path(".civicflow/bench")


def nothing_exited() -> dict[str, int]:
    return {}


@dataclass(frozen=True)
class Endpoints:
    """Where the benchmark client finds the system's gRPC services, and how to tell if any of its processes
    has exited (name → exit code; always empty for a system this run did not start)."""

    intake: str
    query: str
    exited: Callable[[], dict[str, int]] = nothing_exited


def use_embedded_by_default() -> None:
    """Benchmarks run on the embedded pair unless the caller asks otherwise."""
    os.environ.setdefault("CIVICFLOW_USE_TESTCONTAINERS", "no")


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


@contextlib.asynccontextmanager
async def fresh_database(infra: Infrastructure) -> AsyncIterator[str]:
    """A new, migrated database of the bench's own, dropped afterwards."""
    name = f"cf_bench_{uuid4().hex[:12]}"
    admin = await asyncpg.connect(libpq_url(infra.database_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = with_database(infra.database_url, name)
            await migrate(url, migration_sets())
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def unique_topics() -> dict[str, str]:
    suffix = uuid4().hex[:10]
    return {
        "CIVICFLOW_CASE_EVENTS_TOPIC": f"civicflow.case-events.bench.{suffix}",
        "CIVICFLOW_DEAD_LETTER_TOPIC": f"civicflow.case-events.bench.{suffix}.dlq",
    }


@contextlib.asynccontextmanager
async def running_system(infra: Infrastructure, database_url: str, state_dir: Path) -> AsyncIterator[Endpoints]:
    """Every service as a process on its own topics and the given database; all stopped on the way out.

    Logs and mail go to <state_dir>/system, emptied first."""
    topics = unique_topics()
    await ensure_topics(
        KernelSettings(
            kafka_bootstrap_servers=infra.kafka_bootstrap_servers,
            case_events_topic=topics["CIVICFLOW_CASE_EVENTS_TOPIC"],
            dead_letter_topic=topics["CIVICFLOW_DEAD_LETTER_TOPIC"],
        )
    )
    run_dir = state_dir / "system"  # never state_dir itself: the embedded PostgreSQL keeps its data there
    shutil.rmtree(run_dir, ignore_errors=True)  # logs and mail of the previous run
    system = SystemProcesses(
        Infrastructure(database_url, infra.kafka_bootstrap_servers, infra.kind),
        run_dir,
        Ports.free(),
        extra_env={
            **topics,
            "CIVICFLOW_PII_MASTER_KEY": Fernet.generate_key().decode(),
            "CIVICFLOW_SAMPLE_DEPT_STEP_SECONDS": "1.0",
        },
    )
    try:
        await asyncio.to_thread(system.start_all)
        yield Endpoints(f"127.0.0.1:{system.ports.intake}", f"127.0.0.1:{system.ports.query}", system.exited)
    finally:
        await asyncio.to_thread(system.stop_all)
