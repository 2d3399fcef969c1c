"""The kernel's unit of work: one append_many per batch, writes in order in as few round trips as it can."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from civicflow.events import EventMetadata, RecordedEvent, WorkOrderStatusChanged
from civicflow.eventstore import EventStore, StreamAppend
from civicflow.ids import uuid7
from civicflow.unit_of_work import Decision, Statement, record
from tests.factories import recorded
from tests.fake_store import StoredStreams

AT = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
META = EventMetadata(correlation_id=uuid7(), actor="test")
TRACK, FORGET = text("INSERT INTO t VALUES (:c)"), text("DELETE FROM t WHERE c = :c")


class Recorder:
    """Stands in for the transaction and the store: keeps what was executed and appended, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def execute(self, sql: Any, params: Any = None) -> None:
        self.calls.append((str(sql), params))

    async def append_many(self, tx: AsyncConnection, appends: Sequence[StreamAppend]) -> list[RecordedEvent]:
        self.calls.append(("append_many", [a.case_id for a in appends]))
        return []


async def test_appends_go_in_one_call_and_a_run_of_one_statement_in_one_round_trip() -> None:
    a, b = uuid7(), uuid7()
    changed = [WorkOrderStatusChanged(external_id="WO", status="open")]
    decision = Decision(
        appends=[StreamAppend(a, None, changed, META), StreamAppend(b, 3, changed, META)],
        writes=[Statement(TRACK, {"c": 1}), Statement(TRACK, {"c": 2}), Statement(FORGET, {"c": 1})],
    )
    decision.add(Decision(writes=[Statement(TRACK, {"c": 3})]))
    recorder = Recorder()

    await record(cast(AsyncConnection, recorder), cast(EventStore, recorder), decision)

    assert recorder.calls == [
        ("append_many", [a, b]),
        (str(TRACK), [{"c": 1}, {"c": 2}]),
        (str(FORGET), {"c": 1}),
        (str(TRACK), {"c": 3}),
    ], "in order: a later statement of another kind is not moved before an earlier one"


async def test_nothing_decided_touches_nothing() -> None:
    recorder = Recorder()
    await record(cast(AsyncConnection, recorder), cast(EventStore, recorder), Decision())
    assert recorder.calls == []


async def test_a_case_as_the_batch_leaves_it_holds_the_pending_events_after_the_stored_ones() -> None:
    case_id = uuid7()
    stored = [
        recorded(WorkOrderStatusChanged(external_id="WO", status=s), case_id=case_id, version=v, at=AT)
        for v, s in enumerate(["open", "in_progress"], 1)
    ]
    store = StoredStreams(*stored)
    reads = store.reads_of()
    done = [WorkOrderStatusChanged(external_id="WO", status="done")]
    await reads.stage([StreamAppend(case_id, 2, done, META), StreamAppend(case_id, None, done, META)])

    stream = await reads.stream(case_id)
    assert [e.version for e in stream] == [1, 2, 3, 4]
    assert stream[2].data == done[0] and stream[2].position == 0 and stream[2].metadata == META
    assert store.reads == 1, "the stored part is read once per batch"
    assert await store.reads_of().stream(case_id) == stored, "another batch sees only what was stored"
