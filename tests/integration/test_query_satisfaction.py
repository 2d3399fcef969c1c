"""The read model keeps the survey's score in PostgreSQL: projected live, and the same after a case is rebuilt
from the store (an event replayed late)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from civicflow import tracking
from civicflow.db import make_engine
from civicflow.events import CaseResolved, CaseSubmitted, EventMetadata, RecordedEvent, SurveyAnswered, SurveySent
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import UnitOfWork
from services.query.readmodel import Projector, find_by_tracking_number

pytestmark = pytest.mark.integration


async def test_the_score_lands_in_the_read_model_live_and_on_a_rebuild(settings: KernelSettings) -> None:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    case_id, now, number = uuid7(), datetime.now(UTC), tracking.issue()
    events = [
        CaseSubmitted(tracking_number=number, service_code="POTHOLE", description="deep", submitted_at=now),
        CaseResolved(resolution="Filled.", resolved_at=now),
        SurveySent(channel="email", message_id="<x.survey@civicflow.local>"),
        SurveyAnswered(score=2, channel="email"),
    ]
    async with engine.begin() as tx:
        recorded = await store.append(tx, case_id, 0, events, EventMetadata(correlation_id=uuid7(), actor="test"))
    unit = UnitOfWork(engine, "query", store)

    async def project(event: RecordedEvent) -> None:
        await unit.run([event], Projector())

    for event in recorded[:2]:
        await project(event)
    await project(recorded[3])  # SurveySent not yet seen: a gap, so the case is rebuilt from the store
    async with engine.connect() as conn:
        found = await find_by_tracking_number(conn, number)
    assert found is not None
    record, timeline = found
    assert record.satisfaction == 2
    assert [e.stage for e in timeline][-2:] == ["survey_sent", "survey_answered"]
    await engine.dispose()
