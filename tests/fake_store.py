"""A stand-in for the event store's reads, for policies tested without a database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from civicflow.events import RecordedEvent
from civicflow.eventstore import EventStore
from civicflow.unit_of_work import Reads


class StoredStreams:
    """Holds case streams in memory and answers read_stream, the one store read Reads makes."""

    def __init__(self, *events: RecordedEvent) -> None:
        self.streams: dict[UUID, list[RecordedEvent]] = {}
        for event in events:
            self.streams.setdefault(event.case_id, []).append(event)
        self.reads = 0

    async def read_stream(self, tx: AsyncConnection, case_id: UUID) -> list[RecordedEvent]:
        self.reads += 1
        return sorted(self.streams.get(case_id, []), key=lambda e: e.version)

    def reads_of(self) -> Reads:
        """Reads over these streams, with no transaction (a policy under test must not need one)."""
        return Reads(cast(AsyncConnection, None), cast(EventStore, self))


def events_of(appends: Sequence[Any]) -> list[Any]:
    return [event for append in appends for event in append.events]
