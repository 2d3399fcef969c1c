"""Events on Kafka: the payload as JSON, the envelope as CloudEvents binary-mode headers, signed by the relay."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from civicflow.events import CATALOGUE, EventMetadata, RecordedEvent, decode_payload

Headers = list[tuple[str, bytes]]
# What a record read from the broker carries: a header's value may be any bytes, or none at all.
RawHeaders = Sequence[tuple[str, bytes | None]]
SPEC_VERSION = "1.0"
SIGNATURE_HEADER = "ce_signature"

# Every header to_message writes, with what it means to a reader of the topic (the AsyncAPI document
# is built from this, and a test holds the two together).
HEADERS: dict[str, str] = {
    "ce_specversion": "CloudEvents spec version, always 1.0.",
    "ce_id": "The event id (UUIDv7); unique, so a consumer can drop a redelivered event.",
    "ce_type": "The event type, one of the messages of this channel (e.g. CaseRouted).",
    "ce_source": "urn:civicflow:<actor>: who acted (see ce_actor).",
    "ce_subject": "The case id (UUID); also the record key, so a case's events stay in order on one partition.",
    "ce_time": "When it happened (ISO 8601 with offset).",
    "content-type": "Always application/json.",
    "ce_caseversion": "The event's number within its case, from 1, without gaps.",
    "ce_position": "The event's position in the whole event store; increases in commit order.",
    "ce_schemaversion": "The payload's schema version (older stored shapes are upcast before publishing).",
    "ce_recordedtime": "When the event store recorded it (ISO 8601 with offset).",
    "ce_correlationid": "The id shared by every event that follows from one request.",
    "ce_causationid": "The id of the event this one reacts to; empty for a request from outside.",
    "ce_actor": "Who acted: a civicflow service (intake, router, …), an API client (client:<name>) or a"
    " department's system reporting on its work order (department:<id>).",
    "ce_channel": "How the request reached the city (phone, web, app, open311, …); may be empty.",
    SIGNATURE_HEADER: "HMAC-SHA256 (hex) by the relay, with the event signing key, over the record key, the value"
    " and every other header above; a consumer acts only on a record whose signature checks out, so an event"
    " put on the topic by anyone but the relay is dead-lettered, never handled.",
}
# The headers the signature covers: the envelope, not what the dead-letter topic adds, so a dead-lettered
# record replayed later still verifies.
SIGNED_HEADERS = tuple(name for name in HEADERS if name != SIGNATURE_HEADER)


class UnreadableRecord(ValueError):
    """A record on the case-events topic that is not an event from the store; the message says what was
    wrong with it by header and kind, never by value (dead-letter headers and logs carry it)."""


def signature(signing_key: bytes, key: bytes | None, value: bytes | None, headers: RawHeaders) -> str:
    """The relay's signature of a record: HMAC-SHA256 over its key, its value and its signed headers.

    Every part is length-prefixed and an absent part is told apart from an empty one, so no two different
    records read the same to the MAC. A signed header that appears twice makes the record unreadable:
    which of the two a reader would believe is not something to leave to chance."""
    mac = hmac.new(signing_key, b"civicflow.case-event.v1", hashlib.sha256)
    found: dict[str, bytes | None] = {}
    for name, raw in headers:
        if name in SIGNED_HEADERS:
            if name in found:
                raise UnreadableRecord(f"header {name} appears more than once")
            found[name] = raw
    parts = [key, value, *(found.get(name) for name in SIGNED_HEADERS)]
    for part in parts:
        if part is None:
            mac.update(b"\x00")
        else:
            mac.update(b"\x01" + len(part).to_bytes(8, "big") + part)
    return mac.hexdigest()


def check_signature(signing_key: bytes, key: bytes | None, value: bytes | None, headers: RawHeaders) -> None:
    """Raise UnreadableRecord unless the relay signed this record with our key."""
    given = [raw for name, raw in headers if name == SIGNATURE_HEADER]
    if not any(given):
        raise UnreadableRecord("not published by the relay: signature missing")
    expected = signature(signing_key, key, value, headers).encode()
    # the relay signs once: a second signature is someone else's
    if len(given) > 1 or not hmac.compare_digest(given[0] or b"", expected):
        raise UnreadableRecord("not published by the relay: signature invalid")


def event_type_of(headers: RawHeaders) -> str:
    """The record's ce_type, the one header every service reads first (to skip what it does not handle)."""
    found = [raw for name, raw in headers if name == "ce_type"]
    if len(found) > 1:
        raise UnreadableRecord("header ce_type appears more than once")
    if not found or not found[0]:
        raise UnreadableRecord("header ce_type is missing")
    try:
        return found[0].decode()
    except UnicodeDecodeError:
        raise UnreadableRecord("header ce_type is not UTF-8 text") from None


