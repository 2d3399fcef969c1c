"""The relay against real PostgreSQL and Kafka: order, headers, resuming, one leader, lost-broker catch-up."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RequestTimedOutError
from prometheus_client import REGISTRY
from sqlalchemy import text

from civicflow.db import make_engine
from civicflow.events import EventMetadata, WorkOrderStatusChanged
from civicflow.eventstore import START, Checkpoint, PostgresEventStore
from civicflow.ids import uuid7
from civicflow.kafka import ensure_topics, make_producer
from civicflow.relay import Relay
from civicflow.settings import KernelSettings
from civicflow.wire import from_message, header_map
from tests.conftest import eventually
from tests.integration.kafka_helpers import read_topic
from tests.integration.store_ends import end_of_store

pytestmark = pytest.mark.integration
META = EventMetadata(correlation_id=uuid7(), actor="test", channel="web")


async def append_cases(settings: KernelSettings, cases: int, per_case: int) -> set[str]:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    ids = [uuid7() for _ in range(cases)]
    for n in range(per_case):  # interleave cases so order per case is really tested
        for case_id in ids:
            async with engine.begin() as tx:
                await store.append(tx, case_id, n, [WorkOrderStatusChanged(external_id="WO", status=f"s{n}")], META)
    await engine.dispose()
    return {str(i) for i in ids}


async def cursor(settings: KernelSettings) -> Checkpoint:
    engine = make_engine(settings.database_url)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT CAST(xid AS text) AS xid, position FROM events.relay_cursor WHERE topic = :t"),
                {"t": settings.case_events_topic},
            )
        ).first()
    await engine.dispose()
    return START if row is None else Checkpoint(int(row.xid), row.position)


async def store_end(settings: KernelSettings) -> Checkpoint:
    """The last event in the relay's (commit) order."""
    engine = make_engine(settings.database_url)
    async with engine.connect() as conn:
        end = await end_of_store(conn)
    await engine.dispose()
    return end


async def run_relay_until_caught_up(settings: KernelSettings) -> None:
    engine = make_engine(settings.database_url)
    stop = asyncio.Event()
    task = asyncio.create_task(Relay(engine, settings).run(stop))
    target = await store_end(settings)
    try:
        await eventually(lambda: _at_least(settings, target), what="relay to catch up")
    finally:
        stop.set()
        await task
        await engine.dispose()


async def _at_least(settings: KernelSettings, target: Checkpoint) -> bool:
    return await cursor(settings) >= target


def own_records(records: list[Any], subjects: set[str]) -> list[Any]:
    """The records of this test's cases: the topic holds the whole session store's events."""
    return [r for r in records if header_map(r.headers)["ce_subject"] in subjects]


def has_own(subjects: set[str], count: int) -> Callable[[list[Any]], bool]:
    """A read_topic `until`: at least `count` records of these cases were read."""
    return lambda records: len(own_records(records, subjects)) >= count


def published_pairs(records: list[Any]) -> list[tuple[str, str]]:
    return [(header_map(r.headers)["ce_subject"], header_map(r.headers)["ce_caseversion"]) for r in records]


async def publish_until_caught_up(relay: Relay, producer: Any, settings: KernelSettings) -> None:
    """Publish in passes until the cursor reaches the store's end as it is now: a pass sees only events of
    transactions older than the oldest one running in the cluster, so one pass may miss what just committed."""
    target = await store_end(settings)

    async def caught() -> bool:
        await publish_everything(relay, producer)
        return await cursor(settings) >= target

    await eventually(caught, what="the relay to publish up to the store's end")


async def test_relay_publishes_each_case_in_order_with_cloudevents_headers(settings: KernelSettings) -> None:
    ours = await append_cases(settings, cases=5, per_case=6)
    await run_relay_until_caught_up(settings)
    records = await read_topic(settings.kafka_bootstrap_servers, settings.case_events_topic, until=has_own(ours, 30))
    versions: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in records:
        headers = header_map(record.headers)
        if headers["ce_subject"] in ours:
            event = from_message(headers, record.value)
            assert record.key.decode() == headers["ce_subject"]
            assert headers["ce_specversion"] == "1.0" and headers["ce_source"] == "urn:civicflow:test"
            versions[str(event.case_id)].append(event.version)
            partitions[str(event.case_id)].add(record.partition)
    assert set(versions) == ours
    assert all(v == [1, 2, 3, 4, 5, 6] for v in versions.values()), versions
    assert all(len(p) == 1 for p in partitions.values())


