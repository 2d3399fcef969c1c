"""An event store in memory, for unit tests of handlers: the PostgreSQL store's behaviour without a database."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from civicflow.events import CaseEvent, EventMetadata, RecordedEvent
from civicflow.eventstore import Checkpoint, EventStore, Page, StreamAppend, drafted, next_versions


class InMemoryEventStore:
    """Versions, optimistic concurrency, global positions and the commit-order reader, as the PostgreSQL
    store has them. Every append commits at once as a transaction of its own (the `tx` argument is
    accepted and ignored), so a test that wants a rollback builds a new store."""

    def __init__(self) -> None:
        self._events: list[RecordedEvent] = []
        self._xids: list[int] = []  # the transaction id of each event, as PostgreSQL stores one
        self._streams: dict[UUID, list[RecordedEvent]] = {}
        self._last_xid = 0

    def hold(self, history: Sequence[RecordedEvent]) -> None:
        """Take events recorded elsewhere (a test's fixtures, an imported history) as this store's own, in
        the given order, each as a transaction of its own."""
        for event in history:
            self._last_xid += 1
            self._events.append(event)
            self._xids.append(self._last_xid)
            stream = self._streams.setdefault(event.case_id, [])
            stream.append(event)
            stream.sort(key=lambda e: e.version)

    async def append(
        self,
        tx: object,
        case_id: UUID,
        expected_version: int | None,
        events: Sequence[CaseEvent],
        metadata: EventMetadata,
        occurred_at: datetime | None = None,
    ) -> list[RecordedEvent]:
        return await self.append_many(tx, [StreamAppend(case_id, expected_version, events, metadata, occurred_at)])

    async def append_many(self, tx: object, appends: Sequence[StreamAppend]) -> list[RecordedEvent]:
        """All of the batch or nothing: every expected version is checked before anything is stored."""
        appends = [a for a in appends if a.events]
        if not appends:
            return []
        current = {a.case_id: len(self._streams.get(a.case_id, [])) for a in appends}
        after = next_versions(current, appends)
        self._last_xid += 1
        now = datetime.now(UTC)
        recorded: list[RecordedEvent] = []
        for append, latest in zip(appends, after, strict=True):
            for draft in drafted(append, latest, now):
                stored = draft.model_copy(update={"position": len(self._events) + 1})
                self._events.append(stored)
                self._xids.append(self._last_xid)
                self._streams.setdefault(append.case_id, []).append(stored)
                recorded.append(stored)
        return recorded

    async def read_stream(self, tx: object, case_id: UUID) -> list[RecordedEvent]:
        return list(self._streams.get(case_id, []))

    async def streams_opened_since(
        self, tx: object, since: datetime, types: Sequence[str]
    ) -> AsyncIterator[list[RecordedEvent]]:
        for case_id in sorted(self._streams, key=str):  # PostgreSQL orders by case id (uuid order = text order)
            stream = self._streams[case_id]
            if stream[0].occurred_at >= since:
                chosen = [e for e in stream if e.type in types]
                if chosen:
                    yield chosen

    async def count_streams_opened_since(self, tx: object, since: datetime) -> int:
        return sum(1 for stream in self._streams.values() if stream[0].occurred_at >= since)

    async def read_all(self, tx: object, after: Checkpoint, limit: int) -> Page:
        # appends commit as they are made, so no transaction is ever running: everything is readable, and the
        # events are already in (xid, position) order
        start = bisect_right(range(len(self._events)), after, key=lambda i: Checkpoint(self._xids[i], i + 1))
        page = self._events[start : start + limit]
        if not page:
            return Page([], after)
        return Page(page, Checkpoint(self._xids[start + len(page) - 1], page[-1].position))


if TYPE_CHECKING:
    _PORT: EventStore = InMemoryEventStore()  # mypy checks the in-memory store against the port
