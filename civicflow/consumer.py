"""Idempotent case-event consumers on FastStream: inbox, bounded retries, then the dead-letter topic."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from aiosmtplib import SMTPException
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.backoff import Backoff
from civicflow.events import RecordedEvent
from civicflow.eventstore import ConcurrencyConflict
from civicflow.kafka import make_producer
from civicflow.metrics import CONSUMER_LAG, EVENTS_HANDLED, EVENTS_REDELIVERED, HANDLER_RETRIES, HANDLER_SECONDS
from civicflow.secrets import event_signing_key
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import BatchPolicy, UnitOfWork
from civicflow.wire import UnreadableRecord, event_type_of, is_catalogued, read_event

log = structlog.get_logger(__name__)

Handler = Callable[[RecordedEvent], Awaitable[None]]
Effect = Callable[[AsyncConnection], Awaitable[None]]

# What a dead-lettered record carries besides its original headers (documented in the AsyncAPI document).
DEAD_LETTER_HEADERS: dict[str, str] = {
    "dlq_service": "The service that gave up on the record (its handler failed, or it could not read it).",
    "dlq_error": "What went wrong, by kind, field and code (never the values, which may be personal data);"
    " 'not published by the relay: signature missing/invalid' for a record that is not from the store.",
    "dlq_attempts": "How many times the handler tried (0: the record could not be read, nothing was tried).",
    "dlq_original_topic": "Where the event was read from.",
    "dlq_original_partition": "Its partition there.",
    "dlq_original_offset": "Its offset there.",
    "correlation_id": "The original's ce_correlationid when it had one (the name FastStream reads a"
    " correlation id from); absent otherwise.",
}
# Where a record whose event type cannot be read, or is not in the catalogue, is counted: a label per
# made-up type would let any producer grow the metrics without bound.
UNREADABLE, UNKNOWN = "(unreadable)", "(unknown)"


class Inbox:
    """The events a service has processed, table <schema>.inbox; a duplicate is caught by its primary key.
    The schema is named after the service, and so are the redeliveries it counts."""

    def __init__(self, engine: AsyncEngine, schema: str) -> None:
        self._engine = engine
        self._claim = text(
            f"INSERT INTO {schema}.inbox (event_id) VALUES (:e) ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        )
        self._seen = text(f"SELECT 1 FROM {schema}.inbox WHERE event_id = :e")
        self._redelivered = EVENTS_REDELIVERED.labels(schema)

    async def claim(self, tx: AsyncConnection, event_id: UUID) -> bool:
        """Mark the event processed within tx; False if it already was (then do nothing)."""
        claimed = (await tx.execute(self._claim, {"e": event_id})).first() is not None
        if not claimed:
            self._redelivered.inc()
        return claimed

    async def seen(self, conn: AsyncConnection, event_id: UUID) -> bool:
        """Whether the event was processed before: for a handler that would rather not call anyone twice
        (claim, in the transaction of the effects, stays the guarantee)."""
        found = (await conn.execute(self._seen, {"e": event_id})).first() is not None
        if found:
            self._redelivered.inc()
        return found

    async def process_once(self, event: RecordedEvent, effect: Effect) -> bool:
        """Run effect and the inbox mark in one transaction; a redelivered event is a no-op."""
        async with self._engine.begin() as tx:
            if not await self.claim(tx, event.event_id):
                return False
            await effect(tx)
            return True


@dataclasses.dataclass(frozen=True)
class Reactions:
    """A service whose policies decide and whose kernel records: the event types it reacts to, the
    policy for them, and the unit of work that runs it over a batch."""

    types: frozenset[str]
    policy: BatchPolicy
    unit: UnitOfWork

    def one_at_a_time(self) -> Handler:
        async def handle(event: RecordedEvent) -> None:
            await self.unit.run([event], self.policy)

        return handle


class TryLater(Exception):
    """Raised by a handler when something it needs is down for now (a department's system, say): the
    event is retried until it goes through instead of being dead-lettered."""


def is_transient(exc: BaseException) -> bool:
    """Failures that pass by themselves: TryLater, a database that cannot be reached right now, and
    another writer on the same case first (deciding again on fresh state resolves it)."""
    if isinstance(exc, TryLater | ConcurrencyConflict):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, ConnectionError | TimeoutError)


def describe_error(exc: BaseException) -> str:
    """An error for logs and dead-letter headers that cannot carry personal data: validation errors by
    field, database and SMTP errors by kind and code, never the values (an address, an email) they
    would otherwise echo."""
    if isinstance(exc, ValidationError):
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        return f"ValidationError: {fields}"[:500]
    if isinstance(exc, DBAPIError):
        return f"{type(exc).__name__}: {type(exc.orig).__name__} (statement and values withheld)"
    if isinstance(exc, SMTPException):
        code = getattr(exc, "code", None)
        return f"{type(exc).__name__}: SMTP {code or 'error'} (message withheld)"
    return f"{type(exc).__name__}: {exc}"[:500]


class CaseEventConsumer:
    """Subscribes one service's group to the case-events topic and dispatches events by type.

    Given Reactions, a batch's readable events are decided and recorded in one unit of work; if that
    fails for any reason, they are handled one at a time, each in its own transaction, with the retries
    and dead-lettering below, so a poison event is isolated and dead-lettered alone."""

    def __init__(
        self,
        service: str,
        settings: KernelSettings,
        handlers: Mapping[str, Handler] | Reactions,
        dead_letters: DeadLetterTopic | None = None,
    ) -> None:
        self.service = service
        self.group_id = f"civicflow.{service}"
        self._settings = settings
        self._reactions: Reactions | None = None
        if isinstance(handlers, Reactions):
            self._reactions = handlers
            handlers = dict.fromkeys(handlers.types, handlers.one_at_a_time())
        self._handlers = dict(handlers)
        self._backoff = Backoff(settings.handler_retry_base_seconds, settings.handler_max_backoff_seconds)
        self._signing_key = event_signing_key(settings)
        self._broker: KafkaBroker | None = None
        self._dead_letters = dead_letters or KafkaDeadLetterTopic(settings)
        self.dead_lettered = 0

    def register(self, broker: KafkaBroker) -> None:
        self._broker = broker
        subscriber = broker.subscriber(
            self._settings.case_events_topic,
            group_id=self.group_id,
            # Batches: one offset commit per batch instead of per message; the records of a partition
            # still come in order and are handled one by one.
            batch=True,
            max_records=self._settings.consumer_batch_size,
            # Commit the offsets only after the whole batch was handled; if handling escapes with an error
            # (the dead-letter topic unreachable, say), rewind every partition of the batch instead, so
            # nothing after the failed record is skipped (the inbox drops what was already done).
            ack_policy=AckPolicy.NACK_ON_ERROR,
            auto_offset_reset="earliest",
            session_timeout_ms=self._settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self._settings.kafka_heartbeat_interval_ms,
            rebalance_timeout_ms=self._settings.kafka_session_timeout_ms,
            # FastStream would decode every header and JSON-decode every value of the batch before our
            # handler runs: one unreadable record would then fail (or drop) the whole batch. We read each
            # record ourselves (_read), so one that cannot be read is dead-lettered alone.
            parser=parse_batch_undecoded,
            decoder=records_undecoded,
            title=f"{self.service} case events",
        )
        subscriber(self._on_batch)

    async def _on_batch(self, message: KafkaMessage) -> None:
        records: Any = message.raw_message
        try:
            ready: list[tuple[RecordedEvent, Handler, Any]] = []
            for record in records if isinstance(records, tuple) else (records,):
                if (read := await self._read(record)) is not None:
                    ready.append(read)
            if len(ready) > 1 and self._reactions is not None and await self._decide_together(self._reactions, ready):
                return
            for event, handler, record in ready:
                await self.dispatch(event, handler, record)
        finally:
            await self._dead_letters.close()

    async def _decide_together(self, reactions: Reactions, ready: list[tuple[RecordedEvent, Handler, Any]]) -> bool:
        """The whole batch in one unit of work; False when it failed (then nothing of it was recorded)."""
        events = [event for event, _, _ in ready]
        started = time.perf_counter()
        try:
            with structlog.contextvars.bound_contextvars(batch_size=len(events)):
                await reactions.unit.run(events, reactions.policy)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "batch failed; handling its events one at a time",
                batch_size=len(events),
                transient=is_transient(exc),
                error=describe_error(exc),
            )
            return False
        share = (time.perf_counter() - started) / len(events)
        now = datetime.now(UTC)
        for event in events:
            HANDLER_SECONDS.labels(self.service, event.type).observe(share)
            EVENTS_HANDLED.labels(self.service, event.type, "handled").inc()
            CONSUMER_LAG.labels(self.service).observe((now - event.recorded_at).total_seconds())
        return True

    async def _on_record(self, record: Any) -> None:
        """One record on its own: read, then handled as its handler would be outside a batch."""
        if (read := await self._read(record)) is not None:
            await self.dispatch(*read)

    async def _read(self, record: Any) -> tuple[RecordedEvent, Handler, Any] | None:
        """Read one record for its handler (None: not this service's type, or dead-lettered): one that
        cannot be read, or that the relay did not sign, is dead-lettered with its original bytes, and the
        partition moves on."""
        event_type = UNREADABLE
        try:
            # Every service sees every event: look at its type alone before reading anything else.
            event_type = event_type_of(record.headers or ())
            if not is_catalogued(event_type):
                event_type = UNKNOWN
                raise UnreadableRecord("header ce_type names no event type of the catalogue")
            handler = self._handlers.get(event_type)
            if handler is None:
                return None
            event = read_event(self._signing_key, record.key, record.value, record.headers or ())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever its bytes, a record we cannot read must not stop the partition
            await self._dead_letter(record, exc, attempts=0)
            EVENTS_HANDLED.labels(self.service, event_type, "dead_lettered").inc()
            return None
        return event, handler, record

    async def dispatch(self, event: RecordedEvent, handler: Handler, record: Any = None) -> None:
        with structlog.contextvars.bound_contextvars(
            case_id=str(event.case_id),
            event_id=str(event.event_id),
            event_type=event.type,
            correlation_id=str(event.metadata.correlation_id),
        ):
            started = time.perf_counter()
            outcome = await self._handle(event, handler, record)
            HANDLER_SECONDS.labels(self.service, event.type).observe(time.perf_counter() - started)
            EVENTS_HANDLED.labels(self.service, event.type, outcome).inc()
            CONSUMER_LAG.labels(self.service).observe((datetime.now(UTC) - event.recorded_at).total_seconds())

    async def _handle(self, event: RecordedEvent, handler: Handler, record: Any) -> str:
        """Run the handler, retrying as the failure deserves; "handled" or "dead_lettered"."""
        attempts = self._settings.handler_attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                await handler(event)
                return "handled"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                transient = is_transient(exc)
                if attempt >= attempts and not transient:
                    log.error("handler failed; dead-lettering", attempt=attempt, error=describe_error(exc))
                    if record is not None:
                        await self._dead_letter(record, exc, attempts=attempt)
                    return "dead_lettered"
                HANDLER_RETRIES.labels(self.service, str(transient).lower()).inc()
                # A database (or whatever raised TryLater) that is down will come back: wait for it rather than
                # dead-letter everything in flight. The partition waits too, which keeps cases in order.
                delay = self._backoff.after(attempt).total_seconds()
                log.warning(
                    "handler failed; retrying",
                    attempt=attempt,
                    transient=transient,
                    retry_in_seconds=round(delay, 2),
                    error=describe_error(exc),
                )
                await asyncio.sleep(delay)

    async def _dead_letter(self, record: Any, exc: BaseException, attempts: int) -> None:
        """Forward the record as it came (key, value and headers byte for byte, whatever they hold) with
        the dlq_* headers; returns once the broker has it."""
        error = describe_error(exc)
        try:
            await self._dead_letters.send(
                record.key, record.value, dead_letter_headers(record, self.service, error, attempts)
            )
        except (MessageSizeTooLargeError, RecordTooLargeError):
            # Too large even for the dead-letter topic: keep its envelope, say what became of the value.
            error = f"{error}; value of {len(record.value or b'')} bytes dropped: too large for the dead-letter topic"
            await self._dead_letters.send(record.key, None, dead_letter_headers(record, self.service, error, attempts))
        self.dead_lettered += 1
        # where it was, not what it held: the dead-letter topic has the bytes
        log.error(
            "event dead-lettered" if attempts else "record unreadable or not the relay's; dead-lettered",
            topic=self._settings.dead_letter_topic,
            original_partition=record.partition,
            original_offset=record.offset,
            error=error,
        )


class DeadLetterTopic(Protocol):
    """Where records a service gave up on go, byte for byte."""

    async def send(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]) -> None: ...

    async def close(self) -> None: ...


class KafkaDeadLetterTopic:
    """The dead-letter topic on Kafka. FastStream publishes headers as text only, and a dead letter must
    carry the original bytes, so this has its own producer: started when a batch first needs it and
    stopped with the batch (dead letters are rare)."""

    def __init__(self, settings: KernelSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def send(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]) -> None:
        if self._producer is None:
            producer = make_producer(self._settings, self._settings.dead_letter_max_bytes)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        await self._producer.send_and_wait(self._settings.dead_letter_topic, value, key=key, headers=headers)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def dead_letter_headers(record: Any, service: str, error: str, attempts: int) -> list[tuple[str, bytes | None]]:
    """The record's own headers, unchanged and in order (an earlier dead-lettering's dlq_* ones left
    out), then ours; a header without a value (null) stays without one."""
    own = {*DEAD_LETTER_HEADERS}
    headers: list[tuple[str, bytes | None]] = [(name, raw) for name, raw in record.headers or () if name not in own]
    correlation = next((raw for name, raw in headers if name == "ce_correlationid" and raw), None)
    ours = {
        "dlq_service": service,
        "dlq_error": error,
        "dlq_attempts": str(attempts),
        "dlq_original_topic": record.topic,
        "dlq_original_partition": str(record.partition),
        "dlq_original_offset": str(record.offset),
    }
    headers += [(name, value.encode()) for name, value in ours.items()]
    if correlation is not None:
        headers.append(("correlation_id", correlation))
    return headers


async def parse_batch_undecoded(records: Any, faststream_parser: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream's batch message, built without decoding any header (it would fail the batch on one
    that is not UTF-8); the message still holds the records exactly as they came."""
    batch = records if isinstance(records, tuple) else (records,)
    message = await faststream_parser(tuple(dataclasses.replace(r, headers=()) for r in batch))
    message.raw_message = records
    return message


async def records_undecoded(message: Any) -> Any:
    """Hand the handler the records themselves: FastStream would JSON-decode every value of the batch."""
    return message.raw_message
