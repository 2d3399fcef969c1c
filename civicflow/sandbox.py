"""Throwaway databases, topics and whole systems, so each test session or benchmark run has its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from uuid import uuid4

import asyncpg
from cryptography.fernet import Fernet

from civicflow.api_clients import create_client
from civicflow.apikeys import ALL_SCOPES, Scope
from civicflow.db import libpq_url, make_engine
from civicflow.infra import Infrastructure
from civicflow.kafka import ensure_topics
from civicflow.launcher import Ports, SystemProcesses
from civicflow.migrate import all_migration_sets, migrate
from civicflow.settings import KernelSettings


def with_database(url: str, name: str) -> str:
    """The same server's URL, pointing at another database."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


@contextlib.asynccontextmanager
async def scratch_database(infra: Infrastructure, label: str) -> AsyncIterator[str]:
    """A new database with every migration applied, dropped afterwards."""
    name = f"cf_{label}_{uuid4().hex[:12]}"
    admin = await asyncpg.connect(libpq_url(infra.database_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = with_database(infra.database_url, name)
            await migrate(url, all_migration_sets())
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def own_topics(label: str) -> dict[str, str]:
    """Settings (as environment variables) naming a case-events topic and DLQ of this run's own."""
    suffix = uuid4().hex[:10]
    return {
        "CIVICFLOW_CASE_EVENTS_TOPIC": f"civicflow.case-events.{label}.{suffix}",
        "CIVICFLOW_DEAD_LETTER_TOPIC": f"civicflow.case-events.{label}.{suffix}.dlq",
    }


async def client_key(database_url: str, name: str, scopes: frozenset[Scope]) -> str:
    """A new API key in the database, for a test or benchmark client; the name gets a unique suffix."""
    engine = make_engine(database_url, pool_size=1)
    try:
        return (await create_client(engine, f"{name}-{uuid4().hex[:6]}", scopes)).reveal()
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def isolated_system(
    infra: Infrastructure, state_dir: Path, label: str, extra_env: Mapping[str, str] = {}
) -> AsyncIterator[SystemProcesses]:
    """Every process of the system on free ports, its own topics and the given infrastructure's database
    (migrated); all stopped on the way out. `system.api_key` has every scope (client `<label>-client-<random>`)."""
    topics = own_topics(label)
    await ensure_topics(
        KernelSettings(
            kafka_bootstrap_servers=infra.kafka_bootstrap_servers,
            case_events_topic=topics["CIVICFLOW_CASE_EVENTS_TOPIC"],
            dead_letter_topic=topics["CIVICFLOW_DEAD_LETTER_TOPIC"],
        )
    )
    system = SystemProcesses(
        infra,
        state_dir,
        Ports.free(),
        extra_env={**topics, "CIVICFLOW_PII_MASTER_KEY": Fernet.generate_key().decode(), **extra_env},
        api_key=await client_key(infra.database_url, f"{label}-client", ALL_SCOPES),
    )
    try:
        await asyncio.to_thread(system.start_all)
        yield system
    finally:
        await asyncio.to_thread(system.stop_all)
