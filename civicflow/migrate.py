"""Schema migrations: each owner (the kernel, each service) applies its numbered SQL files once, in order."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg
import structlog

from civicflow.db import libpq_url

log = structlog.get_logger(__name__)

MIGRATION_LOCK_KEY = 0x311_0_DB


@dataclass(frozen=True)
class MigrationSet:
    owner: str
    folder: Traversable

    @classmethod
    def of_package(cls, owner: str, package: str) -> MigrationSet:
        return cls(owner, files(package) / "migrations")

    def scripts(self) -> list[tuple[str, str]]:
        found = [f for f in self.folder.iterdir() if f.name.endswith(".sql")]
        return [(f.name, f.read_text()) for f in sorted(found, key=lambda f: f.name)]


KERNEL = MigrationSet.of_package("events", "civicflow")


def all_migration_sets() -> list[MigrationSet]:
    """The kernel's, then each service's (found by its entry point, so the kernel imports no service)."""
    services = entry_points(group="civicflow.services")
    return [
        KERNEL,
        *(
            MigrationSet.of_package(ep.name, ep.module.rsplit(".", 1)[0])
            for ep in sorted(services, key=lambda e: e.name)
        ),
    ]


async def migrate(database_url: str, sets: list[MigrationSet]) -> list[str]:
    """Apply every migration not yet applied; safe to run again and from several processes at once."""
    conn = await asyncpg.connect(libpq_url(database_url))
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS public.civicflow_migrations ("
            " owner text NOT NULL, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (owner, name))"
        )
        done = {(r["owner"], r["name"]) for r in await conn.fetch("SELECT owner, name FROM civicflow_migrations")}
        for migration_set in sets:
            for name, sql in migration_set.scripts():
                if (migration_set.owner, name) in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO civicflow_migrations (owner, name) VALUES ($1, $2)", migration_set.owner, name
                    )
                applied_now.append(f"{migration_set.owner}/{name}")
                log.info("migration applied", owner=migration_set.owner, migration=name)
    finally:
        await conn.close()
    return applied_now