async def test_a_new_relay_resumes_from_the_durable_cursor(settings: KernelSettings) -> None:
    first = await append_cases(settings, cases=2, per_case=3)
    await run_relay_until_caught_up(settings)
    second = await append_cases(settings, cases=2, per_case=2)
    await run_relay_until_caught_up(settings)  # a fresh Relay object, as after a crash
    ours = first | second
    records = await read_topic(settings.kafka_bootstrap_servers, settings.case_events_topic, until=has_own(ours, 10))
    # read to the topic's end after the second relay caught up: a republished event would be there too
    own = published_pairs(own_records(records, ours))
    assert len(own) == len(set(own)), "the second relay republished what the first had sent"
    assert sum(s in first for s, _ in own) == 6 and sum(s in second for s, _ in own) == 4


async def test_only_one_relay_leads_at_a_time(settings: KernelSettings) -> None:
    engines = [make_engine(settings.database_url) for _ in range(3)]
    relays = [Relay(e, settings) for e in engines]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    try:
        await eventually(lambda: _one_leader(relays), what="a leader")
        for _ in range(20):
            assert sum(r.is_leader for r in relays) <= 1
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for engine in engines:
            await engine.dispose()


async def _one_leader(relays: list[Relay]) -> bool:
    return sum(r.is_leader for r in relays) == 1


async def test_relay_republishes_when_the_broker_lost_what_it_had(settings: KernelSettings) -> None:
    ours = await append_cases(settings, cases=1, per_case=2)
    await run_relay_until_caught_up(settings)
    # Pretend the broker once held far more than it does now, as after an in-memory broker restarts.
    engine = make_engine(settings.database_url)
    async with engine.begin() as tx:
        await tx.execute(
            text(
                "UPDATE events.relay_cursor SET probe = jsonb_set(last_published, '{offset}', '999999')"
                " WHERE topic = :t"
            ),
            {"t": settings.case_events_topic},
        )
    stop = asyncio.Event()
    task = asyncio.create_task(Relay(engine, settings).run(stop))

    try:
        records = await read_topic(
            settings.kafka_bootstrap_servers, settings.case_events_topic, timeout=60, until=has_own(ours, 4)
        )
    finally:
        stop.set()
        await task
        await engine.dispose()
    own = published_pairs(own_records(records, ours))
    assert sorted(own) == sorted(2 * [(s, v) for s in ours for v in ("1", "2")]), "each event twice"


async def test_an_event_too_large_for_the_broker_is_parked_and_the_next_cases_still_flow(
    settings: KernelSettings,
) -> None:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    small, large, after = uuid7(), uuid7(), uuid7()
    # as the hostile test had it: a request with a 1.1 MB field, over the broker's 1 MiB message limit
    too_large = WorkOrderStatusChanged(external_id="WO", status="x" * 1_100_000)
    await caught_up(settings, Relay(engine, settings))  # only this test's events count
    parked_before = REGISTRY.get_sample_value(
        "civicflow_relay_parked_events_total", {"error": "MessageSizeTooLargeError"}
    )
    async with engine.begin() as tx:
        await store.append(tx, small, 0, [WorkOrderStatusChanged(external_id="WO", status="open")], META)
    async with engine.begin() as tx:
        [big] = await store.append(tx, large, 0, [too_large], META)
    async with engine.begin() as tx:
        await store.append(tx, small, 1, [WorkOrderStatusChanged(external_id="WO", status="done")], META)
        await store.append(tx, after, 0, [WorkOrderStatusChanged(external_id="WO", status="open")], META)

    await run_relay_until_caught_up(settings)

    records = await read_topic(
        settings.kafka_bootstrap_servers, settings.case_events_topic, until=has_own({str(small), str(after)}, 3)
    )
    published = published_pairs(records)
    assert (str(large), "1") not in published
    assert [v for s, v in published if s == str(small)] == ["1", "2"], "the rest went on, in order"
    assert (str(after), "1") in published
    async with engine.connect() as conn:
        parked = (
            await conn.execute(
                text("SELECT event_id, event_type, size_bytes, error FROM events.relay_parked WHERE topic = :t"),
                {"t": settings.case_events_topic},
            )
        ).all()
    await engine.dispose()
    assert [(row.event_id, row.event_type) for row in parked] == [(big.event_id, "WorkOrderStatusChanged")]
    assert parked[0].size_bytes > 1_100_000 and parked[0].error.startswith("MessageSizeTooLargeError")
    parked_after = REGISTRY.get_sample_value(
        "civicflow_relay_parked_events_total", {"error": "MessageSizeTooLargeError"}
    )
    assert (parked_after or 0) - (parked_before or 0) == 1


