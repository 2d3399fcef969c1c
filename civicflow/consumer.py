"""Idempotent case-event consumers on FastStream: inbox, bounded retries, then the dead-letter topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
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
from civicflow.metrics import CONSUMER_LAG, EVENTS_HANDLED, EVENTS_REDELIVERED, HANDLER_RETRIES, HANDLER_SECONDS
from civicflow.settings import KernelSettings
from civicflow.wire import from_message, header_map

log = structlog.get_logger(__name__)

Handler = Callable[[RecordedEvent], Awaitable[None]]
Effect = Callable[[AsyncConnection], Awaitable[None]]

# What a dead-lettered record carries besides its original headers (documented in the AsyncAPI document).
DEAD_LETTER_HEADERS: dict[str, str] = {
    "dlq_service": "The service whose handler gave up on the event.",
    "dlq_error": "What went wrong, by kind, field and code (never the values, which may be personal data).",
    "dlq_attempts": "How many times the handler tried.",
    "dlq_original_topic": "Where the event was read from.",
    "dlq_original_partition": "Its partition there.",
    "dlq_original_offset": "Its offset there.",
    "correlation_id": "The original's ce_correlationid when it had one (the Kafka client library's own name"
    " for it; without one, the library makes up a random id).",
}


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


class TryLater(Exception):
    """Raised by a handler when something it needs is down for now (a department's system, say): the
    event is retried until it goes through instead of being dead-lettered."""


def is_transient(exc: BaseException) -> bool:
    """Failures that pass by themselves: TryLater, and a database that cannot be reached right now."""
    if isinstance(exc, TryLater):
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
    """Subscribes one service's group to the case-events topic and dispatches events by type."""

    def __init__(self, service: str, settings: KernelSettings, handlers: Mapping[str, Handler]) -> None:
        self.service = service
        self.group_id = f"civicflow.{service}"
        self._settings = settings
        self._handlers = dict(handlers)
        self._backoff = Backoff(settings.handler_retry_base_seconds, settings.handler_max_backoff_seconds)
        self._broker: KafkaBroker | None = None
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
            title=f"{self.service} case events",
        )
        subscriber(self._on_batch)

    async def _on_batch(self, message: KafkaMessage) -> None:
        records: Any = message.raw_message
        for record in records if isinstance(records, tuple) else (records,):
            await self._on_record(record)

    async def _on_record(self, record: Any) -> None:
        event_type = "(unreadable)"
        try:
            # Every service sees every event: look at its type alone before decoding anything else.
            event_type = next((raw for name, raw in record.headers if name == "ce_type"), b"").decode()
            handler = self._handlers.get(event_type)
            if handler is None:
                return
            event = from_message(header_map(record.headers), record.value)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not an event we can read at all
            await self._dead_letter(record, exc, attempts=0)
            EVENTS_HANDLED.labels(self.service, event_type, "dead_lettered").inc()
            return
        await self.dispatch(event, handler, record)

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
        assert self._broker is not None
        headers = {name: raw.decode(errors="replace") for name, raw in record.headers or ()}
        headers.update(
            {
                "dlq_service": self.service,
                "dlq_error": describe_error(exc),
                "dlq_attempts": str(attempts),
                "dlq_original_topic": record.topic,
                "dlq_original_partition": str(record.partition),
                "dlq_original_offset": str(record.offset),
            }
        )
        await self._broker.publish(
            record.value,
            topic=self._settings.dead_letter_topic,
            key=record.key,
            headers=headers,
            correlation_id=headers.get("ce_correlationid"),
        )
        self.dead_lettered += 1
        log.error("event dead-lettered", topic=self._settings.dead_letter_topic, error=headers["dlq_error"])
