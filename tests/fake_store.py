"""The in-memory event store as policies' unit tests use it: holding given events, counting its reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from civicflow.events import RecordedEvent
from civicflow.eventstore import EventStore
from civicflow.eventstore_memory import InMemoryEventStore
from civicflow.unit_of_work import Reads


class StoredStreams(InMemoryEventStore):
    """An InMemoryEventStore that already holds the given events and counts read_stream calls."""

    def __init__(self, *events: RecordedEvent) -> None:
        super().__init__()
        self.hold(events)
        self.reads = 0

    async def read_stream(self, tx: object, case_id: UUID) -> list[RecordedEvent]:
        self.reads += 1
        return await super().read_stream(tx, case_id)

    def reads_of(self) -> Reads:
        """Reads over this store, with no transaction (a policy under test must not need one)."""
        return Reads(cast(AsyncConnection, None), cast(EventStore, self))


def events_of(appends: Sequence[Any]) -> list[Any]:
    return [event for append in appends for event in append.events]
