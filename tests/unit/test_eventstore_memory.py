"""The in-memory event store passes the store's contract, so handler tests can use it for the real one."""

from __future__ import annotations

from contextlib import nullcontext

import pytest

from civicflow.eventstore import EventStore
from civicflow.eventstore_memory import InMemoryEventStore
from tests.eventstore_contract import Begin, EventStoreContract


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self) -> EventStore:
        return InMemoryEventStore()

    @pytest.fixture
    def begin(self) -> Begin:
        return lambda: nullcontext(None)
