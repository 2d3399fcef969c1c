"""The live projection against real PostgreSQL: a gap or a late event rebuilds the case from the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from civicflow.consumer import Inbox
from civicflow.db import make_engine
from civicflow.events import (
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    WorkOrderOpened,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.settings import KernelSettings
from services.query.readmodel import Projector, find_by_tracking_number

pytestmark = pytest.mark.integration


async def test_a_dead_lettered_event_replayed_late_still_lands_in_the_case_view(settings: KernelSettings) -> None:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    case_id, now = uuid7(), datetime.now(UTC)
    number = f"T{case_id.hex[-7:]}"
    events = [
        CaseSubmitted(
            tracking_number=number,
            service_code="POTHOLE",
            description="deep",
            location=Location(address="1 Main St"),
            submitted_at=now,
        ),
        CaseRouted(
            department_id="streets",
            department_name="Streets",
            priority="normal",
            due_at=now + timedelta(days=5),
            rule_id="streets",
            rule_set_version="1",
        ),
        WorkOrderOpened(department_id="streets", system="rest", external_id="WO-9"),
    ]
    async with engine.begin() as tx:
        recorded = await store.append(tx, case_id, 0, events, EventMetadata(correlation_id=uuid7(), actor="test"))
    projector = Projector(Inbox(engine, "query"), store)

    await projector(recorded[0])
    await projector(recorded[2])  # version 2 was dead-lettered: a gap
    async with engine.connect() as conn:
        found = await find_by_tracking_number(conn, number)
    assert found is not None
    record, timeline = found
    assert (record.status, record.department_id, record.last_version) == ("work_order_open", "streets", 3)
    assert [e.stage for e in timeline] == ["submitted", "routed", "work_order_opened"]

    await projector(recorded[1])  # replayed from the dead-letter topic after the fix
    async with engine.connect() as conn:
        again = await find_by_tracking_number(conn, number)
    assert again == found
    await engine.dispose()
