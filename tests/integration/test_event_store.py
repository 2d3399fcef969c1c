"""The event store on real PostgreSQL: the store contract, racing writers, gap-free reading under load."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.db import make_engine
from civicflow.events import EventMetadata, WorkOrderStatusChanged
from civicflow.eventstore import Checkpoint, ConcurrencyConflict, EventStore, PostgresEventStore, StreamAppend
from civicflow.ids import uuid7
from civicflow.settings import KernelSettings
from tests.conftest import eventually
from tests.eventstore_contract import Begin, EventStoreContract
from tests.integration.store_ends import end_of_store

pytestmark = pytest.mark.integration
META = EventMetadata(correlation_id=uuid7(), actor="test")


def status(n: int) -> WorkOrderStatusChanged:
    return WorkOrderStatusChanged(external_id=f"WO-{n}", status="in_progress")


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    def store(self) -> EventStore:
        return PostgresEventStore()

    @pytest.fixture
    async def begin(self, settings: KernelSettings) -> AsyncIterator[Begin]:
        engine = make_engine(settings.database_url)
        yield engine.begin
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


async def test_reading_in_commit_order_never_skips_an_event_under_many_concurrent_writers(
    settings: KernelSettings,
) -> None:
    """Many writers take their transaction ids early, then hold their transactions open for random times
    before and after inserting, so ids, positions and commits come in different orders. A reader following
    checkpoints must still end up having seen every committed event exactly once."""
    writers, appends_each = 24, 8
    engine = make_engine(settings.database_url, pool_size=writers + 2)
    store = PostgresEventStore()
    async with engine.connect() as conn:
        start = await end_of_store(conn)
    writers_done = asyncio.Event()
    written: set[int] = set()

    async def writer(w: int) -> None:
        for n in range(appends_each):
            async with engine.begin() as tx:
                await tx.execute(text("SELECT pg_current_xact_id()"))  # as a handler writing its inbox first
                await asyncio.sleep(random.uniform(0, 0.01))
                recorded = await store.append(tx, uuid7(), 0, [status(w * 100 + n)], META)
                await asyncio.sleep(random.uniform(0, 0.01))  # hold the transaction open a while
            written.update(e.position for e in recorded)

    seen: list[Checkpoint] = []
    # the store's end once the writers are done, and until when to go on reading towards it: a page may
    # come back empty while an older transaction anywhere in the cluster still runs (the xmin rule)
    store_end_after_writers: list[Checkpoint] = []
    give_up_at: list[float] = []

    async def reader() -> None:
        checkpoint = start
        while True:
            done = writers_done.is_set()
            async with engine.connect() as conn:
                page = await store.read_all(conn, checkpoint, 7)
                xids = await conn.execute(
                    text("SELECT position, CAST(xid AS text) AS xid FROM events.case_events WHERE position = ANY(:p)"),
                    {"p": [e.position for e in page.events]},
                )
                by_position = {row.position: int(row.xid) for row in xids}
            seen.extend(Checkpoint(by_position[e.position], e.position) for e in page.events)
            if page.events:
                assert page.next == seen[-1]
                checkpoint = page.next
            elif done:
                if not store_end_after_writers or checkpoint >= store_end_after_writers[0]:
                    return
                if time.monotonic() > give_up_at[0]:
                    return  # it never got there: the assertions below say what it skipped
                await asyncio.sleep(0.05)
            await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    try:
        await asyncio.gather(*(writer(w) for w in range(writers)))
        async with engine.connect() as conn:
            store_end_after_writers.append(await end_of_store(conn))
        give_up_at.append(time.monotonic() + 60)
    finally:
        writers_done.set()  # also when a writer failed, so the reader does not go on for ever
        await reading
    positions = [c.position for c in seen]
    assert seen == sorted(seen), "read in (transaction id, position) order"
    assert len(positions) == len(set(positions))
    assert written <= set(positions), f"reader skipped {len(written - set(positions))} committed events"
    await engine.dispose()


async def test_a_transaction_older_than_the_cases_last_writer_may_not_follow_it(settings: KernelSettings) -> None:
    """Readers follow transaction ids, so a case's versions must be in the order of their writers' ids."""
    engine, store, case_id = make_engine(settings.database_url), PostgresEventStore(), uuid7()
    async with engine.connect() as older:
        async with older.begin():
            await older.execute(text("SELECT pg_current_xact_id()"))  # it wrote something else first
            async with engine.begin() as younger:
                await younger.execute(text("SELECT pg_current_xact_id()"))
                await store.append(younger, case_id, None, [status(1)], META)
            with pytest.raises(ConcurrencyConflict, match="younger"):
                await store.append(older, case_id, None, [status(2)], META)
    async with engine.begin() as tx:  # a new transaction has a newer id and goes on
        [event] = await store.append(tx, case_id, None, [status(2)], META)
    assert event.version == 2
    await engine.dispose()


async def test_a_writer_that_took_no_case_lock_still_cannot_take_a_version_twice(settings: KernelSettings) -> None:
    """The unique (case_id, version) is the last word: its violation is a conflict naming the case."""
    engine, store, case_id = make_engine(settings.database_url), PostgresEventStore(), uuid7()
    async with engine.connect() as other:
        await other.begin()
        await other.execute(  # an insert by hand (or by an older release of civicflow), not yet committed
            text(
                "INSERT INTO events.case_events (event_id, case_id, version, type, schema_version, data, metadata,"
                " occurred_at) VALUES (:e, :c, 1, 'WorkOrderStatusChanged', 1, CAST(:d AS jsonb),"
                " CAST(:m AS jsonb), now())"
            ),
            {"e": uuid7(), "c": case_id, "d": status(1).model_dump_json(), "m": META.model_dump_json()},
        )

        async def ours() -> None:
            async with engine.begin() as tx:
                await store.append_many(
                    tx, [StreamAppend(uuid7(), 0, [status(2)], META), StreamAppend(case_id, 0, [status(2)], META)]
                )

        racing = asyncio.create_task(ours())
        await eventually(lambda: _waiting_on_a_lock(engine), what="our insert to wait on the uncommitted version")
        await other.commit()
        with pytest.raises(ConcurrencyConflict, match=str(case_id)) as conflict:
            await racing
    assert conflict.value.case_id == case_id
    await engine.dispose()


async def _waiting_on_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return bool(
            await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events.case_events%'"
                )
            )
        )


async def test_two_transactions_appending_to_each_others_cases_crosswise_end_in_one_conflict(
    settings: KernelSettings,
) -> None:
    """Separate appends lock their cases one append at a time, so two transactions can wait for each other;
    PostgreSQL ends one, and the store says so as a conflict (decide again), not as a database error."""
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    x, y = uuid7(), uuid7()
    first_appended = [asyncio.Event(), asyncio.Event()]

    async def crosswise(mine: UUID, theirs: UUID, me: int) -> bool:
        try:
            async with engine.begin() as tx:
                await store.append(tx, mine, None, [status(me)], META)
                first_appended[me].set()
                await first_appended[1 - me].wait()
                await store.append(tx, theirs, None, [status(me)], META)
            return True
        except ConcurrencyConflict as conflict:
            assert "waited for a case this one held" in str(conflict)
            return False

    outcomes = await asyncio.gather(crosswise(x, y, 0), crosswise(y, x, 1))
    assert sorted(outcomes) == [False, True]
    await engine.dispose()


async def test_transaction_ids_are_read_in_numeric_order_across_a_power_of_ten(settings: KernelSettings) -> None:
    """A store's transaction ids pass 999 → 1000 early in its life: read as text, '1000' sorted before '999'
    and the reader skipped back and forth (found on a fresh cluster). Two events written as if by
    transactions 9 and 10, the one of 9 stored after the one of 10, must come back 9 first."""
    engine, store, case_id = make_engine(settings.database_url), PostgresEventStore(), uuid7()
    async with engine.begin() as tx:
        for xid, version in ((10, 1), (9, 2)):
            await tx.execute(
                text(
                    "INSERT INTO events.case_events (xid, event_id, case_id, version, type, schema_version, data,"
                    " metadata, occurred_at) VALUES (CAST(CAST(:x AS text) AS xid8), :e, :c, :v,"
                    " 'WorkOrderStatusChanged', 1, CAST(:d AS jsonb), CAST(:m AS jsonb), now())"
                ),
                {
                    "x": str(xid),
                    "e": uuid7(),
                    "c": case_id,
                    "v": version,
                    "d": status(version).model_dump_json(),
                    "m": META.model_dump_json(),
                },
            )
    async with engine.connect() as conn:
        page = await store.read_all(conn, Checkpoint(8, 0), 2)
    await engine.dispose()
    assert [e.version for e in page.events] == [2, 1]
    assert page.next.xid == 10
