"""A call-taker's recategorisation against real PostgreSQL: refused while the case stands resolved, accepted
again once the resident disputed the resolution (the case is reopened, its service can still be wrong)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.events import CaseEvent, CaseRecategorised, CaseResolved, EventMetadata, ResolutionDisputed
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, load_master_key
from services.intake.domain import ReportedLocation, ServiceRequest
from services.intake.handlers import Intake, NothingToChange, recategorise

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
RESOLVED_AT = datetime(2026, 11, 24, 9, tzinfo=UTC)


async def append(engine: AsyncEngine, case_id: UUID, event: CaseEvent) -> None:
    async with engine.begin() as tx:
        await STORE.append(tx, case_id, None, [event], EventMetadata(correlation_id=uuid7(), actor="test"))


async def test_a_reopened_case_can_be_recategorised_but_a_resolved_one_cannot(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    vault = ContactVault(load_master_key("", tmp_path))
    request = ServiceRequest(
        service_code="POTHOLE", description="a deep one", location=ReportedLocation(lat=41.88, long=-87.63)
    )
    accepted = await Intake(engine, STORE, vault, issue_number=tracking.issue).submit(request, None)
    await append(engine, accepted.case_id, CaseResolved(resolution="Filled", resolved_at=RESOLVED_AT))

    with pytest.raises(NothingToChange, match="already resolved"):
        await recategorise(engine, STORE, accepted.tracking_number, "STREETLIGHT", "it was the light")

    await append(engine, accepted.case_id, ResolutionDisputed(channel="voice", call_sid="CA" + "2" * 32))
    previous = await recategorise(engine, STORE, accepted.tracking_number, "STREETLIGHT", "it was the light")

    assert previous == "POTHOLE"
    async with engine.connect() as conn:
        last = (await STORE.read_stream(conn, accepted.case_id))[-1].data
    assert last == CaseRecategorised(
        service_code="STREETLIGHT", previous_service_code="POTHOLE", reason="it was the light"
    )
