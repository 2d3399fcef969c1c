"""The event store against real PostgreSQL: concurrency on a case, and gap-free reading under load."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from civicflow.db import make_engine
from civicflow.events import CaseResolved, EventMetadata, WorkOrderStatusChanged
from civicflow.eventstore import ConcurrencyConflict, PostgresEventStore
from civicflow.ids import uuid7
from civicflow.settings import KernelSettings

pytestmark = pytest.mark.integration
META = EventMetadata(correlation_id=uuid7(), actor="test")


def status(n: int) -> WorkOrderStatusChanged:
    return WorkOrderStatusChanged(external_id=f"WO-{n}", status="in_progress")


async def test_a_case_reads_back_in_version_order(settings: KernelSettings) -> None:
    engine, store, case_id = make_engine(settings.database_url), PostgresEventStore(), uuid7()
    async with engine.begin() as tx:
        await store.append(tx, case_id, 0, [status(1), status(2)], META)
    async with engine.begin() as tx:
        await store.append(tx, case_id, 2, [CaseResolved(resolution="fixed", resolved_at=datetime.now(UTC))], META)
        events = await store.read_stream(tx, case_id)
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.type for e in events] == ["WorkOrderStatusChanged", "WorkOrderStatusChanged", "CaseResolved"]
    assert events[0].data == status(1)
    await engine.dispose()


async def test_a_stale_writer_gets_a_conflict_and_writes_nothing(settings: KernelSettings) -> None:
    engine, store, case_id = make_engine(settings.database_url), PostgresEventStore(), uuid7()
    async with engine.begin() as tx:
        await store.append(tx, case_id, 0, [status(1)], META)
    with pytest.raises(ConcurrencyConflict):
        async with engine.begin() as tx:
            await store.append(tx, case_id, 0, [status(2)], META)
    async with engine.connect() as conn:
        assert len(await store.read_stream(conn, case_id)) == 1
    await engine.dispose()


async def test_racing_writers_on_one_case_exactly_one_wins(settings: KernelSettings) -> None:
    engine, store, case_id = make_engine(settings.database_url), PostgresEventStore(), uuid7()

    async def write(n: int) -> bool:
        try:
            async with engine.begin() as tx:
                await store.append(tx, case_id, 0, [status(n)], META)
            return True
        except ConcurrencyConflict:
            return False

    outcomes = await asyncio.gather(*(write(n) for n in range(8)))
    assert outcomes.count(True) == 1
    async with engine.connect() as conn:
        assert len(await store.read_stream(conn, case_id)) == 1
    await engine.dispose()


async def test_reading_by_position_never_skips_an_event_under_concurrent_writers(settings: KernelSettings) -> None:
    """Writers hold their transactions open for random times; a reader following positions must still
    end up having seen every committed event exactly once, in position order."""
    engine = make_engine(settings.database_url, pool_size=12)
    store = PostgresEventStore()
    async with engine.connect() as conn:
        start = (await conn.execute(text("SELECT coalesce(max(position), 0) FROM events.case_events"))).scalar_one()
    writers_done = asyncio.Event()
    written: set[int] = set()

    async def writer(w: int) -> None:
        for n in range(15):
            async with engine.begin() as tx:
                recorded = await store.append(tx, uuid7(), 0, [status(w * 100 + n)], META)
                await asyncio.sleep(random.uniform(0, 0.01))  # hold the transaction open a while
            written.update(e.position for e in recorded)

    seen: list[int] = []

    async def reader() -> None:
        position = start
        while True:
            done = writers_done.is_set()
            async with engine.connect() as conn:
                batch = await store.read_all(conn, position, 7)
            seen.extend(e.position for e in batch)
            if batch:
                position = batch[-1].position
            elif done:
                return
            await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(8)))
    writers_done.set()
    await reading
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))
    assert written <= set(seen), f"reader skipped {len(written - set(seen))} committed events"
    await engine.dispose()
