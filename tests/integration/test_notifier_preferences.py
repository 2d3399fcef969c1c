"""Preferences changed after submission, against PostgreSQL: recorded on the case, refused when the channel
needs contact details the resident did not give, and followed by the next stage's message."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.events import CaseResolved, CaseSubmitted, EventMetadata, Location, PreferencesChanged, RecordedEvent
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import UnitOfWork, in_order
from services.notifier.domain import MessageTemplates
from services.notifier.main import NotificationHandler
from services.notifier.preferences import CannotReach, CaseNotFound, Preferences, set_preferences
from services.notifier.sms import TextTemplates
from services.notifier.texting import TextDelivery
from tests.telephony_double import InMemoryTelephony

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
ZONE = ZoneInfo("America/Chicago")
PHONE = "+13125550155"  # in the 555-01xx range kept for fiction


@pytest.fixture
def vault(tmp_path: Path) -> ContactVault:
    return ContactVault(load_master_key("", tmp_path))


async def submitted(engine: AsyncEngine, vault: ContactVault, contact: ResidentContact) -> RecordedEvent:
    case_id = uuid7()
    async with engine.begin() as tx:
        sealed = await vault.seal(tx, case_id, contact)
        event = CaseSubmitted(
            tracking_number=tracking.issue(),
            service_code="POTHOLE",
            description="a hole",
            location=Location(lat=41.88, long=-87.63),
            submitted_at=datetime.now(UTC),
            sealed_contact=sealed,
            preferred_channel="email" if contact.email else None,
        )
        [recorded] = await STORE.append(tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="test"))
    return recorded


async def test_a_resident_who_switches_to_texts_in_spanish_gets_the_next_stage_so(
    engine: AsyncEngine, vault: ContactVault
) -> None:
    case = await submitted(engine, vault, ResidentContact(email="resident@example.org", phone=PHONE))
    number = case.data.tracking_number  # type: ignore[attr-defined]
    now = await set_preferences(
        engine, STORE, vault, number, PreferencesChanged(preferred_channel="sms", language="es")
    )
    assert now == Preferences("sms", "es", "all")

    async with engine.begin() as tx:
        [resolved] = await STORE.append(
            tx,
            case.case_id,
            None,
            [CaseResolved(resolution="Bache rellenado.", resolved_at=datetime.now(UTC))],
            EventMetadata(correlation_id=uuid7(), actor="test"),
        )
    telephony = InMemoryTelephony()
    texts = TextDelivery(engine, telephony, TextTemplates(ZONE), uuid4().bytes)
    policy = NotificationHandler(engine, vault, object(), MessageTemplates(ZONE), "311 <a@b>", texts)  # type: ignore[arg-type]
    await UnitOfWork(engine, "notifier", STORE).run([resolved], in_order({resolved.type: policy}))
    assert telephony.bodies_to(PHONE) == [f"311 {number}: su solicitud está resuelta. Bache rellenado."]


async def test_a_channel_without_its_contact_detail_or_an_unknown_case_is_refused(
    engine: AsyncEngine, vault: ContactVault
) -> None:
    case = await submitted(engine, vault, ResidentContact(email="resident@example.org"))
    number = case.data.tracking_number  # type: ignore[attr-defined]
    with pytest.raises(CannotReach, match="gave no phone number"):
        await set_preferences(engine, STORE, vault, number, PreferencesChanged(preferred_channel="sms"))
    with pytest.raises(CaseNotFound):
        await set_preferences(engine, STORE, vault, tracking.issue(), PreferencesChanged(language="es"))
    async with engine.connect() as conn:
        assert [e.type for e in await STORE.read_stream(conn, case.case_id)] == ["CaseSubmitted"]
