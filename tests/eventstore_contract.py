"""The event store's contract: one set of tests every implementation of the port must pass.

Subclass EventStoreContract in a test module and give it two fixtures: `store` (the implementation) and
`begin` (a function returning an async context manager that yields a transaction handle and commits on
leaving it, or rolls back when it is left by an exception).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from civicflow.events import CaseResolved, EventMetadata, WorkOrderStatusChanged
from civicflow.eventstore import START, Checkpoint, ConcurrencyConflict, EventStore, StreamAppend
from civicflow.ids import uuid7
from tests.conftest import eventually

META = EventMetadata(correlation_id=uuid7(), actor="test")
Begin = Callable[[], AbstractAsyncContextManager[Any]]


def status(n: int) -> WorkOrderStatusChanged:
    return WorkOrderStatusChanged(external_id=f"WO-{n}", status="in_progress")


def resolved() -> CaseResolved:
    return CaseResolved(resolution="fixed", resolved_at=datetime.now(UTC))


def a_future_instant() -> datetime:
    """An instant no other test's case opens at, so `since` queries see this test's cases only."""
    return datetime.now(UTC) + timedelta(days=365 * 500, seconds=random.randrange(10**9))


async def end_of_store(store: EventStore, begin: Begin) -> Checkpoint:
    checkpoint = START
    async with begin() as tx:
        while (page := await store.read_all(tx, checkpoint, 1000)).events:
            checkpoint = page.next
    return checkpoint


class EventStoreContract:
    """What every EventStore does, whatever it keeps events in."""

    @pytest.fixture
    def store(self) -> EventStore:
        raise NotImplementedError("a subclass gives the implementation under test")

    @pytest.fixture
    def begin(self) -> Begin:
        raise NotImplementedError("a subclass gives the transaction it runs in")

    async def test_a_case_reads_back_in_version_order(self, store: EventStore, begin: Begin) -> None:
        case_id = uuid7()
        async with begin() as tx:
            first = await store.append(tx, case_id, 0, [status(1), status(2)], META)
        async with begin() as tx:
            await store.append(tx, case_id, 2, [resolved()], META)
            events = await store.read_stream(tx, case_id)
        assert [e.version for e in events] == [1, 2, 3]
        assert [e.type for e in events] == ["WorkOrderStatusChanged", "WorkOrderStatusChanged", "CaseResolved"]
        assert events[0].data == status(1) and events[0].metadata == META
        assert [e.event_id for e in events[:2]] == [e.event_id for e in first]
        assert [e.position for e in first] == [e.position for e in events[:2]]
        assert events[0].position < events[1].position < events[2].position

    async def test_an_unknown_case_has_no_events(self, store: EventStore, begin: Begin) -> None:
        async with begin() as tx:
            assert await store.read_stream(tx, uuid7()) == []

    async def test_a_stale_writer_gets_a_conflict_naming_the_case_and_writes_nothing(
        self, store: EventStore, begin: Begin
    ) -> None:
        case_id = uuid7()
        async with begin() as tx:
            await store.append(tx, case_id, 0, [status(1)], META)
        with pytest.raises(ConcurrencyConflict, match=str(case_id)) as conflict:
            async with begin() as tx:
                await store.append(tx, case_id, 0, [status(2)], META)
        assert conflict.value.case_id == case_id
        async with begin() as tx:
            assert len(await store.read_stream(tx, case_id)) == 1

    async def test_a_writer_ahead_of_the_case_gets_a_conflict(self, store: EventStore, begin: Begin) -> None:
        with pytest.raises(ConcurrencyConflict):
            async with begin() as tx:
                await store.append(tx, uuid7(), 3, [status(1)], META)

    async def test_no_expected_version_lands_after_whatever_the_case_holds(
        self, store: EventStore, begin: Begin
    ) -> None:
        case_id = uuid7()
        async with begin() as tx:
            await store.append(tx, case_id, None, [status(1)], META)
        async with begin() as tx:
            [event] = await store.append(tx, case_id, None, [status(2)], META)
        assert event.version == 2

    async def test_appending_nothing_records_nothing(self, store: EventStore, begin: Begin) -> None:
        case_id = uuid7()
        async with begin() as tx:
            assert await store.append(tx, case_id, 0, [], META) == []
            assert await store.append_many(tx, []) == []
            assert await store.read_stream(tx, case_id) == []

    async def test_append_many_records_several_cases_in_the_order_given(self, store: EventStore, begin: Begin) -> None:
        one, two = uuid7(), uuid7()
        async with begin() as tx:
            await store.append(tx, one, 0, [status(1)], META)
        async with begin() as tx:
            recorded = await store.append_many(
                tx,
                [
                    StreamAppend(two, 0, [status(10), status(11)], META),
                    StreamAppend(one, 1, [status(2)], META),
                    StreamAppend(two, 2, [resolved()], META),  # the same case again follows its first append
                    StreamAppend(one, None, [status(3)], META),
                ],
            )
        assert [(e.case_id, e.version) for e in recorded] == [(two, 1), (two, 2), (one, 2), (two, 3), (one, 3)]
        assert [e.position for e in recorded] == sorted(e.position for e in recorded)
        assert len({e.event_id for e in recorded}) == 5
        async with begin() as tx:
            assert [e.event_id for e in await store.read_stream(tx, two)] == [
                e.event_id for e in recorded if e.case_id == two
            ]

    async def test_a_conflict_on_one_case_of_a_batch_records_none_of_it(self, store: EventStore, begin: Begin) -> None:
        fresh, stale = uuid7(), uuid7()
        async with begin() as tx:
            await store.append(tx, stale, 0, [status(1)], META)
        with pytest.raises(ConcurrencyConflict) as conflict:
            async with begin() as tx:
                await store.append_many(
                    tx, [StreamAppend(fresh, 0, [status(1)], META), StreamAppend(stale, 0, [status(2)], META)]
                )
        assert conflict.value.case_id == stale
        async with begin() as tx:
            assert await store.read_stream(tx, fresh) == []
            assert len(await store.read_stream(tx, stale)) == 1

    async def test_the_whole_store_reads_in_order_from_a_checkpoint_page_by_page(
        self, store: EventStore, begin: Begin
    ) -> None:
        start = await end_of_store(store, begin)
        ours: list[int] = []
        for n in range(4):
            async with begin() as tx:
                recorded = await store.append_many(
                    tx, [StreamAppend(uuid7(), 0, [status(n)], META), StreamAppend(uuid7(), 0, [status(n)], META)]
                )
            ours += [e.position for e in recorded]

        async def read_from_start() -> list[int] | None:
            """Every position read from `start`, once it holds all of this test's: a whole-store read sees
            only transactions older than the oldest one running (in PostgreSQL, anywhere in the cluster), so
            one read right after the commits may stop short. The store is shared: others' events may be in it."""
            read: list[int] = []
            checkpoint = start
            async with begin() as tx:
                while (page := await store.read_all(tx, checkpoint, 3)).events:
                    assert len(page.events) <= 3
                    assert page.next > checkpoint
                    read += [e.position for e in page.events]
                    checkpoint = page.next
                assert (await store.read_all(tx, checkpoint, 3)).next == checkpoint, "an empty page stays put"
            return read if set(ours) <= set(read) else None

        read = await eventually(read_from_start, what="this test's events in the whole store")
        assert len(read) == len(set(read)), "an event read twice"
        assert [p for p in read if p in set(ours)] == ours, "this test's events, in commit order"

    async def test_streams_opened_since_gives_each_new_case_once_with_the_types_asked_for(
        self, store: EventStore, begin: Begin
    ) -> None:
        since = a_future_instant()
        old, new_one, new_two = uuid7(), uuid7(), uuid7()
        async with begin() as tx:
            await store.append_many(
                tx,
                [
                    StreamAppend(old, 0, [status(1)], META, occurred_at=since - timedelta(seconds=1)),
                    StreamAppend(new_one, 0, [status(1), resolved()], META, occurred_at=since),
                    StreamAppend(new_two, 0, [status(2)], META, occurred_at=since + timedelta(days=1)),
                ],
            )
        async with begin() as tx:
            assert await store.count_streams_opened_since(tx, since) == 2
            cases = [case async for case in store.streams_opened_since(tx, since, ["CaseResolved"])]
            everything = [case async for case in store.streams_opened_since(tx, since, ["WorkOrderStatusChanged"])]
        assert [[(e.case_id, e.type) for e in case] for case in cases] == [[(new_one, "CaseResolved")]]
        assert sorted(case[0].case_id for case in everything) == sorted([new_one, new_two])
        assert all(len({e.case_id for e in case}) == 1 for case in everything)
