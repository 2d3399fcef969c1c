"""Fixtures of the integration tier: an engine on the test database, a throwaway service schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.db import make_engine
from civicflow.settings import KernelSettings


@pytest.fixture
async def engine(settings: KernelSettings) -> AsyncIterator[AsyncEngine]:
    """An engine on the session's test database, disposed of after the test."""
    engine = make_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def schema(settings: KernelSettings) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """A throwaway service schema with the inbox the kernel expects and an effects table."""
    engine = make_engine(settings.database_url)
    name = f"svc_{uuid4().hex[:8]}"
    async with engine.begin() as tx:
        await tx.execute(text(f"CREATE SCHEMA {name}"))
        await tx.execute(
            text(f"CREATE TABLE {name}.inbox (event_id uuid PRIMARY KEY, processed_at timestamptz DEFAULT now())")
        )
        await tx.execute(text(f"CREATE TABLE {name}.effects (id bigserial PRIMARY KEY, event_id uuid, case_id uuid)"))
    yield engine, name
    await engine.dispose()
