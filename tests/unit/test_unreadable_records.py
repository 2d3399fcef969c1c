"""Whatever bytes a record holds, a consumer either acts on the relay's signed event or dead-letters the
record alone, byte for byte; FastStream's own parsing never sees (and so never fails on) its contents."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    RequestTimedOutError,
)
from faststream.kafka.message import KafkaAckableMessage
from faststream.kafka.parser import AioKafkaBatchParser
from hypothesis import given, settings
from hypothesis import strategies as st

from civicflow.consumer import (
    DEAD_LETTER_HEADERS,
    CaseEventConsumer,
    dead_letter_headers,
    parse_batch_undecoded,
    records_undecoded,
)
from civicflow.events import CATALOGUE, RecordedEvent, WorkOrderStatusChanged
from civicflow.ids import uuid7
from civicflow.relay import cannot_be_published
from civicflow.secrets import event_signing_key
from civicflow.settings import KernelSettings
from civicflow.wire import SIGNED_HEADERS, UnreadableRecord, read_event, to_message
from tests.factories import recorded

SETTINGS = KernelSettings(event_signing_key="a key for the unit tests only", handler_attempts=1)
KEY = event_signing_key(SETTINGS)
EVENT = recorded(
    WorkOrderStatusChanged(external_id="WO-7", status="open"), case_id=uuid7(), version=1, at=datetime.now(UTC)
)

header_names = st.sampled_from([*SIGNED_HEADERS, "ce_signature", "x-other", "dlq_error"]) | st.text(max_size=12)
header_values = st.none() | st.binary(max_size=40)
raw_headers = st.lists(st.tuples(header_names, header_values), max_size=8)


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = []

    async def send(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]) -> None:
        self.sent.append((key, value, headers))

    async def close(self) -> None:
        pass


def a_consumer() -> tuple[CaseEventConsumer, RecordingDeadLetters, list[RecordedEvent]]:
    """A consumer that handles every event type (so nothing is skipped as someone else's business)."""
    handled: list[RecordedEvent] = []

    async def handler(event: RecordedEvent) -> None:
        handled.append(event)

    dead_letters = RecordingDeadLetters()
    consumer = CaseEventConsumer("unit-poison", SETTINGS, dict.fromkeys(CATALOGUE, handler), dead_letters)
    return consumer, dead_letters, handled


def record(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]) -> Any:
    return SimpleNamespace(key=key, value=value, headers=headers, topic="case-events", partition=2, offset=11)


def without_ours(headers: list[tuple[str, bytes | None]]) -> list[tuple[str, bytes | None]]:
    return [(name, raw) for name, raw in headers if name not in DEAD_LETTER_HEADERS]


