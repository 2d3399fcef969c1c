"""The case event store: append with optimistic concurrency, read a case, read everything in order."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from civicflow.db import as_json
from civicflow.events import CaseEvent, EventMetadata, RecordedEvent, decode_payload
from civicflow.ids import uuid7

# Writers to one case take this advisory lock class (with the case's key) for their transaction, so the
# version they read is the version they append after. Writers to different cases never wait for each other.
CASE_LOCK_CLASS = 0x311C


class ConcurrencyConflict(Exception):
    """Another writer appended to the case first; reload the case and decide again."""

    def __init__(self, case_id: UUID, expected: int, actual: int | None, why: str | None = None) -> None:
        found = "a concurrent append" if actual is None else f"version {actual}"
        super().__init__(f"case {case_id}: {why or f'expected version {expected}, found {found}'}")
        self.case_id = case_id


@dataclass(frozen=True)
class StreamAppend:
    """Events to append to one case, after `expected_version` (None: after whatever the case holds)."""

    case_id: UUID
    expected_version: int | None
    events: Sequence[CaseEvent]
    metadata: EventMetadata
    occurred_at: datetime | None = None


@dataclass(frozen=True, order=True)
class Checkpoint:
    """Where a whole-store reader stands: after the event at `position` written by transaction `xid`.

    The store is read in (xid, position) order, and only transactions older than the oldest one still
    running are read, so no event can ever commit behind a checkpoint. Positions alone are not in that
    order (a transaction may take a position and commit after a later one), so keep both."""

    xid: int = 0
    position: int = 0


START = Checkpoint()


@dataclass(frozen=True)
class Page:
    """A batch of the whole store in commit order, and the checkpoint to read on from."""

    events: list[RecordedEvent]
    next: Checkpoint


def drafted(append: StreamAppend, after: int, now: datetime) -> list[RecordedEvent]:
    """The append's events as they will be recorded after version `after`: fresh event ids, and position 0
    and recorded at `now` until a store records them and says when and where."""
    occurred_at = append.occurred_at or now
    return [
        RecordedEvent(
            position=0,
            event_id=uuid7(),
            case_id=append.case_id,
            version=after + offset,
            type=event.event_type,
            schema_version=event.schema_version,
            occurred_at=occurred_at,
            recorded_at=now,
            metadata=append.metadata,
            data=event,
        )
        for offset, event in enumerate(append.events, start=1)
    ]


class EventStore(Protocol):
    """The store port. `tx` is the caller's transaction (an AsyncConnection for PostgreSQL; the in-memory
    store takes anything), so events are appended together with the caller's own state changes."""

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

    async def read_all(self, tx: AsyncConnection, after: Checkpoint, limit: int) -> Page: ...


_COLUMNS = "position, event_id, case_id, version, type, schema_version, data, metadata, occurred_at, recorded_at"


def _row_to_event(row: Any) -> RecordedEvent:
    # The envelope comes from typed columns and metadata this store wrote itself, so it is built without
    # validating it again (a third of a replay's time went there); the payload is still decoded and
    # validated, as older shapes are upcast on the way.
    meta = as_json(row.metadata)
    causation = meta.get("causation_id")
    return RecordedEvent.model_construct(
        position=row.position,
        event_id=row.event_id,
        case_id=row.case_id,
        version=row.version,
        type=row.type,
        schema_version=row.schema_version,
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
        metadata=EventMetadata.model_construct(
            correlation_id=UUID(meta["correlation_id"]),
            causation_id=UUID(causation) if causation else None,
            actor=meta["actor"],
            channel=meta.get("channel"),
        ),
        data=decode_payload(row.type, row.schema_version, as_json(row.data)),
    )


def _case_lock_key(case_id: UUID) -> int:
    # the last 4 bytes of a UUIDv7 are random; a collision only makes two cases' writers take turns
    return int.from_bytes(case_id.bytes[-4:], "big", signed=True)


def next_versions(current: dict[UUID, int], appends: Sequence[StreamAppend]) -> list[int]:
    """The version each append lands after, checking expected versions against `current` (each case's
    latest version, updated in place). A case may appear several times: each append follows the last."""
    after: list[int] = []
    for append in appends:
        latest = current.get(append.case_id, 0)
        if append.expected_version is not None and append.expected_version != latest:
            raise ConcurrencyConflict(append.case_id, append.expected_version, latest)
        after.append(latest)
        current[append.case_id] = latest + len(append.events)
    return after


