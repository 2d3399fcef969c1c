"""The case event store: append with optimistic concurrency, read a case, read everything in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from civicflow.db import as_json
from civicflow.events import CaseEvent, EventMetadata, RecordedEvent, decode_payload
from civicflow.ids import uuid7

# Appends take this transaction-scoped advisory lock, so positions are handed out in commit order and
# a reader that has seen position N will never later find a committed event below N. See DESIGN.md.
APPEND_LOCK_KEY = 0x311_C_A5E


class ConcurrencyConflict(Exception):
    """Another writer appended to the case first; reload the case and decide again."""

    def __init__(self, case_id: UUID, expected: int, actual: int | None) -> None:
        found = "a concurrent append" if actual is None else f"version {actual}"
        super().__init__(f"case {case_id}: expected version {expected}, found {found}")
        self.case_id = case_id


@dataclass(frozen=True)
class StreamAppend:
    """Events to append to one case, after `expected_version` (None: after whatever the case holds)."""

    case_id: UUID
    expected_version: int | None
    events: Sequence[CaseEvent]
    metadata: EventMetadata
    occurred_at: datetime | None = None


class EventStore(Protocol):
    async def append_many(self, tx: AsyncConnection, appends: Sequence[StreamAppend]) -> list[RecordedEvent]: ...

    async def append(
        self,
        tx: AsyncConnection,
        case_id: UUID,
        expected_version: int | None,
        events: Sequence[CaseEvent],
        metadata: EventMetadata,
        occurred_at: datetime | None = None,
    ) -> list[RecordedEvent]: ...

    async def read_stream(self, tx: AsyncConnection, case_id: UUID) -> list[RecordedEvent]: ...

    def streams_opened_since(
        self, tx: AsyncConnection, since: datetime, types: Sequence[str]
    ) -> AsyncIterator[list[RecordedEvent]]: ...

    async def count_streams_opened_since(self, tx: AsyncConnection, since: datetime) -> int: ...

    async def read_all(self, tx: AsyncConnection, after: int, limit: int) -> list[RecordedEvent]: ...


_COLUMNS = "position, event_id, case_id, version, type, schema_version, data, metadata, occurred_at, recorded_at"


def _row_to_event(row: Any) -> RecordedEvent:
    return RecordedEvent(
        position=row.position,
        event_id=row.event_id,
        case_id=row.case_id,
        version=row.version,
        type=row.type,
        schema_version=row.schema_version,
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
        metadata=EventMetadata.model_validate(as_json(row.metadata)),
        data=decode_payload(row.type, row.schema_version, as_json(row.data)),
    )


class PostgresEventStore:
    """The system of record, table events.case_events. Every method runs inside the caller's transaction."""

    async def append(
        self,
        tx: AsyncConnection,
        case_id: UUID,
        expected_version: int | None,
        events: Sequence[CaseEvent],
        metadata: EventMetadata,
        occurred_at: datetime | None = None,
    ) -> list[RecordedEvent]:
        """Append after expected_version, or after whatever the case holds when expected_version is None
        (for reactions whose decision does not depend on the rest of the stream)."""
        if not events:
            return []
        await tx.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK_KEY})
        current = (
            await tx.execute(
                text("SELECT coalesce(max(version), 0) FROM events.case_events WHERE case_id = :c"),
                {"c": case_id},
            )
        ).scalar_one()
        if expected_version is None:
            expected_version = current
        elif current != expected_version:
            raise ConcurrencyConflict(case_id, expected_version, current)
        when = occurred_at or datetime.now(UTC)
        meta_json = metadata.model_dump_json()
        recorded: list[RecordedEvent] = []
        for offset, event in enumerate(events, start=1):
            params: dict[str, Any] = {
                "event_id": uuid7(),
                "case_id": case_id,
                "version": expected_version + offset,
                "type": event.event_type,
                "schema_version": event.schema_version,
                "data": event.model_dump_json(),
                "metadata": meta_json,
                "occurred_at": when,
            }
            try:
                row = (
                    await tx.execute(
                        text(
                            "INSERT INTO events.case_events"
                            " (event_id, case_id, version, type, schema_version, data, metadata, occurred_at)"
                            " VALUES (:event_id, :case_id, :version, :type, :schema_version,"
                            " CAST(:data AS jsonb), CAST(:metadata AS jsonb), :occurred_at)"
                            " RETURNING position, recorded_at"
                        ),
                        params,
                    )
                ).one()
            except IntegrityError as exc:  # the unique (case_id, version) caught a racing writer
                raise ConcurrencyConflict(case_id, expected_version, None) from exc
            recorded.append(
                RecordedEvent(
                    position=row.position,
                    event_id=params["event_id"],
                    case_id=case_id,
                    version=params["version"],
                    type=event.event_type,
                    schema_version=event.schema_version,
                    occurred_at=when,
                    recorded_at=row.recorded_at,
                    metadata=metadata,
                    data=event,
                )
            )
        return recorded

    async def append_many(self, tx: AsyncConnection, appends: Sequence[StreamAppend]) -> list[RecordedEvent]:
        """Several cases' appends in one transaction, in order; a conflict on any fails them all."""
        recorded: list[RecordedEvent] = []
        for append in appends:
            recorded += await self.append(
                tx, append.case_id, append.expected_version, append.events, append.metadata, append.occurred_at
            )
        return recorded

    async def read_stream(self, tx: AsyncConnection, case_id: UUID) -> list[RecordedEvent]:
        rows = await tx.execute(
            text(f"SELECT {_COLUMNS} FROM events.case_events WHERE case_id = :c ORDER BY version"),
            {"c": case_id},
        )
        return [_row_to_event(row) for row in rows]

    async def streams_opened_since(
        self, tx: AsyncConnection, since: datetime, types: Sequence[str]
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Each case whose stream began at or after `since`, one list of its events of `types` at a time
        (streamed from the server, so a year of cases does not sit in memory)."""
        result = await tx.stream(
            text(
                f"SELECT {_COLUMNS} FROM events.case_events"
                " WHERE case_id IN (SELECT case_id FROM events.case_events WHERE version = 1 AND occurred_at >= :since)"
                " AND type = ANY(:types) ORDER BY case_id, version"
            ),
            {"since": since, "types": list(types)},
        )
        case: list[RecordedEvent] = []
        async for row in result:
            event = _row_to_event(row)
            if case and case[0].case_id != event.case_id:
                yield case
                case = []
            case.append(event)
        if case:
            yield case

    async def count_streams_opened_since(self, tx: AsyncConnection, since: datetime) -> int:
        return int(
            (
                await tx.execute(
                    text("SELECT count(*) FROM events.case_events WHERE version = 1 AND occurred_at >= :since"),
                    {"since": since},
                )
            ).scalar_one()
        )

    async def read_all(self, tx: AsyncConnection, after: int, limit: int) -> list[RecordedEvent]:
        rows = await tx.execute(
            text(f"SELECT {_COLUMNS} FROM events.case_events WHERE position > :p ORDER BY position LIMIT :n"),
            {"p": after, "n": limit},
        )
        return [_row_to_event(row) for row in rows]
