"""The read model's tables: project a batch of events, look a case up, rebuild everything from the store."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from operator import attrgetter
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.db import as_json
from civicflow.events import RecordedEvent
from civicflow.eventstore import START, EventStore
from civicflow.unit_of_work import Decision, Reads, Statement
from services.query.projection import CaseRecord, TimelineEntry, apply

# Each column's type, for passing the rows of a batch as one array per column (unnest): one statement
# and one round trip for any number of rows.
_CASE_TYPES = {
    "case_id": "uuid",
    "status": "text",
    "last_version": "integer",
    "updated_at": "timestamptz",
    "tracking_number": "text",
    "service_code": "text",
    "department_id": "text",
    "department_name": "text",
    "priority": "text",
    "rule_id": "text",
    "submitted_at": "timestamptz",
    "due_at": "timestamptz",
    "work_order_id": "text",
    "resolution": "text",
    "lat": "double precision",
    "long": "double precision",
    "address": "text",
    "time_zone": "text",
    "point_source": "text",
    "unplaced": "text",
    "satisfaction": "smallint",
}
_CASE_COLUMNS = [f.name for f in fields(CaseRecord)]
assert set(_CASE_COLUMNS) == set(_CASE_TYPES), "every CaseRecord field needs its column type here"
_ENTRY_TYPES = {"case_id": "uuid", "version": "integer", "stage": "text", "at": "timestamptz", "detail": "text"}
_ENTRY_COLUMNS = [f.name for f in fields(TimelineEntry)]


def _unnest(columns: list[str], types: dict[str, str]) -> str:
    return ", ".join(f"CAST(:{c} AS {types[c]}[])" for c in columns)


_UPSERT_CASES = text(
    f"INSERT INTO query.cases ({', '.join(_CASE_COLUMNS)}) SELECT * FROM unnest({_unnest(_CASE_COLUMNS, _CASE_TYPES)})"
    " ON CONFLICT (case_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in _CASE_COLUMNS if c != "case_id")
)
_INSERT_ENTRIES = text(
    f"INSERT INTO query.timeline ({', '.join(_ENTRY_COLUMNS)})"
    f" SELECT * FROM unnest({_unnest(_ENTRY_COLUMNS, _ENTRY_TYPES)}) ON CONFLICT DO NOTHING"
)
_FORGET_TIMELINES = text("DELETE FROM query.timeline WHERE case_id = ANY(:c)")
_LOAD_CASES = text(
    f"SELECT {', '.join(_CASE_COLUMNS)} FROM query.cases WHERE case_id = ANY(:c) ORDER BY case_id FOR UPDATE"
)
# The case and its timeline in one round trip.
_FIND = text(
    f"SELECT {', '.join('c.' + c for c in _CASE_COLUMNS)}, t.entries FROM query.cases c"
    " LEFT JOIN LATERAL (SELECT json_agg(json_build_object('version', version, 'stage', stage, 'at', at,"
    " 'detail', detail) ORDER BY version) AS entries FROM query.timeline WHERE case_id = c.case_id) t ON true"
    " WHERE c.tracking_number = :t"
)


def _columns(rows: Iterable[tuple[object, ...]], names: list[str]) -> dict[str, list[object]]:
    """Rows as one list per column, the shape unnest takes."""
    columns = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in names]
    return dict(zip(names, columns, strict=True))


_CASE_ROW = attrgetter(*_CASE_COLUMNS)
_ENTRY_ROW = attrgetter(*_ENTRY_COLUMNS)


def save_cases(records: Sequence[CaseRecord]) -> Statement:
    return Statement(_UPSERT_CASES, _columns(map(_CASE_ROW, records), _CASE_COLUMNS))


def add_entries(entries: Sequence[TimelineEntry]) -> Statement:
    return Statement(_INSERT_ENTRIES, _columns(map(_ENTRY_ROW, entries), _ENTRY_COLUMNS))


async def load_cases(tx: AsyncConnection, case_ids: Sequence[UUID]) -> dict[UUID, CaseRecord]:
    """The cases' records, locked until the batch commits (in case order, so two replicas cannot deadlock)."""
    rows = await tx.execute(_LOAD_CASES, {"c": list(case_ids)})
    return {row.case_id: CaseRecord(**row._mapping) for row in rows}


