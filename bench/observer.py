"""Watching the run's cases without calling the system: read-only SQL on the event store and the query read model."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

import asyncpg

from bench.progress import CaseProgress, StoredEvent
from civicflow.db import libpq_url

_NEW_EVENTS = """
SELECT position, case_id::text AS case_id, type, extract(epoch FROM recorded_at)::float8 AS at,
       data->>'stage' AS stage, data->>'status' AS status
FROM events.case_events WHERE position > $1 ORDER BY position LIMIT $2
"""
# The final pass: every event of the given cases, wherever the cursor was.
_CASE_EVENTS = """
SELECT position, case_id::text AS case_id, type, extract(epoch FROM recorded_at)::float8 AS at,
       data->>'stage' AS stage, data->>'status' AS status
FROM events.case_events WHERE case_id = ANY($1::uuid[]) ORDER BY position
"""
_READ_MODEL = "SELECT case_id::text AS case_id, status FROM query.cases WHERE case_id = ANY($1::uuid[])"


def _event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(row["position"], row["case_id"], row["type"], row["at"], row["stage"], row["status"])


class Observer:
    """Follows events.case_events by position (appends are gap-free in position order, DESIGN.md) and
    looks the unfinished cases up in query.cases, every `interval_s`, on one connection of its own.

    Event times are the store's recorded_at, so how often this polls does not change a latency; only
    read-model sightings are timed by this client, to within one interval."""

    def __init__(self, database_url: str, interval_s: float = 0.2, batch: int = 20_000) -> None:
        self._url = libpq_url(database_url)
        self._interval_s = interval_s
        self._batch = batch
        self._cursor = 0
        self.cases: dict[str, CaseProgress] = {}
        # events of cases whose SubmitRequest reply has not reached this client yet
        self._early: dict[str, list[StoredEvent]] = defaultdict(list)
        self._conn: asyncpg.Connection | None = None
        self.visible: list[str] = []  # tracking numbers the read model shows placed, in the order first seen
        self.polls = 0
        self.poll_seconds = 0.0

    def register(self, case: CaseProgress) -> None:
        self.cases[case.case_id] = case
        for event in self._early.pop(case.case_id, []):
            case.apply(event)

    async def start(self) -> None:
        """Connect, and skip what earlier runs stored: this run's events come after the current last position."""
        self._conn = await asyncpg.connect(self._url)
        self._cursor = int(await self._conn.fetchval("SELECT coalesce(max(position), 0) FROM events.case_events"))

    async def follow(self, stop: asyncio.Event) -> None:
        """Poll (after start()) until stop is set; then once more, so nothing stored before it was set is missed."""
        conn = self._conn
        assert conn is not None, "start() first"
        try:
            while True:
                stopping = stop.is_set()
                started = time.perf_counter()
                await self.poll(conn)
                self.polls += 1
                self.poll_seconds += time.perf_counter() - started
                if stopping:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval_s)
        finally:
            await conn.close()
            self._conn = None

    async def poll(self, conn: asyncpg.Connection) -> None:
        while rows := await conn.fetch(_NEW_EVENTS, self._cursor, self._batch):
            for row in rows:
                self._apply(_event(row))
            self._cursor = rows[-1]["position"]
            if len(rows) < self._batch:
                break
        unseen = [c.case_id for c in self.cases.values() if c.visible_resolved_at is None and not c.triage]
        unseen += [c.case_id for c in self.cases.values() if c.triage and c.visible_placed_at is None]
        if unseen:
            now = time.time()
            for row in await conn.fetch(_READ_MODEL, unseen):
                case = self.cases[row["case_id"]]
                was_visible = case.visible_placed_at is not None
                case.seen_in_read_model(row["status"], now)
                if not was_visible and case.visible_placed_at is not None:
                    self.visible.append(case.tracking_number)

    async def reconcile(self) -> None:
        """Refold every case from all its stored events: exact figures even if a poll was cut short."""
        conn = await asyncpg.connect(self._url)
        try:
            ids = list(self.cases)
            for case in self.cases.values():
                case.stages.clear()
                case.notified.clear()
                case.notifications_failed = 0
                case.submitted_at = case.routed_at = case.work_order_done_at = case.resolved_at = None
                case.triage = False
            for row in await conn.fetch(_CASE_EVENTS, ids):
                self.cases[row["case_id"]].apply(_event(row))
        finally:
            await conn.close()

    def _apply(self, event: StoredEvent) -> None:
        case = self.cases.get(event.case_id)
        if case is None:
            self._early[event.case_id].append(event)
        else:
            case.apply(event)

    @property
    def unfinished(self) -> int:
        return sum(not c.finished for c in self.cases.values())
