"""The relay: publishes the event store to Kafka in position order, at least once (transactional outbox).

Every service process runs one; a PostgreSQL advisory lock lets exactly one of them publish at a time,
and the others stand by to take over when it dies. The cursor lives in events.relay_cursor, so a new
leader resumes where the old one stopped. Every event goes out signed (wire.signature), so consumers
act on the store's events only. An event the broker will never take (too large, say) is parked in
events.relay_parked and the rest flow on; a broker that is down is waited for. If the broker comes back
empty (the embedded broker keeps nothing on restart) the relay notices that an event it published
earlier is no longer where the broker said it was, and republishes from the start; consumers drop what
they had already processed.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)
from aiokafka.structs import RecordMetadata
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.db import as_json, libpq_url
from civicflow.events import RecordedEvent
from civicflow.eventstore import Checkpoint, PostgresEventStore
from civicflow.kafka import ensure_topics, make_producer
from civicflow.metrics import RELAY_LAG, RELAY_LEADER, RELAY_PARKED, RELAY_PUBLISHED, STORE_OLDEST_TRANSACTION
from civicflow.secrets import event_signing_key
from civicflow.settings import KernelSettings
from civicflow.wire import Headers, to_message

log = structlog.get_logger(__name__)

RELAY_LOCK_KEY = 0x311_4E1A
# The channel migration 0004's trigger notifies once per transaction that inserted events.
NOTIFY_CHANNEL = "civicflow_case_events"

# The transaction that holds readers back: the oldest one that has a transaction id (one that has written
# or locked something), in any database of the cluster, as transaction ids are the cluster's.
_OLDEST_TRANSACTION = text(
    "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start)), 0)"
    " FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
)

# What the broker (or the client, before sending) says about one record and would say again however often
# it is sent: the record is parked. Everything else (the broker down, a leader moving, a timeout,
# authorisation) is about the broker, not the record, and is retried with the whole batch.
REFUSED_FOR_WHAT_IT_IS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
    UnsupportedForMessageFormatError,
)


def cannot_be_published(exc: BaseException) -> bool:
    """Whether a producer error is about the record itself: retrying it would stop the relay for good."""
    if isinstance(exc, KafkaError):
        return isinstance(exc, REFUSED_FOR_WHAT_IT_IS)
    # the client refused to build the record at all (a value it cannot serialise)
    return isinstance(exc, TypeError | ValueError)


class RelayCursor(NamedTuple):
    """The relay's row of events.relay_cursor: where it stands in the store, and its broker probe."""

    at: Checkpoint
    probe: dict[str, Any] | None


