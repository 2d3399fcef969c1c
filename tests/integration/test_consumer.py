"""Consumers against real Kafka and PostgreSQL: redelivered events are no-ops, poison goes to the DLQ."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.consumer import DEAD_LETTER_HEADERS, CaseEventConsumer, Inbox, Reactions
from civicflow.events import EventMetadata, RecordedEvent, WorkOrderStatusChanged
from civicflow.eventstore import Checkpoint, PostgresEventStore
from civicflow.ids import uuid7
from civicflow.relay import Relay
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import Decision, Reads, Statement, UnitOfWork
from civicflow.wire import HEADERS, header_map
from tests.conftest import eventually
from tests.integration.kafka_helpers import read_topic
from tests.integration.test_relay import cursor, store_end

pytestmark = pytest.mark.integration
META = EventMetadata(correlation_id=uuid7(), actor="test")


async def append(engine: AsyncEngine, case_id: UUID, statuses: list[str]) -> None:
    async with engine.begin() as tx:
        await PostgresEventStore().append(
            tx, case_id, None, [WorkOrderStatusChanged(external_id="WO", status=s) for s in statuses], META
        )


async def effects(engine: AsyncEngine, schema: str, case_ids: set[UUID]) -> list[tuple[UUID, UUID]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT event_id, case_id FROM {schema}.effects ORDER BY id"))
        return [(r.event_id, r.case_id) for r in rows if r.case_id in case_ids]


async def start_consumer(settings: KernelSettings, consumer: CaseEventConsumer) -> KafkaBroker:
    broker = KafkaBroker(settings.kafka_bootstrap_servers)
    consumer.register(broker)
    await broker.start()
    return broker


async def test_a_redelivered_event_changes_nothing(settings: KernelSettings, schema: tuple[AsyncEngine, str]) -> None:
    engine, name = schema
    inbox = Inbox(engine, name)
    case_ids = {uuid7(), uuid7()}
    deliveries: list[UUID] = []

    async def handler(event: RecordedEvent) -> None:
        if event.case_id in case_ids:
            deliveries.append(event.event_id)

        async def effect(tx: AsyncConnection) -> None:
            await tx.execute(
                text(f"INSERT INTO {name}.effects (event_id, case_id) VALUES (:e, :c)"),
                {"e": event.event_id, "c": event.case_id},
            )

        await inbox.process_once(event, effect)

    for case_id in case_ids:
        await append(engine, case_id, ["open", "in_progress", "done"])
    relay, stop = Relay(engine, settings), asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    broker: KafkaBroker | None = None
    try:
        broker = await start_consumer(settings, CaseEventConsumer(name, settings, {"WorkOrderStatusChanged": handler}))
        await eventually(lambda: _count(effects(engine, name, case_ids), 6), what="six effects")
        # Redeliver everything: rewind the relay so the whole store is published a second time.
        async with engine.begin() as tx:
            await tx.execute(
                text("UPDATE events.relay_cursor SET xid = '0', position = 0 WHERE topic = :t"),
                {"t": settings.case_events_topic},
            )
        await eventually(lambda: _at_least(relay, 12), what="the store republished")
        await eventually(lambda: _delivered(deliveries, 12), what="every event delivered twice")
        done = await effects(engine, name, case_ids)
        assert len(done) == 6 and len({e for e, _ in done}) == 6
        redelivered = REGISTRY.get_sample_value("civicflow_events_redelivered_total", {"service": name})
        assert redelivered is not None and redelivered >= 6, "the inbox counts what it dropped"
    finally:
        if broker is not None:
            await broker.stop()
        stop.set()
        await relay_task


async def test_a_poison_event_is_dead_lettered_and_does_not_block_its_case(
    settings: KernelSettings, schema: tuple[AsyncEngine, str]
) -> None:
    engine, name = schema
    inbox = Inbox(engine, name)
    attempts: list[str] = []

    async def handler(event: RecordedEvent) -> None:
        assert isinstance(event.data, WorkOrderStatusChanged)
        if event.case_id == case_id and event.data.status == "poison":  # the store is the session's
            attempts.append(str(event.event_id))
            raise RuntimeError("the department system rejected this work order")

        async def effect(tx: AsyncConnection) -> None:
            await tx.execute(
                text(f"INSERT INTO {name}.effects (event_id, case_id) VALUES (:e, :c)"),
                {"e": event.event_id, "c": event.case_id},
            )

        await inbox.process_once(event, effect)

    case_id = uuid7()
    await append(engine, case_id, ["open", "poison", "done"])
    relay, stop = Relay(engine, settings), asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    broker: KafkaBroker | None = None
    try:
        broker = await start_consumer(settings, CaseEventConsumer(name, settings, {"WorkOrderStatusChanged": handler}))
        await eventually(lambda: _count(effects(engine, name, {case_id}), 2), what="the events around the poison one")
        dead = await read_topic(
            settings.kafka_bootstrap_servers, settings.dead_letter_topic, until=lambda r: bool(_dead_for(r, case_id))
        )
        # a rebalance may redeliver the poison event, so it can be dead-lettered (and tried) more than once
        ours = _dead_for(dead, case_id)
        assert ours, "the poison event was not dead-lettered"
        for headers in ours:
            assert headers.keys() == HEADERS.keys() | DEAD_LETTER_HEADERS.keys(), "the AsyncAPI document says otherwise"
            assert headers["ce_caseversion"] == "2"
            assert headers["dlq_error"] == "RuntimeError: the department system rejected this work order"
            assert headers["dlq_attempts"] == str(settings.handler_attempts)
            assert headers["correlation_id"] == headers["ce_correlationid"]
            assert headers["dlq_original_topic"] == settings.case_events_topic
        assert len(set(attempts)) == 1 and len(attempts) >= settings.handler_attempts, attempts
    finally:
        if broker is not None:
            await broker.stop()
        stop.set()
        await relay_task


def _dead_for(records: list[Any], case_id: UUID) -> list[dict[str, str]]:
    """The dead-letter headers of this case's records."""
    return [h for h in (header_map(r.headers) for r in records) if h["ce_subject"] == str(case_id)]


