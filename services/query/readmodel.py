"""The read model's tables: load and save case records, look one up, rebuild everything from the store."""

from __future__ import annotations

from dataclasses import asdict, fields
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.consumer import Inbox
from civicflow.events import RecordedEvent
from civicflow.eventstore import START, EventStore
from services.query.projection import CaseRecord, TimelineEntry, apply

_CASE_COLUMNS = [f.name for f in fields(CaseRecord)]
_UPSERT = text(
    f"INSERT INTO query.cases ({', '.join(_CASE_COLUMNS)}) VALUES ({', '.join(':' + c for c in _CASE_COLUMNS)})"
    f" ON CONFLICT (case_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in _CASE_COLUMNS if c != "case_id")
)
_INSERT_ENTRY = text(
    "INSERT INTO query.timeline (case_id, version, stage, at, detail)"
    " VALUES (:case_id, :version, :stage, :at, :detail) ON CONFLICT DO NOTHING"
)


async def load_case(tx: AsyncConnection, case_id: UUID, *, for_update: bool = False) -> CaseRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = (
        await tx.execute(
            text(f"SELECT {', '.join(_CASE_COLUMNS)} FROM query.cases WHERE case_id = :c{lock}"), {"c": case_id}
        )
    ).first()
    return CaseRecord(**row._mapping) if row else None


async def find_by_tracking_number(conn: AsyncConnection, number: str) -> tuple[CaseRecord, list[TimelineEntry]] | None:
    row = (
        await conn.execute(
            text(f"SELECT {', '.join(_CASE_COLUMNS)} FROM query.cases WHERE tracking_number = :t"), {"t": number}
        )
    ).first()
    if row is None:
        return None
    record = CaseRecord(**row._mapping)
    entries = await conn.execute(
        text("SELECT case_id, version, stage, at, detail FROM query.timeline WHERE case_id = :c ORDER BY version"),
        {"c": record.case_id},
    )
    return record, [TimelineEntry(**e._mapping) for e in entries]


async def save(tx: AsyncConnection, record: CaseRecord, entry: TimelineEntry | None) -> None:
    await tx.execute(_UPSERT, asdict(record))
    if entry is not None:
        await tx.execute(_INSERT_ENTRY, asdict(entry))


class Projector:
    """Applies one live event to the read model, at most once.

    The next version of a case is folded in directly. Anything else (an earlier version replayed from
    the dead-letter topic, or a gap because one was dead-lettered) rebuilds the case from the store, so
    the record never skips an event nor applies one out of order."""

    def __init__(self, inbox: Inbox, store: EventStore) -> None:
        self._inbox = inbox
        self._store = store

    async def __call__(self, event: RecordedEvent) -> None:
        async def project(tx: AsyncConnection) -> None:
            before = await load_case(tx, event.case_id, for_update=True)
            if event.version == (before.last_version if before else 0) + 1:
                after, entry = apply(before, event)
                await save(tx, after, entry)
            else:
                await self._rebuild_case(tx, event.case_id)

        await self._inbox.process_once(event, project)

    async def _rebuild_case(self, tx: AsyncConnection, case_id: UUID) -> None:
        record: CaseRecord | None = None
        await tx.execute(text("DELETE FROM query.timeline WHERE case_id = :c"), {"c": case_id})
        for stored in await self._store.read_stream(tx, case_id):
            record, entry = apply(record, stored)
            if entry is not None:
                await tx.execute(_INSERT_ENTRY, asdict(entry))
        if record is not None:
            await tx.execute(_UPSERT, asdict(record))


async def replay(engine: AsyncEngine, store: EventStore, batch_size: int = 2000) -> int:
    """Rebuild the read model from the store in one transaction: no reader ever sees half of it (lookups
    wait for the rebuild to commit, as TRUNCATE locks the tables until then)."""
    records: dict[UUID, CaseRecord] = {}
    entries: list[TimelineEntry] = []
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
            await tx.execute(text("INSERT INTO query.inbox (event_id) VALUES (:e)"), [{"e": e.event_id} for e in batch])
            checkpoint = page.next
            count += len(batch)
        if records:
            await tx.execute(_UPSERT, [asdict(r) for r in records.values()])
        if entries:
            await tx.execute(_INSERT_ENTRY, [asdict(e) for e in entries])
    return count
