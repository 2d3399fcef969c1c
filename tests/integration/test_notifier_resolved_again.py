"""A case the resident disputed and the department resolved again is texted again, also when that second
resolution waited out quiet hours: the first resolution's row and NotificationSent are not taken for it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import (
    CaseEvent,
    CaseResolved,
    CaseSubmitted,
    EventMetadata,
    Location,
    NotificationSent,
    RecordedEvent,
    ResolutionDisputed,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import UnitOfWork, in_order
from services.notifier.deferred_texts import DeferredTexts
from services.notifier.domain import MessageTemplates
from services.notifier.main import NotificationHandler
from services.notifier.quiet_hours import QuietHours
from services.notifier.sms import TextTemplates
from services.notifier.texting import TextDelivery
from tests.telephony_double import InMemoryTelephony

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
CHICAGO = ZoneInfo("America/Chicago")
PHONE = "+13125550172"  # in the 555-01xx range kept for fiction
# far in the future and not the deferred-texts tests' night, so no other test's deferred row is due then
DAY = datetime(2033, 3, 9, 11, 0, tzinfo=CHICAGO)
NIGHT = datetime(2033, 3, 9, 23, 0, tzinfo=CHICAGO)
MORNING = datetime(2033, 3, 10, 8, 0, tzinfo=CHICAGO)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def appended(engine: AsyncEngine, case_id: UUID, event: CaseEvent) -> RecordedEvent:
    async with engine.begin() as tx:
        [recorded] = await STORE.append(tx, case_id, None, [event], EventMetadata(correlation_id=uuid7(), actor="test"))
    return recorded


async def test_a_resolution_after_a_dispute_that_waits_out_the_night_is_texted_in_the_morning(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    vault = ContactVault(load_master_key("", tmp_path))
    clock = Clock(DAY)
    telephony = InMemoryTelephony(clock=clock)
    texts = TextDelivery(
        engine, telephony, TextTemplates(CHICAGO), uuid4().bytes, quiet=QuietHours(CHICAGO), clock=clock
    )
    policy = NotificationHandler(engine, vault, object(), MessageTemplates(CHICAGO), "311 <a@b>", texts)  # type: ignore[arg-type]
    unit = UnitOfWork(engine, "notifier", STORE)
    deferred = DeferredTexts(engine, STORE, vault, texts, clock=clock)
    case_id = uuid7()
    async with engine.begin() as tx:
        sealed = await vault.seal(tx, case_id, ResidentContact(phone=PHONE))
    submitted = CaseSubmitted(
        tracking_number="T" + case_id.hex[-6:],
        service_code="POTHOLE",
        description="a fictional hole",
        location=Location(lat=41.88, long=-87.63),
        submitted_at=datetime.now(UTC),
        sealed_contact=sealed,
        preferred_channel="sms",
        updates="outcome",
    )
    async with engine.begin() as tx:
        await STORE.append(tx, case_id, 0, [submitted], EventMetadata(correlation_id=uuid7(), actor="test"))

    first = await appended(engine, case_id, CaseResolved(resolution="Filled.", resolved_at=DAY))
    await unit.run([first], in_order({first.type: policy}))
    await appended(engine, case_id, ResolutionDisputed(channel="voice", call_sid="CA-fictional"))
    clock.now = NIGHT
    second = await appended(engine, case_id, CaseResolved(resolution="Filled again.", resolved_at=NIGHT))
    await unit.run([second], in_order({second.type: policy}))
    assert len(telephony.bodies_to(PHONE)) == 1, "texted at night"

    clock.now = MORNING
    await deferred.send_due()
    await deferred.send_due()
    bodies = telephony.bodies_to(PHONE)
    assert len(bodies) == 2 and "Filled again." in bodies[1]
    async with engine.connect() as conn:
        history = await STORE.read_stream(conn, case_id)
    assert [e.data.stage for e in history if isinstance(e.data, NotificationSent)] == ["resolved", "resolved.2"]
