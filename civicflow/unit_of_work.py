"""The unit of work: a batch of events, one transaction; policies decide, the kernel records what they decided."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.events import RecordedEvent
from civicflow.eventstore import EventStore, StreamAppend, drafted
from civicflow.metrics import EVENTS_REDELIVERED


@dataclass(frozen=True)
class Statement:
    """A write to the service's own tables. Parameters are one row (a dict) or several (a list: one
    round trip for all of them)."""

    sql: TextClause
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] = field(default_factory=dict)


@dataclass
class Decision:
    """What a policy decided about its events: events to append (each after the case's version it read,
    or after whatever the case holds) and writes to the service's tables, all recorded by the kernel in
    the transaction that marks the events processed."""

    appends: list[StreamAppend] = field(default_factory=list)
    writes: list[Statement] = field(default_factory=list)

    def add(self, other: Decision) -> None:
        self.appends += other.appends
        self.writes += other.writes


class Reads:
    """What a policy may read inside the batch's transaction: case streams as the batch leaves them
    (the store's events, then those this batch decided but has not appended yet), and the service's
    own tables through `tx` (as they stood before the batch: the batch's writes come at its end)."""

    def __init__(self, tx: AsyncConnection, store: EventStore) -> None:
        self.tx = tx
        self._store = store
        self._stored: dict[UUID, list[RecordedEvent]] = {}
        self._pending: dict[UUID, list[RecordedEvent]] = {}

    async def stream(self, case_id: UUID) -> list[RecordedEvent]:
        """The case's events in version order. Pending ones carry the version they will get, position 0
        and an event id of their own (the store gives the real one when it appends them)."""
        if case_id not in self._stored:
            self._stored[case_id] = await self._store.read_stream(self.tx, case_id)
        return self._stored[case_id] + self._pending.get(case_id, [])

    def pending(self, case_id: UUID) -> list[RecordedEvent]:
        """The events this batch decided for the case so far, not appended yet."""
        return list(self._pending.get(case_id, []))

    async def stage(self, appends: Sequence[StreamAppend]) -> None:
        """Let the batch's later policies see these appends as part of their cases."""
        now = datetime.now(UTC)
        for append in appends:
            version = (await self.stream(append.case_id))[-1:]
            last = version[0].version if version else 0
            self._pending.setdefault(append.case_id, []).extend(drafted(append, last, now))


class BatchPolicy(Protocol):
    """Decides about a batch's fresh events, in order (redeliveries are already left out)."""

    async def __call__(self, events: Sequence[RecordedEvent], reads: Reads) -> Decision: ...


# A policy for one event at a time; `in_order` makes a batch policy of several.
Policy = Callable[[RecordedEvent, Reads], Awaitable[Decision]]


def in_order(policies: Mapping[str, Policy]) -> BatchPolicy:
    """Each event to its type's policy, in order; a later event of a case sees the earlier ones' appends."""

    async def decide(events: Sequence[RecordedEvent], reads: Reads) -> Decision:
        batch = Decision()
        for event in events:
            decision = await policies[event.type](event, reads)
            await reads.stage(decision.appends)
            batch.add(decision)
        return batch

    return decide


def together(*policies: Policy) -> Policy:
    """One event's several policies, one after another, as one (in_order stages their appends together)."""

    async def decide(event: RecordedEvent, reads: Reads) -> Decision:
        decision = Decision()
        for policy in policies:
            decision.add(await policy(event, reads))
        return decision

    return decide


class ClaimedMeanwhile(Exception):
    """Another consumer of the same group (a rebalance) recorded some of the batch's events while this one
    decided them; the batch is handled again one event at a time, and those are then skipped."""


class UnitOfWork:
    """Runs a policy over a batch of events in one transaction: the events already in the service's inbox
    are skipped (redeliveries), the policy decides, then one statement claims the fresh ids, one
    `append_many` records the events and the writes follow, consecutive ones of the same SQL in one go.

    The claim comes after the decisions, not before: a transaction gets its id (xid8) at its first write,
    readers of the store wait for every transaction older than the oldest running one, and an older
    transaction may not append to a case after a younger one did (civicflow/eventstore.py). Writing
    last keeps that window to the few statements that record the batch, however long deciding took
    (emails sent, departments called)."""

    def __init__(self, engine: AsyncEngine, schema: str, store: EventStore) -> None:
        self._engine = engine
        self._store = store
        self._seen = text(f"SELECT event_id FROM {schema}.inbox WHERE event_id = ANY(CAST(:ids AS uuid[]))")
        self._claim = text(
            f"INSERT INTO {schema}.inbox (event_id) SELECT unnest(CAST(:ids AS uuid[]))"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        )
        self._redelivered = EVENTS_REDELIVERED.labels(schema)

    async def run(self, events: Sequence[RecordedEvent], policy: BatchPolicy) -> int:
        """Decide and record the fresh ones among events; how many were fresh."""
        async with self._engine.begin() as tx:
            ids = [e.event_id for e in events]
            seen = {row.event_id for row in await tx.execute(self._seen, {"ids": ids})}
            if seen:
                self._redelivered.inc(len(seen))
            todo, taken = [], set(seen)
            for event in events:  # a record delivered twice within one batch is decided once
                if event.event_id not in taken:
                    taken.add(event.event_id)
                    todo.append(event)
            if not todo:
                return 0
            decision = await policy(todo, Reads(tx, self._store))
            fresh = [e.event_id for e in todo]
            if len(await self.claim(tx, fresh)) != len(fresh):
                raise ClaimedMeanwhile("another consumer recorded some of these events meanwhile")
            await record(tx, self._store, decision)
            return len(todo)

    async def claim(self, tx: AsyncConnection, event_ids: Sequence[UUID]) -> set[UUID]:
        """Mark the events processed within tx; the ids that were not already."""
        claimed = {row.event_id for row in await tx.execute(self._claim, {"ids": list(event_ids)})}
        if dropped := len(set(event_ids)) - len(claimed):
            self._redelivered.inc(dropped)
        return claimed


async def record(tx: AsyncConnection, store: EventStore, decision: Decision) -> None:
    """The appends in one call, then the writes in order, a run of one statement as one executemany."""
    if decision.appends:
        await store.append_many(tx, decision.appends)
    run: list[Mapping[str, Any]] = []
    sql: TextClause | None = None
    for write in decision.writes:
        if isinstance(write.params, Mapping) and write.sql is sql:
            run.append(write.params)
            continue
        if sql is not None:
            await _execute(tx, sql, run)
            sql, run = None, []
        if isinstance(write.params, Mapping):
            sql, run = write.sql, [write.params]
        else:
            await _execute(tx, write.sql, list(write.params))
    if sql is not None:
        await _execute(tx, sql, run)


async def _execute(tx: AsyncConnection, sql: TextClause, rows: list[Mapping[str, Any]]) -> None:
    if len(rows) == 1:
        await tx.execute(sql, rows[0])
    elif rows:
        await tx.execute(sql, rows)