class BrokerStandIn:
    """The relay's producer, with the broker's answers to one marked event made up: `refusal` for the
    produce request holding it, which also takes down the next event sent (the same request), or, with
    `outage`, a broker that does not answer for it at all. Everything else goes to the real producer."""

    def __init__(self, real: AIOKafkaProducer, marker: bytes, refusal: KafkaError) -> None:
        self.real, self.marker, self.refusal = real, marker, refusal
        self._after_marker = False

    async def send(self, topic: str, value: bytes, **kwargs: Any) -> asyncio.Future[Any]:
        fails = self.marker in value or self._after_marker
        self._after_marker = self.marker in value  # the next event shares the refused request
        if fails:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(self.refusal)
            return future
        return await self.real.send(topic, value, **kwargs)

    async def send_and_wait(self, topic: str, value: bytes, **kwargs: Any) -> Any:
        if self.marker in value:
            raise self.refusal
        return await self.real.send_and_wait(topic, value, **kwargs)


async def caught_up(settings: KernelSettings, relay: Relay) -> None:
    """Put the relay's cursor at the end of the store (the session's, which other tests fill), as if it had
    published everything before this test's events."""
    await relay._ensure_cursor()
    end = await store_end(settings)
    engine = make_engine(settings.database_url)
    async with engine.begin() as tx:
        await tx.execute(
            text("UPDATE events.relay_cursor SET xid = CAST(CAST(:x AS text) AS xid8), position = :p WHERE topic = :t"),
            {"x": str(end.xid), "p": end.position, "t": settings.case_events_topic},
        )
    await engine.dispose()


async def publish_everything(relay: Relay, producer: Any) -> None:
    while await relay.publish_batch(producer):
        pass


async def parked_events(settings: KernelSettings) -> list[str]:
    engine = make_engine(settings.database_url)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_id FROM events.relay_parked WHERE topic = :t ORDER BY position"),
            {"t": settings.case_events_topic},
        )
        found = [str(row.event_id) for row in rows]
    await engine.dispose()
    return found


async def test_a_refusal_by_the_broker_parks_only_the_refused_event_and_keeps_each_case_in_order(
    settings: KernelSettings,
) -> None:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    marker = f"refused-{uuid7()}"
    first, refused, later = uuid7(), uuid7(), uuid7()
    relay = Relay(engine, settings)
    await caught_up(settings, relay)
    ours: list[str] = []
    async with engine.begin() as tx:
        for case_id, version, status in ((first, 0, "s0"), (refused, 0, marker), (first, 1, "s1"), (later, 0, "s0")):
            # the event after the refused one is sent right after it, so refused with it in the first pass
            [event] = await store.append(
                tx, case_id, version, [WorkOrderStatusChanged(external_id="WO", status=status)], META
            )
            ours.append(str(event.event_id))
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish_until_caught_up(
            relay, BrokerStandIn(producer, marker.encode(), MessageSizeTooLargeError()), settings
        )
    finally:
        await producer.stop()
        await engine.dispose()

    assert await parked_events(settings) == [ours[1]]
    records = await read_topic(
        settings.kafka_bootstrap_servers, settings.case_events_topic, until=has_own({str(first), str(later)}, 3)
    )
    published = published_pairs(records)
    assert str(refused) not in {subject for subject, _ in published}
    assert [v for s, v in published if s == str(first)] == ["1", "2"], (
        "the refused neighbour went out after its case's first"
    )
    assert (str(later), "1") in published


