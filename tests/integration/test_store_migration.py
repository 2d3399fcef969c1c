"""Migration 0004 on a store written before it: old events read first, the relay's cursor goes on."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from importlib.resources import as_file
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from civicflow.db import libpq_url, make_engine
from civicflow.events import EventMetadata, RecordedEvent, WorkOrderStatusChanged
from civicflow.eventstore import START, Checkpoint, PostgresEventStore
from civicflow.ids import uuid7
from civicflow.infra import Infrastructure
from civicflow.migrate import KERNEL, MigrationSet, migrate
from civicflow.sandbox import with_database
from tests.conftest import eventually

pytestmark = pytest.mark.integration
META = EventMetadata(correlation_id=uuid7(), actor="test")


@pytest.fixture
async def empty_database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    name = f"cf_migration_{uuid4().hex[:12]}"
    admin = await asyncpg.connect(libpq_url(infrastructure.database_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(infrastructure.database_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_store_from_before_0004_keeps_its_order_and_its_relay_cursor(
    empty_database: str, tmp_path: Path
) -> None:
    with as_file(KERNEL.folder) as folder:  # the kernel's migrations as they stood before 0004
        for script in Path(folder).glob("*.sql"):
            if script.name < "0004":
                shutil.copy(script, tmp_path / script.name)
    await migrate(empty_database, [MigrationSet("events", tmp_path)])
    old_cases = [uuid7() for _ in range(3)]
    conn = await asyncpg.connect(libpq_url(empty_database))
    try:
        for case_id in old_cases:  # as the release before 0004 wrote them
            await conn.execute(
                "INSERT INTO events.case_events (event_id, case_id, version, type, schema_version, data, metadata,"
                " occurred_at) VALUES ($1, $2, 1, 'WorkOrderStatusChanged', 1, $3::jsonb, $4::jsonb, now())",
                uuid7(),
                case_id,
                WorkOrderStatusChanged(external_id="WO", status="open").model_dump_json(),
                META.model_dump_json(),
            )
        first = await conn.fetchval("SELECT min(position) FROM events.case_events")
        await conn.execute("INSERT INTO events.relay_cursor (topic, position) VALUES ('t', $1)", first)
    finally:
        await conn.close()

    assert "events/0004_commit_order.sql" in await migrate(empty_database, [KERNEL])
    conn = await asyncpg.connect(libpq_url(empty_database))
    try:
        cursor = await conn.fetchrow("SELECT xid::text AS xid, position FROM events.relay_cursor WHERE topic = 't'")
    finally:
        await conn.close()
    assert (cursor["xid"], cursor["position"]) == ("0", first), "the relay's cursor stands where it stood"

    engine, store = make_engine(empty_database), PostgresEventStore()
    async with engine.begin() as tx:
        [new] = await store.append(tx, uuid7(), 0, [WorkOrderStatusChanged(external_id="WO", status="new")], META)

    async def read_with_the_new_event() -> tuple[list[RecordedEvent], list[RecordedEvent]] | None:
        # a whole-store read sees only transactions older than the cluster's oldest running one: wait for it
        async with engine.connect() as conn2:
            everything = (await store.read_all(conn2, START, 10)).events
            resumed = (await store.read_all(conn2, Checkpoint(0, first), 10)).events
        seen = [e.event_id for e in everything], [e.event_id for e in resumed]
        return (everything, resumed) if all(new.event_id in ids for ids in seen) else None

    try:
        everything, resumed = await eventually(read_with_the_new_event, what="the new event in the whole store")
    finally:
        await engine.dispose()
    assert [e.case_id for e in everything] == [*old_cases, new.case_id], "the old events first, in position order"
    assert [e.case_id for e in resumed] == [*old_cases[1:], new.case_id], "a cursor at (0, N) goes on after N"
