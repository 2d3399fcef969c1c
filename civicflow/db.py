"""Connections to PostgreSQL: one async engine per process, asyncpg underneath."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def async_url(url: str) -> str:
    """Accept the URL forms people paste (postgres://, postgresql://) and name the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL (expected postgresql://…): {url.split('@')[-1]!r}")


def libpq_url(url: str) -> str:
    """The same database as a plain libpq URL, for asyncpg or psql used directly."""
    return "postgresql://" + async_url(url)[len("postgresql+asyncpg://") :]


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        hide_parameters=True,  # errors must not echo values: they can be residents' details
        json_serializer=lambda value: json.dumps(value, separators=(",", ":")),
    )


def as_json(value: Any) -> Any:
    """jsonb comes back parsed or as text depending on how the row was read; give it back parsed."""
    return json.loads(value) if isinstance(value, str) else value