async def find_by_tracking_number(conn: AsyncConnection, number: str) -> tuple[CaseRecord, list[TimelineEntry]] | None:
    row = (await conn.execute(_FIND, {"t": number})).first()
    if row is None:
        return None
    found = dict(row._mapping)
    entries = as_json(found.pop("entries")) or []
    record = CaseRecord(**found)
    timeline = [
        TimelineEntry(record.case_id, e["version"], e["stage"], datetime.fromisoformat(e["at"]), e["detail"])
        for e in entries
    ]
    return record, timeline


class Projector:
    """Projects a batch of live events: the batch's cases read in one statement, folded in memory, and
    written back as one upsert of cases and one insert of timeline lines (the kernel records them).

    The next version of a case is folded in directly. Anything else (an earlier version replayed from
    the dead-letter topic, or a gap because one was dead-lettered) rebuilds the case from the store, so
    the record never skips an event nor applies one out of order."""

    async def __call__(self, events: Sequence[RecordedEvent], reads: Reads) -> Decision:
        records = await load_cases(reads.tx, list(dict.fromkeys(e.case_id for e in events)))
        entries: dict[UUID, list[TimelineEntry]] = {}
        rebuilt: set[UUID] = set()
        for event in events:
            case_id = event.case_id
            before = records.get(case_id)
            last = before.last_version if before else 0
            if case_id in rebuilt and event.version <= last:
                continue  # the rebuild read it from the store
            if event.version == last + 1:
                after, entry = apply(before, event)
                records[case_id] = after
                if entry is not None:
                    entries.setdefault(case_id, []).append(entry)
                continue
            record: CaseRecord | None = None
            entries[case_id] = []
            for stored in await reads.stream(case_id):
                record, entry = apply(record, stored)
                if entry is not None:
                    entries[case_id].append(entry)
            if record is not None:
                records[case_id] = record
            rebuilt.add(case_id)
        touched = dict.fromkeys(e.case_id for e in events if e.case_id in records)
        writes = []
        if rebuilt:
            writes.append(Statement(_FORGET_TIMELINES, {"c": list(rebuilt)}))
        writes.append(save_cases([records[c] for c in touched]))
        if lines := [entry for case in entries.values() for entry in case]:
            writes.append(add_entries(lines))
        return Decision(writes=writes)


async def replay(
    engine: AsyncEngine,
    store: EventStore,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Rebuild the read model from the store in one transaction: no reader ever sees half of it (lookups
    wait for the rebuild to commit, as TRUNCATE locks the tables until then). progress, if given, hears
    how many events were read so far after each batch."""
    records: dict[UUID, CaseRecord] = {}
    entries: list[TimelineEntry] = []
    processed: list[tuple[UUID]] = []
    count = 0
    async with engine.begin() as tx:
        await tx.execute(text("TRUNCATE query.cases, query.timeline, query.inbox"))
        checkpoint = START
        while batch := (page := await store.read_all(tx, checkpoint, batch_size)).events:
            for event in batch:
                record, entry = apply(records.get(event.case_id), event)
                records[event.case_id] = record
                if entry is not None:
                    entries.append(entry)
                processed.append((event.event_id,))
            checkpoint = page.next
            count += len(batch)
            if progress is not None:
                progress(count)
        # The tables are empty (truncated above): COPY fills them far faster than INSERT.
        await _copy(tx, "cases", _CASE_COLUMNS, map(_CASE_ROW, records.values()))
        await _copy(tx, "timeline", _ENTRY_COLUMNS, map(_ENTRY_ROW, entries))
        await _copy(tx, "inbox", ["event_id"], processed)
    return count


async def _copy(tx: AsyncConnection, table: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Rows into a query table through the transaction's own connection (COPY is asyncpg's, not SQLAlchemy's)."""
    connection = (await tx.get_raw_connection()).driver_connection
    assert connection is not None
    await connection.copy_records_to_table(table, schema_name="query", columns=columns, records=rows)
