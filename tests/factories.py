"""Stored events for tests, built as the event store would return them."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from civicflow.events import CaseEvent, EventMetadata, RecordedEvent
from civicflow.ids import uuid7


def recorded(data: CaseEvent, *, case_id: UUID, version: int, at: datetime, actor: str = "test") -> RecordedEvent:
    """`data` as version `version` of a case, occurred and recorded `at`."""
    return RecordedEvent(
        position=version,
        event_id=uuid7(),
        case_id=case_id,
        version=version,
        type=data.event_type,
        schema_version=data.schema_version,
        occurred_at=at,
        recorded_at=at,
        metadata=EventMetadata(correlation_id=uuid7(), actor=actor),
        data=data,
    )