async def _count(rows: object, n: int) -> bool:
    return len(await rows) == n  # type: ignore[misc, arg-type]


async def _cursor_reached(settings: KernelSettings, target: Checkpoint) -> bool:
    return await cursor(settings) >= target


async def _at_least(relay: Relay, n: int) -> bool:
    return relay.published >= n


async def _delivered(deliveries: list[UUID], n: int) -> bool:
    return len(deliveries) >= n


async def test_a_batch_is_decided_in_one_unit_of_work_and_a_poison_event_in_it_is_dead_lettered_alone(
    settings: KernelSettings, schema: tuple[AsyncEngine, str]
) -> None:
    engine, name = schema
    record_effect = text(f"INSERT INTO {name}.effects (event_id, case_id) VALUES (:e, :c)")
    batches: list[int] = []

    async def policy(events: Sequence[RecordedEvent], reads: Reads) -> Decision:
        batches.append(len(events))
        decision = Decision()
        for event in events:
            assert isinstance(event.data, WorkOrderStatusChanged)
            if event.case_id not in {clean, poisoned}:
                continue  # the store is the session's: other tests' events are published too
            if event.data.status == "poison":
                raise RuntimeError("the department system rejected this work order")
            decision.writes.append(Statement(record_effect, {"e": event.event_id, "c": event.case_id}))
            # each event's reaction sees the ones before it in the batch
            before = [e for e in await reads.stream(event.case_id) if e.version < event.version]
            assert len(before) == event.version - 1
        return decision

    clean, poisoned = uuid7(), uuid7()
    await append(engine, clean, ["open", "in_progress", "done"])
    await append(engine, poisoned, ["open", "poison", "done"])
    relay, stop = Relay(engine, settings), asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    broker: KafkaBroker | None = None
    try:
        target = await store_end(settings)  # this test's events included: wait for the relay to publish them
        await eventually(lambda: _cursor_reached(settings, target), what="the store published")
        reactions = Reactions(
            frozenset({"WorkOrderStatusChanged"}), policy, UnitOfWork(engine, name, PostgresEventStore())
        )
        broker = await start_consumer(settings, CaseEventConsumer(name, settings, reactions))
        await eventually(lambda: _count(effects(engine, name, {clean, poisoned}), 5), what="all but the poison event")
        dead = await read_topic(
            settings.kafka_bootstrap_servers, settings.dead_letter_topic, until=lambda r: bool(_dead_for(r, poisoned))
        )
        ours = _dead_for(dead, poisoned)
        # a rebalance may redeliver the poison event, and so dead-letter it twice: only it, though
        assert ours and all(h["ce_caseversion"] == "2" for h in ours), ours
        assert max(batches) > 1, "the events came as one batch at least once"
    finally:
        if broker is not None:
            await broker.stop()
        stop.set()
        await relay_task
