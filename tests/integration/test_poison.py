"""Hostile records on every partition of the case-events topic, against real Kafka and PostgreSQL: each
is dead-lettered exactly once, byte for byte, and the real cases published after it on its partition are
all handled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.consumer import DEAD_LETTER_HEADERS, CaseEventConsumer, Inbox
from civicflow.events import RecordedEvent, WorkOrderStatusChanged
from civicflow.ids import uuid7
from civicflow.kafka import ensure_topics
from civicflow.relay import Relay
from civicflow.secrets import event_signing_key
from civicflow.settings import KernelSettings
from civicflow.wire import SIGNATURE_HEADER, signature, to_message
from tests.conftest import eventually
from tests.factories import recorded
from tests.integration.kafka_helpers import read_topic
from tests.integration.test_consumer import append, effects, start_consumer

pytestmark = pytest.mark.integration

RawHeaders = list[tuple[str, bytes | None]]
Record = tuple[bytes | None, bytes | None, RawHeaders]
# Tansu (the embedded broker) took records of 12 MB when we tried (its memory storage sets no limit), so
# the 5 MB record goes on the topic as it is; the consumer's dead-letter producer allows 64 MB.
FIVE_MB = 5 * 1024 * 1024


def a_signed_event(signing_key: bytes) -> Record:
    """A well-formed event as the relay would publish it (its case is no test case: never counted)."""
    event = recorded(WorkOrderStatusChanged(external_id="WO-1", status="open"), case_id=uuid7(), version=1, at=NOW)
    key, value, headers = to_message(event, signing_key)
    return key, value, list(headers)


def signed_again(signing_key: bytes, key: bytes | None, value: bytes | None, headers: RawHeaders) -> Record:
    """A record changed after signing, signed again: it gets past the signature check to the layer under test."""
    unsigned = [(name, raw) for name, raw in headers if name != SIGNATURE_HEADER]
    return key, value, [*unsigned, (SIGNATURE_HEADER, signature(signing_key, key, value, unsigned).encode())]


def with_header(headers: RawHeaders, name: str, raw: bytes | None) -> RawHeaders:
    return [(n, raw if n == name else r) for n, r in headers]


def change(value: bytes | None = b"", **header_values: bytes | None) -> Callable[[bytes], Record]:
    """Poison made from a signed event: its value (unless left as b"") and headers replaced, then re-signed."""

    def make(signing_key: bytes) -> Record:
        key, original, headers = a_signed_event(signing_key)
        for name, raw in header_values.items():
            headers = with_header(headers, name, raw)
        return signed_again(signing_key, key, original if value == b"" else value, headers)

    return make


def without_content_type(signing_key: bytes) -> Record:
    key, _, headers = a_signed_event(signing_key)
    return signed_again(signing_key, key, b"not json at all", [(n, r) for n, r in headers if n != "content-type"])


def empty_body(signing_key: bytes) -> Record:
    key, _, headers = a_signed_event(signing_key)
    return signed_again(signing_key, key, b"", headers)


def unsigned(signing_key: bytes) -> Record:
    key, value, headers = a_signed_event(signing_key)
    return key, value, [(n, r) for n, r in headers if n != SIGNATURE_HEADER]


def forged(signing_key: bytes) -> Record:
    return a_signed_event(b"a key that is not the system's")


def not_text_header(signing_key: bytes) -> Record:
    key, value, headers = a_signed_event(signing_key)
    headers = [*with_header(headers, "ce_actor", b"\xff\xfeintake"), ("x-binary", b"\x80\x81\xc3")]
    return signed_again(signing_key, key, value, headers)


# kind -> (how to make it, what its dlq_error must say)
POISON: dict[str, tuple[Callable[[bytes], Record], str]] = {
    "invalid JSON with a JSON content type": (change(b'{"external_id": "WO-1", "status": '), "the value is not JSON"),
    "invalid JSON without a content type": (without_content_type, "the value is not JSON"),
    "a wrong payload for its type": (change(b'{"external_id": 7}'), "ValidationError: "),
    "an unknown ce_type": (change(ce_type=b"CaseTeleported"), "names no event type of the catalogue"),
    "a schema version from the future": (change(ce_schemaversion=b"99"), "newer than this code"),
    "header values that are not UTF-8": (not_text_header, "header ce_actor is not UTF-8 text"),
    "a ce_type that is not UTF-8": (change(ce_type=b"\xffWorkOrderStatusChanged"), "header ce_type is not UTF-8"),
    "a header without a value": (change(ce_id=None), "ValueError: "),
    "an empty body": (empty_body, "the record has no value"),
    "no body at all (null)": (change(None), "the record has no value"),
    "a 5 MB body": (change(b"x" * FIVE_MB), "the value is not JSON"),
    "a well-formed event nobody signed": (unsigned, "not published by the relay: signature missing"),
    "a well-formed event signed with another key": (forged, "not published by the relay: signature invalid"),
}
NOW = datetime.now(UTC)


def a_case_on(partition: int, partitions: int) -> UUID:
    """A new case id whose events the relay's producer puts on `partition` (the client's default partitioner)."""
    every = list(range(partitions))
    while True:
        case_id = uuid7()
        if DefaultPartitioner()(str(case_id).encode(), every, every) == partition:
            return case_id


async def test_no_record_stops_a_partition_and_each_is_dead_lettered_once_as_it_came(
    settings: KernelSettings, schema: tuple[AsyncEngine, str]
) -> None:
    engine, name = schema
    inbox = Inbox(engine, name)

    async def handler(event: RecordedEvent) -> None:
        async def effect(tx: AsyncConnection) -> None:
            await tx.execute(
                text(f"INSERT INTO {name}.effects (event_id, case_id) VALUES (:e, :c)"),
                {"e": event.event_id, "c": event.case_id},
            )

        await inbox.process_once(event, effect)

    await ensure_topics(settings)
    signing_key = event_signing_key(settings)  # the relay's and the consumer's: the same state folder
    relay, stop = Relay(engine, settings), asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    broker: KafkaBroker | None = None
    hostile = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 * FIVE_MB)
    sent: dict[str, tuple[int, str, Record]] = {}  # poison id -> (partition, kind, record as sent)
    fresh: set[UUID] = set()
    try:
        consumer = CaseEventConsumer(name, settings, {"WorkOrderStatusChanged": handler})
        broker = await start_consumer(settings, consumer)
        await hostile.start()
        for partition in range(settings.topic_partitions):
            for kind, (make, _) in POISON.items():
                key, value, headers = make(signing_key)
                poison_id = f"{partition}/{kind}"
                headers = [*headers, ("x-poison-id", poison_id.encode())]
                await hostile.send_and_wait(
                    settings.case_events_topic,
                    value,
                    key=key,
                    headers=headers,  # a header without a value (null) is allowed on the wire
                    partition=partition,
                )
                sent[poison_id] = (partition, kind, (key, value, headers))
                # a fresh case after it on the same partition: appended once the poison is acknowledged,
                # so the relay can only publish it behind the poison
                case_id = a_case_on(partition, settings.topic_partitions)
                await append(engine, case_id, ["open"])
                fresh.add(case_id)

        await eventually(lambda: _handled(engine, name, fresh), timeout=180, what="every fresh case handled")
        dead = await read_topic(
            settings.kafka_bootstrap_servers,
            settings.dead_letter_topic,
            len(sent),
            timeout=60,
            until=lambda records: {dict(r.headers)["x-poison-id"].decode() for r in records} >= sent.keys(),
        )
    finally:
        await hostile.stop()
        if broker is not None:
            await broker.stop()
        stop.set()
        await relay_task

    by_id: dict[str, list[Any]] = {}
    for record in dead:
        poison_id = dict(record.headers)["x-poison-id"].decode()
        by_id.setdefault(poison_id, []).append(record)
    assert sorted(by_id) == sorted(sent), "a poison record missing from the dead-letter topic, or one not sent"
    assert all(len(copies) == 1 for copies in by_id.values()), {k: len(v) for k, v in by_id.items() if len(v) > 1}
    assert consumer.dead_lettered == len(sent) == len(POISON) * settings.topic_partitions
    for poison_id, (partition, kind, (key, value, headers)) in sent.items():
        record: Any = by_id[poison_id][0]
        got_headers = list(record.headers)
        ours = dict((n, r) for n, r in got_headers if n in DEAD_LETTER_HEADERS)
        assert record.key == key, kind
        assert record.value == value, f"{kind}: the dead letter does not carry the original value"
        assert [(n, r) for n, r in got_headers if n not in DEAD_LETTER_HEADERS] == headers, kind
        assert POISON[kind][1] in ours["dlq_error"].decode(), (kind, ours["dlq_error"])
        assert ours["dlq_original_partition"] == str(partition).encode(), kind
        assert ours["dlq_service"] == name.encode() and ours["dlq_attempts"] == b"0", kind


async def _handled(engine: AsyncEngine, schema: str, cases: set[UUID]) -> bool:
    return {case_id for _, case_id in await effects(engine, schema, cases)} == cases