@settings(max_examples=300, deadline=None)
@given(key=st.none() | st.binary(max_size=40), value=st.none() | st.binary(max_size=200), headers=raw_headers)
def test_any_bytes_are_dead_lettered_alone_and_unchanged(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    consumer, dead_letters, handled = a_consumer()
    asyncio.run(consumer._on_record(record(key, value, headers)))
    # nothing random carries the relay's signature, so nothing is acted on
    assert handled == [] and len(dead_letters.sent) == 1
    sent_key, sent_value, sent_headers = dead_letters.sent[0]
    assert (sent_key, sent_value) == (key, value)
    assert without_ours(sent_headers) == without_ours(headers)
    dlq = dict(sent_headers)
    assert dlq["dlq_attempts"] == b"0" and dlq["dlq_original_offset"] == b"11" and dlq["dlq_error"]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_signed_record_changed_anywhere_is_refused(data: st.DataObject) -> None:
    key, value, headers = to_message(EVENT, KEY)
    assert read_event(KEY, key, value, headers) == EVENT
    part = data.draw(st.sampled_from(["key", "value", *SIGNED_HEADERS]))
    replacement = data.draw(st.none() | st.binary(max_size=60))
    changed_headers: list[tuple[str, bytes | None]] = list(headers)
    if part == "key":
        key_changed, value_changed = replacement, value
    elif part == "value":
        key_changed, value_changed = key, replacement
    else:
        key_changed, value_changed = key, value
        changed_headers = [(n, replacement if n == part else raw) for n, raw in headers]
    original = dict(headers).get(part) if part in SIGNED_HEADERS else (key if part == "key" else value)
    if replacement == original:
        return
    try:
        read_event(KEY, key_changed, value_changed, changed_headers)
    except UnreadableRecord as exc:
        assert str(exc) == "not published by the relay: signature invalid"
    else:
        raise AssertionError(f"a record with {part} changed was read as the relay's")


def test_a_record_signed_with_another_key_or_not_at_all_is_not_the_relays() -> None:
    key, value, headers = to_message(EVENT, b"someone else's key")
    unsigned = [(n, raw) for n, raw in headers if n != "ce_signature"]
    for forged, reason in ((headers, "signature invalid"), (unsigned, "signature missing")):
        try:
            read_event(KEY, key, value, forged)
        except UnreadableRecord as exc:
            assert str(exc) == f"not published by the relay: {reason}"
        else:
            raise AssertionError("a forged event was read")


async def test_a_signed_event_is_handled_and_its_dead_letter_would_still_verify() -> None:
    consumer, dead_letters, handled = a_consumer()
    key, value, headers = to_message(EVENT, KEY)
    await consumer._on_record(record(key, value, list(headers)))
    assert handled == [EVENT] and dead_letters.sent == []
    # a dead-lettered copy (our headers added) replayed later still reads as the relay's
    replayed = dead_letter_headers(record(key, value, list(headers)), "router", "RuntimeError: a bug", 5)
    assert read_event(KEY, key, value, replayed) == EVENT


def consumer_record(
    value: bytes | None, headers: list[tuple[str, bytes | None]], offset: int
) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic="case-events",
        partition=offset % 2,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value or b""),
        headers=headers,
    )


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(st.tuples(st.none() | st.binary(max_size=80), raw_headers), min_size=1, max_size=5))
def test_faststream_builds_the_batch_message_without_reading_any_record(
    batch: list[tuple[bytes | None, list[tuple[str, bytes | None]]]],
) -> None:
    records = tuple(consumer_record(value, headers, offset) for offset, (value, headers) in enumerate(batch))
    parser = AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None)

    async def parse() -> Any:
        message = await parse_batch_undecoded(records, parser.parse_batch)
        return message, await records_undecoded(message)

    message, decoded = asyncio.run(parse())
    assert message.raw_message is records and decoded is records, "the handler gets the records as they came"


def test_a_record_refused_for_what_it_is_is_parked_a_broker_down_is_waited_for() -> None:
    assert cannot_be_published(MessageSizeTooLargeError()) and cannot_be_published(RecordTooLargeError())
    for outage in (KafkaConnectionError(), KafkaTimeoutError(), NotLeaderForPartitionError(), RequestTimedOutError()):
        assert not cannot_be_published(outage), type(outage).__name__


async def test_what_faststream_would_have_failed_on_passes_through_untouched() -> None:
    """The two ways one record used to fail (or drop) a whole batch, FastStream's default parsing and
    decoding, kept here as facts: should FastStream stop doing them, this test says the parser can go."""
    not_text = consumer_record(b"{}", [("ce_actor", b"\xff\xfe")], 0)
    not_json = consumer_record(b"{not json", [("content-type", b"application/json")], 1)
    parser = AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None)
    try:
        await parser.parse_batch((not_text,))
    except UnicodeDecodeError:
        pass
    else:
        raise AssertionError("FastStream now parses headers that are not UTF-8")
    try:
        await parser.decode_batch(await parser.parse_batch((not_json,)))
    except ValueError:
        pass
    else:
        raise AssertionError("FastStream now leaves a JSON body that is not JSON alone")

    message = await parse_batch_undecoded((not_text, not_json), parser.parse_batch)
    assert await records_undecoded(message) == (not_text, not_json)
