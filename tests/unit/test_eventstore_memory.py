"""The in-memory event store passes the store's contract, so handler tests can use it for the real one."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime

import pytest

from civicflow.events import EventMetadata, WorkOrderStatusChanged
from civicflow.eventstore import START, EventStore
from civicflow.eventstore_memory import InMemoryEventStore
from civicflow.ids import uuid7
from tests.eventstore_contract import Begin, EventStoreContract
from tests.factories import recorded

META = EventMetadata(correlation_id=uuid7(), actor="test")


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self) -> EventStore:
        return InMemoryEventStore()

    @pytest.fixture
    def begin(self) -> Begin:
        return lambda: nullcontext(None)


async def test_a_store_holding_recorded_events_reads_them_back_as_its_own() -> None:
    """Policies' unit tests give the store the history they need (tests/fake_store.py)."""
    case_id, at = uuid7(), datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    first = recorded(
        WorkOrderStatusChanged(external_id="WO-1", status="in_progress"), case_id=case_id, version=1, at=at
    )
    second = recorded(WorkOrderStatusChanged(external_id="WO-1", status="done"), case_id=case_id, version=2, at=at)
    store = InMemoryEventStore()
    store.hold([second, first])
    assert [e.version for e in await store.read_stream(None, case_id)] == [1, 2]
    [third] = await store.append(None, case_id, 2, [WorkOrderStatusChanged(external_id="WO-1", status="closed")], META)
    assert third.version == 3
    assert len((await store.read_all(None, START, 10)).events) == 3