_INSERT_MANY = text(
    "INSERT INTO events.case_events"
    " (event_id, case_id, version, type, schema_version, data, metadata, occurred_at)"
    " SELECT e, c, v, t, s, CAST(d AS jsonb), CAST(m AS jsonb), o"
    " FROM unnest(CAST(:e AS uuid[]), CAST(:c AS uuid[]), CAST(:v AS int[]), CAST(:t AS text[]),"
    " CAST(:s AS int[]), CAST(:d AS text[]), CAST(:m AS text[]), CAST(:o AS timestamptz[]))"
    " WITH ORDINALITY AS r(e, c, v, t, s, d, m, o, n)"
    " ORDER BY n"  # positions follow the order of the batch
    " RETURNING event_id, position, recorded_at"
)
_DEADLOCK_DETECTED = "40P01"
_CONFLICT_KEY = re.compile(r"\(case_id, version\)=\(([0-9a-f-]{36}), (\d+)\)")


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
        return await self.append_many(tx, [StreamAppend(case_id, expected_version, events, metadata, occurred_at)])

    async def append_many(self, tx: AsyncConnection, appends: Sequence[StreamAppend]) -> list[RecordedEvent]:
        """Several cases' appends in one transaction, in order, as one INSERT; a conflict on any fails them
        all (raised as ConcurrencyConflict naming the case; roll the transaction back and decide again)."""
        appends = [a for a in appends if a.events]
        if not appends:
            return []
        cases = list(dict.fromkeys(a.case_id for a in appends))
        # One writer per case at a time, taken in key order so two batches never wait for each other.
        try:
            await tx.execute(
                text(
                    "SELECT pg_advisory_xact_lock(:cls, k)"
                    " FROM unnest(CAST(:keys AS int[])) WITH ORDINALITY AS u(k, n) ORDER BY n"
                ),
                {"cls": CASE_LOCK_CLASS, "keys": sorted({_case_lock_key(c) for c in cases})},
            )
        except DBAPIError as exc:
            # Two transactions that each appended to one case and then to the other's (in separate appends)
            # wait for each other; PostgreSQL ends one of them. Like a lost race, it is decided again.
            if getattr(getattr(exc.orig, "driver_exception", None), "sqlstate", None) != _DEADLOCK_DETECTED:
                raise
            why = "another transaction holding a case of this one waited for a case this one held; decide again"
            raise ConcurrencyConflict(appends[0].case_id, 0, None, why) from exc
        # A new statement, so a new snapshot: it sees what the case's previous lock holder committed. Readers
        # follow transaction ids, so a case's events must be in the order of their transactions' ids too: a
        # transaction that took its id before the one that last wrote the case (it wrote elsewhere first)
        # may not follow it, and decides again in a new transaction, which gets a newer id.
        rows = (
            await tx.execute(
                text(
                    "SELECT case_id, max(version) AS version, max(xid) > pg_current_xact_id() AS younger"
                    " FROM events.case_events WHERE case_id = ANY(CAST(:ids AS uuid[])) GROUP BY case_id"
                ),
                {"ids": cases},
            )
        ).all()
        current = {row.case_id: row.version for row in rows}
        for row in rows:
            if row.younger:
                expected = next(a.expected_version for a in appends if a.case_id == row.case_id)
                why = "a transaction younger than this one appended to it first; decide again in a new transaction"
                raise ConcurrencyConflict(row.case_id, row.version if expected is None else expected, row.version, why)
        after = next_versions(current, appends)
        now = datetime.now(UTC)
        drafts = [d for append, latest in zip(appends, after, strict=True) for d in drafted(append, latest, now)]
        metadata_json = {id(a.metadata): a.metadata.model_dump_json() for a in appends}
        try:
            inserted = await tx.execute(
                _INSERT_MANY,
                {
                    "e": [d.event_id for d in drafts],
                    "c": [d.case_id for d in drafts],
                    "v": [d.version for d in drafts],
                    "t": [d.type for d in drafts],
                    "s": [d.schema_version for d in drafts],
                    "d": [d.data.model_dump_json() for d in drafts],
                    "m": [metadata_json[id(d.metadata)] for d in drafts],
                    "o": [d.occurred_at for d in drafts],
                },
            )
        except IntegrityError as exc:  # the unique (case_id, version): a writer that took no case lock
            raise _conflict_from(exc, appends) from exc
        stored = {row.event_id: row for row in inserted}
        return [
            d.model_copy(
                update={"position": stored[d.event_id].position, "recorded_at": stored[d.event_id].recorded_at}
            )
            for d in drafts
        ]

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

    async def read_all(self, tx: AsyncConnection, after: Checkpoint, limit: int) -> Page:
        """The next events after `after` in commit order, from transactions that can no longer be joined by
        an earlier one: those older than the oldest transaction still running. A long transaction anywhere
        in the database cluster holds this back (civicflow_store_oldest_transaction_seconds)."""
        # The id comes back as text (asyncpg has no xid8 codec) under another name than the column: an
        # ORDER BY xid would otherwise sort that text, and '999' > '1000'.
        rows = (
            await tx.execute(
                text(
                    f"SELECT CAST(xid AS text) AS xid_text, {_COLUMNS} FROM events.case_events"
                    " WHERE (xid, position) > (CAST(CAST(:x AS text) AS xid8), :p)"
                    " AND xid < pg_snapshot_xmin(pg_current_snapshot())"
                    " ORDER BY xid, position LIMIT :n"
                ),
                {"x": str(after.xid), "p": after.position, "n": limit},
            )
        ).all()
        if not rows:
            return Page([], after)
        return Page([_row_to_event(row) for row in rows], Checkpoint(int(rows[-1].xid_text), rows[-1].position))


def _conflict_from(exc: IntegrityError, appends: Sequence[StreamAppend]) -> ConcurrencyConflict:
    """Name the case whose version another writer took (PostgreSQL's detail says which), else the first."""
    driver_error = exc.orig.__cause__ if exc.orig is not None else None  # asyncpg's, behind SQLAlchemy's adapter
    detail = str(getattr(driver_error, "detail", None) or "")
    found = _CONFLICT_KEY.search(detail)
    if found is None and "case_events_event_id_key" in str(exc.orig):
        raise exc  # a repeated event id is a bug, not a race
    named = next((a for a in appends if found and str(a.case_id) == found.group(1)), appends[0])
    return ConcurrencyConflict(named.case_id, named.expected_version or 0, None)