def is_catalogued(event_type: str) -> bool:
    return event_type in CATALOGUE


def read_event(signing_key: bytes, key: bytes | None, value: bytes | None, headers: RawHeaders) -> RecordedEvent:
    """The stored event a record carries, once its signature checks out; UnreadableRecord (or the
    payload's ValidationError) when it cannot be read, whatever its bytes."""
    check_signature(signing_key, key, value, headers)
    text_headers: dict[str, str] = {}
    for name, raw in headers:
        if name not in SIGNED_HEADERS:
            continue  # the dead-letter topic's own headers, or anything else a reader does not need
        try:
            text_headers[name] = (raw or b"").decode()
        except UnicodeDecodeError:
            raise UnreadableRecord(f"header {name} is not UTF-8 text") from None
    if not value:
        raise UnreadableRecord("the record has no value (an event's payload is a JSON object)")
    try:
        return from_message(text_headers, value)
    except KeyError as missing:
        raise UnreadableRecord(f"header {missing.args[0]} is missing") from None
    except json.JSONDecodeError as exc:
        raise UnreadableRecord(f"the value is not JSON ({exc.msg} at byte {exc.pos})") from None
    except UnicodeDecodeError as exc:
        raise UnreadableRecord(f"the value is not UTF-8 text (at byte {exc.start})") from None


def to_message(event: RecordedEvent, signing_key: bytes) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) for one stored event, signed with the event signing key; key = case id so a
    case stays on one partition."""
    meta = event.metadata
    attributes = {
        "ce_specversion": SPEC_VERSION,
        "ce_id": str(event.event_id),
        "ce_type": event.type,
        "ce_source": f"urn:civicflow:{meta.actor}",
        "ce_subject": str(event.case_id),
        "ce_time": event.occurred_at.isoformat(),
        "content-type": "application/json",
        # CloudEvents extension attributes (lower-case alphanumeric names, as the spec asks)
        "ce_caseversion": str(event.version),
        "ce_position": str(event.position),
        # the payload below is the current shape (stored events are upcast when read), so say so
        "ce_schemaversion": str(type(event.data).schema_version),
        "ce_recordedtime": event.recorded_at.isoformat(),
        "ce_correlationid": str(meta.correlation_id),
        "ce_causationid": str(meta.causation_id or ""),
        "ce_actor": meta.actor,
        "ce_channel": meta.channel or "",
    }
    headers = [(name, value.encode()) for name, value in attributes.items()]
    value = event.data.model_dump_json().encode()
    key = str(event.case_id).encode()
    headers.append((SIGNATURE_HEADER, signature(signing_key, key, value, headers).encode()))
    return key, value, headers


def header_map(headers: Sequence[tuple[str, bytes]] | dict[str, str]) -> dict[str, str]:
    if isinstance(headers, dict):
        return dict(headers)
    return {name: raw.decode() for name, raw in headers}


def from_message(headers: dict[str, str], value: bytes) -> RecordedEvent:
    """Rebuild the stored event from a message; raises ValueError (or KeyError) on a malformed one."""
    return RecordedEvent(
        position=int(headers["ce_position"]),
        event_id=UUID(headers["ce_id"]),
        case_id=UUID(headers["ce_subject"]),
        version=int(headers["ce_caseversion"]),
        type=headers["ce_type"],
        schema_version=int(headers["ce_schemaversion"]),
        occurred_at=datetime.fromisoformat(headers["ce_time"]),
        recorded_at=datetime.fromisoformat(headers["ce_recordedtime"]),
        metadata=EventMetadata(
            correlation_id=UUID(headers["ce_correlationid"]),
            causation_id=UUID(headers["ce_causationid"]) if headers.get("ce_causationid") else None,
            actor=headers["ce_actor"],
            channel=headers.get("ce_channel") or None,
        ),
        data=decode_payload(headers["ce_type"], int(headers["ce_schemaversion"]), json.loads(value)),
    )
