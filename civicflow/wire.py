"""Events on Kafka: the payload as JSON, the envelope as CloudEvents binary-mode headers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from civicflow.events import EventMetadata, RecordedEvent, decode_payload

Headers = list[tuple[str, bytes]]
SPEC_VERSION = "1.0"

# Every header to_message writes, with what it means to a reader of the topic (the AsyncAPI document
# is built from this, and a test holds the two together).
HEADERS: dict[str, str] = {
    "ce_specversion": "CloudEvents spec version, always 1.0.",
    "ce_id": "The event id (UUIDv7); unique, so a consumer can drop a redelivered event.",
    "ce_type": "The event type, one of the messages of this channel (e.g. CaseRouted).",
    "ce_source": "urn:civicflow:<actor>, the service or person that recorded the event.",
    "ce_subject": "The case id (UUID); also the record key, so a case's events stay in order on one partition.",
    "ce_time": "When it happened (ISO 8601 with offset).",
    "content-type": "Always application/json.",
    "ce_caseversion": "The event's number within its case, from 1, without gaps.",
    "ce_position": "The event's position in the whole event store; increases in commit order.",
    "ce_schemaversion": "The payload's schema version (older stored shapes are upcast before publishing).",
    "ce_recordedtime": "When the event store recorded it (ISO 8601 with offset).",
    "ce_correlationid": "The id shared by every event that follows from one request.",
    "ce_causationid": "The id of the event this one reacts to; empty for a request from outside.",
    "ce_actor": "The service or person that recorded the event.",
    "ce_channel": "How the request reached the city (phone, web, app, open311, …); may be empty.",
}


def to_message(event: RecordedEvent) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) for one stored event; key = case id so a case stays on one partition."""
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
    return str(event.case_id).encode(), value, headers


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
