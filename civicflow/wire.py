"""Events on Kafka: the payload as JSON, the envelope as CloudEvents binary-mode headers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from civicflow.events import EventMetadata, RecordedEvent, decode_payload

Headers = list[tuple[str, bytes]]
SPEC_VERSION = "1.0"


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