class Relay:
    def __init__(self, engine: AsyncEngine, settings: KernelSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._store = PostgresEventStore()
        self._topic = settings.case_events_topic
        self._signing_key = event_signing_key(settings)
        self.is_leader = False
        self.published = 0
        self.parked = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by until this process holds the relay lock, then publish until stopped."""
        while not stop.is_set():
            try:
                async with self._engine.connect() as lock_conn:
                    lock_conn = await lock_conn.execution_options(isolation_level="AUTOCOMMIT")
                    got = await lock_conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": RELAY_LOCK_KEY})
                    if got:
                        try:
                            await self._lead(lock_conn, stop)
                        finally:
                            self.is_leader = False
                            RELAY_LEADER.set(0)
                            RELAY_LAG.set(0)  # what this process says of the relay's lag ends with its lead
                            await lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RELAY_LOCK_KEY})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay failed; retrying")
            await _wait(stop, self._settings.relay_standby_poll_seconds)

    async def _lead(self, lock_conn: AsyncConnection, stop: asyncio.Event) -> None:
        self.is_leader = True
        RELAY_LEADER.set(1)
        log.info("relay leading", topic=self._topic)
        await ensure_topics(self._settings)
        await self._ensure_cursor()  # once per leadership, not on every poll
        producer = make_producer(self._settings)
        watcher = AIOKafkaConsumer(bootstrap_servers=self._settings.kafka_bootstrap_servers, enable_auto_commit=False)
        committed = asyncio.Event()
        listener = await _listen(self._settings.database_url, committed)
        await producer.start()
        await watcher.start()
        try:
            await self._check_broker(watcher)
            last_check = last_beat = time.monotonic()
            announced = False  # a commit was announced that we have not read yet
            while not stop.is_set():
                if time.monotonic() - last_beat > 1:
                    # the lock connection doubles as our heartbeat: if it died, another relay may lead now
                    STORE_OLDEST_TRANSACTION.set(float(await lock_conn.scalar(_OLDEST_TRANSACTION) or 0))
                    last_beat = time.monotonic()
                if time.monotonic() - last_check > 5:
                    await self._check_broker(watcher)
                    last_check = time.monotonic()
                committed.clear()  # before reading, so a commit announced while we read wakes the next wait
                if await self.publish_batch(producer) > 0:
                    announced = False
                    continue
                announced = announced or committed.is_set() or listener is None
                # announced but not readable: an older transaction holds the readers back; look again soon
                wait = (
                    self._settings.relay_idle_poll_seconds if announced else self._settings.relay_fallback_poll_seconds
                )
                await _wait_either(stop, committed, wait)
                if listener is not None and listener.is_closed():
                    log.warning("relay lost its LISTEN connection; polling until it leads again")
                    listener = None
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()
            await watcher.stop()
            await producer.stop()

    async def _check_broker(self, watcher: AIOKafkaConsumer) -> None:
        """Republish from the start if the broker no longer holds an event it acknowledged earlier.

        The probe is an event published before the previous check, not the latest one: after a restart
        the relay may already have published new events to the empty broker, and those would be found.
        """
        async with self._engine.begin() as tx:
            cursor = await self._cursor(tx)
            probe = cursor.probe
            if not probe or await _still_there(watcher, self._topic, probe):
                await tx.execute(
                    text("UPDATE events.relay_cursor SET probe = last_published WHERE topic = :t"),
                    {"t": self._topic},
                )
                return
            log.warning("broker lost published events; republishing the store", since_position=cursor.at.position)
            await ensure_topics(self._settings)
            await tx.execute(
                text(
                    "UPDATE events.relay_cursor SET xid = '0', position = 0, last_published = NULL, probe = NULL"
                    " WHERE topic = :t"
                ),
                {"t": self._topic},
            )

    async def _ensure_cursor(self) -> None:
        async with self._engine.begin() as tx:
            await tx.execute(
                text("INSERT INTO events.relay_cursor (topic) VALUES (:t) ON CONFLICT (topic) DO NOTHING"),
                {"t": self._topic},
            )

    async def _cursor(self, tx: AsyncConnection) -> RelayCursor:
        row = (
            await tx.execute(
                text(
                    "SELECT CAST(xid AS text) AS xid, position, probe FROM events.relay_cursor"
                    " WHERE topic = :t FOR UPDATE"
                ),
                {"t": self._topic},
            )
        ).one()
        return RelayCursor(Checkpoint(int(row.xid), row.position), as_json(row.probe))

    async def publish_batch(self, producer: AIOKafkaProducer) -> int:
        """Publish the next batch after the cursor, wait for the broker's acks, then move the cursor.

        An event refused for what it is gets parked, in the transaction that moves the cursor past it.
        The client refuses one before sending it (too large), and the others go out as they were; the
        broker refuses a whole produce request, which may have held innocent neighbours, so after such a
        refusal the events from there on are published once more, one at a time and in order."""
        async with self._engine.begin() as tx:
            cursor = await self._cursor(tx)
            page = await self._store.read_all(tx, cursor.at, self._settings.relay_batch_size)
            events = page.events
            if not events:
                RELAY_LAG.set(0)
                return 0
            messages = [to_message(event, self._signing_key) for event in events]
            results, unsent = await self._send_all(producer, messages)
            refused = next((i for i, r in enumerate(results) if isinstance(r, BaseException) and i not in unsent), None)
            if refused is not None:
                for i in range(refused, len(events)):
                    results[i] = await self._send_one(producer, messages[i])
            for event, message, result in zip(events, messages, results, strict=True):
                if isinstance(result, BaseException):
                    await self._park(tx, event, message, result)
            delivered = [(e, r) for e, r in zip(events, results, strict=True) if isinstance(r, RecordMetadata)]
            last = (
                json.dumps(
                    {
                        "partition": delivered[-1][1].partition,
                        "offset": delivered[-1][1].offset,
                        "event_id": str(delivered[-1][0].event_id),
                    }
                )
                if delivered
                else None
            )
            await tx.execute(
                text(
                    "UPDATE events.relay_cursor SET xid = CAST(CAST(:x AS text) AS xid8), position = :p,"
                    " last_published = coalesce(CAST(:l AS jsonb), last_published), updated_at = now()"
                    " WHERE topic = :t"
                ),
                {"x": str(page.next.xid), "p": page.next.position, "l": last, "t": self._topic},
            )
        self.published += len(delivered)
        RELAY_PUBLISHED.inc(len(delivered))
        RELAY_LAG.set((datetime.now(UTC) - events[0].recorded_at).total_seconds())
        return len(events)

    async def _send_all(
        self, producer: AIOKafkaProducer, messages: list[tuple[bytes, bytes, Headers]]
    ) -> tuple[list[RecordMetadata | BaseException], set[int]]:
        """Send the whole batch at once and wait for every ack. A record refused for what it is comes back
        as its error (with its index among the unsent when the client refused it before sending);
        anything else (the broker down) is raised, and the batch is tried again."""
        pending: list[asyncio.Future[RecordMetadata]] = []
        unsent: set[int] = set()
        for index, (key, value, headers) in enumerate(messages):
            try:
                pending.append(await producer.send(self._topic, value=value, key=key, headers=headers))
            except Exception as exc:
                if not cannot_be_published(exc):
                    raise
                refused: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
                refused.set_exception(exc)
                pending.append(refused)
                unsent.add(index)
        results: list[RecordMetadata | BaseException] = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not cannot_be_published(result):
                raise result
        return results, unsent

    async def _send_one(
        self, producer: AIOKafkaProducer, message: tuple[bytes, bytes, Headers]
    ) -> RecordMetadata | BaseException:
        key, value, headers = message
        try:
            return await producer.send_and_wait(self._topic, value=value, key=key, headers=headers)
        except Exception as exc:
            if not cannot_be_published(exc):
                raise
            return exc

    async def _park(
        self, tx: AsyncConnection, event: RecordedEvent, message: tuple[bytes, bytes, Headers], exc: BaseException
    ) -> None:
        """Set one event aside, in the transaction that moves the cursor past it."""
        key, value, headers = message
        size = len(key) + len(value) + sum(len(name) + len(raw) for name, raw in headers)
        # the client's and broker's words name sizes and limits, not the record's content
        error = f"{type(exc).__name__}: {exc}"[:500]
        await tx.execute(
            text(
                "INSERT INTO events.relay_parked (topic, position, event_id, case_id, event_type, size_bytes, error)"
                " VALUES (:t, :p, :e, :c, :y, :s, :x) ON CONFLICT (topic, position) DO NOTHING"
            ),
            {
                "t": self._topic,
                "p": event.position,
                "e": event.event_id,
                "c": event.case_id,
                "y": event.type,
                "s": size,
                "x": error,
            },
        )
        self.parked += 1
        RELAY_PARKED.labels(type(exc).__name__).inc()
        log.error(
            "relay parked an event it cannot publish; the events after it go on",
            position=event.position,
            event_id=str(event.event_id),
            event_type=event.type,
            size_bytes=size,
            max_message_bytes=self._settings.kafka_max_message_bytes,
            error=error,
            hint="see events.relay_parked; publish it again once the cause is fixed",
        )


async def _still_there(watcher: AIOKafkaConsumer, topic: str, last: dict[str, Any]) -> bool:
    """Whether the broker still holds the event at the partition and offset it acknowledged."""
    partition = TopicPartition(topic, int(last["partition"]))
    watcher.assign([partition])
    watcher.seek(partition, int(last["offset"]))
    found = await watcher.getmany(partition, timeout_ms=3000, max_records=1)
    for record in found.get(partition, []):
        return bool(
            record.offset == int(last["offset"]) and dict(record.headers).get("ce_id") == last["event_id"].encode()
        )
    return False


async def _listen(database_url: str, committed: asyncio.Event) -> asyncpg.Connection | None:
    """A connection of its own that sets `committed` whenever a transaction that appended events commits
    (the trigger of migration 0004). Without it the relay polls, so a failure here is logged, not raised."""
    try:
        conn = await asyncpg.connect(libpq_url(database_url))
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: committed.set())
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("relay cannot LISTEN for commits; polling instead", error=type(exc).__name__)
        return None
    return conn


async def _wait_either(stop: asyncio.Event, woken: asyncio.Event, seconds: float) -> None:
    """Wait until stopped, woken or `seconds` passed."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(woken.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