async def test_a_broker_that_does_not_answer_is_waited_for_and_nothing_is_parked(settings: KernelSettings) -> None:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    marker, case_id = f"unanswered-{uuid7()}", uuid7()
    relay = Relay(engine, settings)
    await caught_up(settings, relay)
    start = await cursor(settings)
    async with engine.begin() as tx:
        await store.append(tx, case_id, 0, [WorkOrderStatusChanged(external_id="WO", status=marker)], META)
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        stand_in = BrokerStandIn(producer, marker.encode(), RequestTimedOutError())

        async def timed_out() -> bool:  # once the event is visible to the relay, publishing it times out
            try:
                await publish_everything(relay, stand_in)
            except RequestTimedOutError:
                return True
            assert await cursor(settings) == start, "the relay went past the event it could not publish"
            return False

        await eventually(timed_out, what="the publish of the event to time out")
        assert await cursor(settings) == start and await parked_events(settings) == [], "nothing moved, nothing parked"
        await publish_until_caught_up(relay, producer, settings)  # the broker is back
    finally:
        await producer.stop()
        await engine.dispose()
    records = await read_topic(
        settings.kafka_bootstrap_servers, settings.case_events_topic, until=has_own({str(case_id)}, 1)
    )
    assert str(case_id) in {header_map(r.headers)["ce_subject"] for r in records}


async def test_a_commit_wakes_the_relay_without_waiting_for_its_poll(settings: KernelSettings) -> None:
    """LISTEN/NOTIFY: with polling slowed to a minute, a committed event still goes out at once."""
    settings = settings.model_copy(update={"relay_idle_poll_seconds": 60, "relay_fallback_poll_seconds": 60})
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    relay, stop = Relay(engine, settings), asyncio.Event()
    await caught_up(settings, relay)
    task = asyncio.create_task(relay.run(stop))
    case_id = uuid7()
    try:
        await eventually(lambda: _leads(relay), what="the relay to lead")
        await asyncio.sleep(0.5)  # let it read the empty store once and settle into its (minute-long) wait
        async with engine.begin() as tx:
            await store.append(tx, case_id, 0, [WorkOrderStatusChanged(external_id="WO", status="open")], META)
        await eventually(lambda: _published(relay, 1), timeout=30, what="the relay woken by the commit")
    finally:
        stop.set()
        await task
        await engine.dispose()
    records = await read_topic(
        settings.kafka_bootstrap_servers, settings.case_events_topic, until=has_own({str(case_id)}, 1)
    )
    assert str(case_id) in {header_map(r.headers)["ce_subject"] for r in records}


async def _leads(relay: Relay) -> bool:
    return relay.is_leader


async def _published(relay: Relay, at_least: int) -> bool:
    return relay.published >= at_least


async def test_a_long_transaction_holds_the_relay_back_and_the_gauge_shows_it(settings: KernelSettings) -> None:
    """The price of reading in commit order: an event committed after a still-running transaction began
    writing waits for it to end, and civicflow_store_oldest_transaction_seconds says how long so far."""
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    relay, stop = Relay(engine, settings), asyncio.Event()
    await caught_up(settings, relay)
    task = asyncio.create_task(relay.run(stop))
    case_id = uuid7()
    try:
        async with engine.connect() as long_one:
            await long_one.begin()
            await long_one.execute(text("SELECT pg_current_xact_id()"))  # it has written something
            async with engine.begin() as tx:
                await store.append(tx, case_id, 0, [WorkOrderStatusChanged(external_id="WO", status="open")], META)
            await eventually(lambda: _gauge_at_least(1.0), what="the gauge to show the long transaction")
            assert relay.published == 0, "the event went out while an older transaction could still commit"
            await long_one.rollback()
        await eventually(lambda: _published(relay, 1), what="the event once the long transaction ended")
    finally:
        stop.set()
        await task
        await engine.dispose()


async def _gauge_at_least(seconds: float) -> bool:
    return (REGISTRY.get_sample_value("civicflow_store_oldest_transaction_seconds") or 0) >= seconds
