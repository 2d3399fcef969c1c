"""Staff alerts against real PostgreSQL and an in-memory telephony double: an urgent pothole texts (or calls)
every on-call contact of its department once, even on redelivery and across the crash between the provider
taking a text and our commit; an ACK records AlertAcknowledged once and a second says who took it; an ACK
from a number no one has on call is a resident's text like any other; the metrics count it all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.city import CityProfile, OnCallContact, ServiceSpec
from civicflow.events import (
    AlertAcknowledged,
    CaseEvent,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    NotificationSent,
    RecordedEvent,
    ResidentReplied,
    StaffAlerted,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import UnitOfWork, in_order, together
from services.notifier.alerts import Acknowledgements, StaffAlerts
from services.notifier.domain import MessageTemplates
from services.notifier.inbound_texts import InboundTexts, StatusReports
from services.notifier.main import NotificationHandler
from services.notifier.telephony import ProviderCall
from services.notifier.texting import number_digest
from tests.telephony_double import CrashedAfterTaking, InMemoryTelephony

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
ZONE = ZoneInfo("America/Chicago")
# fictional numbers in the 555-01xx range
DUTY_OFFICER = OnCallContact(name="Streets duty officer", phone="+13125550130")
NIGHT_SUPERVISOR = OnCallContact(name="Streets night supervisor", phone="+13125550131", by="voice")
WATER_LEAD = OnCallContact(name="Water emergency crew lead", phone="+13125550132")
RESIDENT = "+13125550133"
CITY = CityProfile(
    "Sample City",
    None,
    {"POTHOLE": ServiceSpec(name="Pothole", group="streets")},
    on_call={"streets": (DUTY_OFFICER, NIGHT_SUPERVISOR), "water": (WATER_LEAD,)},
)


@dataclass
class CallingTelephony(InMemoryTelephony):
    """The double, placing calls as well: each call's number and TwiML."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    async def place_call(self, to: str, twiml: str, status_callback: str | None = None) -> ProviderCall:
        self.calls.append((to, twiml))
        return ProviderCall(sid=f"CA{uuid4().hex}", to=to, status="queued")


@pytest.fixture
def key() -> bytes:
    """A digest key of the test's own, so one test's on-call numbers are not another's."""
    return uuid4().bytes


@pytest.fixture
def vault(tmp_path: Path) -> ContactVault:
    return ContactVault(load_master_key("", tmp_path))


class MailServerDown:
    async def send(self, message: object) -> None:
        raise ConnectionRefusedError("the mail server is down")


def alerting(
    engine: AsyncEngine, vault: ContactVault, telephony: InMemoryTelephony, key: bytes, mail: object = None
) -> Callable[[RecordedEvent], Awaitable[int]]:
    """The notifier's policies for a routing decision as its consumer runs them (services/notifier/main.py):
    the alert, then the resident's notice; each event in a unit of work of its own."""
    notice = NotificationHandler(engine, vault, mail, MessageTemplates(ZONE), "311 <a@b>")  # type: ignore[arg-type]
    policy = together(StaffAlerts(engine, telephony, CITY, key), notice)
    unit = UnitOfWork(engine, "notifier", STORE)
    return lambda event: unit.run([event], in_order({event.type: policy}))


async def submitted(
    engine: AsyncEngine, vault: ContactVault, flags: list[str] | None = None, email: str | None = None
) -> RecordedEvent:
    """A pothole from a resident who gave a phone number and asked to hear nothing back (or, given an email
    address, to be emailed)."""
    case_id = uuid7()
    async with engine.begin() as tx:
        sealed = await vault.seal(tx, case_id, ResidentContact(phone=RESIDENT, email=email))
        event = CaseSubmitted(
            tracking_number="T" + case_id.hex[-6:],
            service_code="POTHOLE",
            description="a deep hole, a car lost a wheel",
            location=Location(lat=41.88, long=-87.63, address="1234 W Madison St"),
            submitted_at=datetime.now(UTC),
            sealed_contact=sealed,
            preferred_channel="email" if email else "none",
            has_email=email is not None,
            flags=flags or [],
        )
        [recorded] = await STORE.append(tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="test"))
    return recorded


async def routed(engine: AsyncEngine, case: RecordedEvent, priority: str, department: str = "streets") -> RecordedEvent:
    decision = CaseRouted(
        department_id=department,
        department_name="Public Works - Streets",
        priority=priority,
        due_at=datetime.now(UTC) + timedelta(hours=4),
        rule_id="potholes",
        rule_set_version="test",
    )
    async with engine.begin() as tx:
        [recorded] = await STORE.append(
            tx, case.case_id, None, [decision], EventMetadata(correlation_id=uuid7(), actor="test")
        )
    return recorded


async def history(engine: AsyncEngine, case: RecordedEvent) -> list[CaseEvent]:
    async with engine.connect() as conn:
        return [e.data for e in await STORE.read_stream(conn, case.case_id)]


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_an_urgent_pothole_alerts_every_on_call_contact_once_even_on_redelivery(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = CallingTelephony()
    sent_before = counted("civicflow_staff_alerts_total", channel="sms", outcome="sent")
    calls_before = counted("civicflow_telephony_provider_seconds_count", call="place_call")
    case = await submitted(engine, vault)
    decision = await routed(engine, case, "urgent")
    alert = alerting(engine, vault, telephony, key)
    await alert(decision)
    await alert(decision)  # a redelivery: the inbox drops it
    await alerting(engine, vault, telephony, key)(decision)  # and through a new consumer after a restart
    async with engine.begin() as tx:  # a replay: the inbox forgot it, the alert's rows did not
        await tx.execute(text("DELETE FROM notifier.inbox WHERE event_id = :e"), {"e": decision.event_id})
    await alert(decision)

    [(texted, words)] = [(m.to, m.body) for m in telephony.taken]
    assert texted == DUTY_OFFICER.phone
    tracking_number = case.data.tracking_number  # type: ignore[attr-defined]
    assert words.startswith(f"URGENT 311 {tracking_number}: Pothole at 1200 block of W Madison St - reply ACK ")
    [(called, twiml)] = telephony.calls
    assert called == NIGHT_SUPERVISOR.phone and words.replace("&", "&amp;") in twiml
    assert WATER_LEAD.phone not in {texted, called}
    recorded = [e for e in await history(engine, case) if isinstance(e, StaffAlerted)]
    assert recorded == [StaffAlerted(department_id="streets", contacts=2, reason="urgent")]
    events = "".join(e.model_dump_json() for e in await history(engine, case))
    assert "5550130" not in events and "5550131" not in events
    async with engine.connect() as conn:
        kept = " ".join(str(tuple(row)) for row in await conn.execute(text("SELECT * FROM notifier.staff_alert_sends")))
    assert "5550130" not in kept and "5550131" not in kept  # staff numbers only by their digest
    assert counted("civicflow_staff_alerts_total", channel="sms", outcome="sent") == sent_before + 1
    assert counted("civicflow_telephony_provider_seconds_count", call="place_call") == calls_before + 1


async def test_a_hazard_alerts_and_a_plain_decision_does_not(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = CallingTelephony()
    alert = alerting(engine, vault, telephony, key)
    plain = await submitted(engine, vault)
    await alert(await routed(engine, plain, "high"))
    assert telephony.taken == [] and telephony.calls == []
    assert not any(isinstance(e, StaffAlerted) for e in await history(engine, plain))

    hazard = await submitted(engine, vault, flags=["hazard"])
    await alert(await routed(engine, hazard, "normal", department="water"))
    assert [m.to for m in telephony.taken] == [WATER_LEAD.phone]
    assert "(hazard reported)" in telephony.taken[0].body
    assert StaffAlerted(department_id="water", contacts=1, reason="hazard") in await history(engine, hazard)


async def test_the_crash_after_the_provider_took_an_alert_is_closed_by_asking_the_provider(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = CallingTelephony(crash_after_taking=True)
    case = await submitted(engine, vault, flags=["hazard"])
    decision = await routed(engine, case, "normal", department="water")
    with pytest.raises(CrashedAfterTaking):
        await alerting(engine, vault, telephony, key)(decision)
    assert not any(isinstance(e, StaffAlerted) for e in await history(engine, case))

    telephony.crash_after_taking = False
    await alerting(engine, vault, telephony, key)(decision)  # the redelivery after the restart
    assert len(telephony.bodies_to(WATER_LEAD.phone)) == 1, "alerted twice"
    assert telephony.lookups == 1
    assert StaffAlerted(department_id="water", contacts=1, reason="hazard") in await history(engine, case)


async def test_a_retry_for_the_residents_email_alerts_no_one_again(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = CallingTelephony()
    case = await submitted(engine, vault, email="resident@example.org")
    decision = await routed(engine, case, "urgent")
    for _ in range(3):  # the consumer's retries while the mail server is down
        with pytest.raises(ConnectionRefusedError):
            await alerting(engine, vault, telephony, key, MailServerDown())(decision)
    assert len(telephony.taken) == 1 and len(telephony.calls) == 1, "alerted once, before the email"
    assert telephony.lookups == 0

    class MailServerUp:
        async def send(self, message: object) -> None:
            pass

    await alerting(engine, vault, telephony, key, MailServerUp())(decision)
    assert len(telephony.taken) == 1 and len(telephony.calls) == 1
    recorded = await history(engine, case)
    assert StaffAlerted(department_id="streets", contacts=2, reason="urgent") in recorded
    assert [e.channel for e in recorded if isinstance(e, NotificationSent)] == ["email"]


async def test_a_refused_alert_is_counted_and_recorded_as_no_one_reached(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = CallingTelephony(refuse_with=21211)
    case = await submitted(engine, vault)
    await alerting(engine, vault, telephony, key)(await routed(engine, case, "urgent", department="water"))
    assert StaffAlerted(department_id="water", contacts=0, reason="urgent") in await history(engine, case)


async def test_ack_takes_the_alert_once_and_a_second_ack_says_who_took_it(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = CallingTelephony()
    alert = alerting(engine, vault, telephony, key)
    first = await submitted(engine, vault)
    await alert(await routed(engine, first, "urgent"))
    second = await submitted(engine, vault)
    await alert(await routed(engine, second, "urgent"))
    code_of_first = telephony.taken[0].body.split("ACK ")[1].split()[0]
    inbound = InboundTexts(engine, STORE, key, ZONE, Acknowledgements(STORE, CITY, key))
    taken_before = counted("civicflow_staff_alert_acks_total", outcome="taken")

    first_number = first.data.tracking_number  # type: ignore[attr-defined]
    second_number = second.data.tracking_number  # type: ignore[attr-defined]
    answer = await inbound(DUTY_OFFICER.phone, f"ack {code_of_first}")
    assert answer == f"Thanks, Streets duty officer: {first_number} is yours."
    assert await inbound(NIGHT_SUPERVISOR.phone, f"ACK {code_of_first}") == (
        f"311 {first_number} was already taken by Streets duty officer."
    )
    # without a code: the newest alert to that number
    taken = await inbound(NIGHT_SUPERVISOR.phone, "ACK")
    assert taken == f"Thanks, Streets night supervisor: {second_number} is yours."
    assert "no alert 99999999" in await inbound(DUTY_OFFICER.phone, "ACK 99999999")

    assert [e for e in await history(engine, first) if isinstance(e, AlertAcknowledged)] == [
        AlertAcknowledged(by="Streets duty officer", department_id="streets")
    ]
    assert [e for e in await history(engine, second) if isinstance(e, AlertAcknowledged)] == [
        AlertAcknowledged(by="Streets night supervisor", department_id="streets")
    ]
    assert counted("civicflow_staff_alert_acks_total", outcome="taken") == taken_before + 2


async def test_an_ack_from_a_number_no_one_has_on_call_is_a_residents_text(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = CallingTelephony()
    case = await submitted(engine, vault)
    await alerting(engine, vault, telephony, key)(await routed(engine, case, "urgent"))
    code = telephony.taken[0].body.split("ACK ")[1].split()[0]
    inbound = InboundTexts(engine, STORE, key, ZONE, Acknowledgements(STORE, CITY, key))

    assert "we have no request for this phone number" in await inbound("+13125550134", f"ACK {code}")
    async with engine.begin() as tx:  # a resident the city texted about a case of theirs
        await tx.execute(
            text("INSERT INTO notifier.case_numbers (number_digest, case_id, tracking_number) VALUES (:d, :c, :t)"),
            {"d": number_digest("+13125550135", key), "c": case.case_id, "t": "T1"},
        )
    assert "we passed your message" in await inbound("+13125550135", f"ACK {code}")
    recorded = await history(engine, case)
    assert ResidentReplied(text=f"ACK {code}") in recorded
    assert not any(isinstance(e, AlertAcknowledged) for e in recorded)


async def test_the_providers_report_on_an_alert_lands_on_its_row_and_is_counted(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = CallingTelephony()
    case = await submitted(engine, vault)
    await alerting(engine, vault, telephony, key)(await routed(engine, case, "urgent", department="water"))
    [message] = telephony.taken
    delivered_before = counted("civicflow_staff_alerts_total", channel="sms", outcome="delivered")

    assert await StatusReports(engine, STORE, vault)(message.sid, "delivered", None)
    assert not await StatusReports(engine, STORE, vault)("SM" + "0" * 32, "delivered", None)  # no text of ours

    async with engine.connect() as conn:
        status = await conn.scalar(
            text("SELECT provider_status FROM notifier.staff_alert_sends WHERE provider_sid = :s"), {"s": message.sid}
        )
    assert status == "delivered"
    assert counted("civicflow_staff_alerts_total", channel="sms", outcome="delivered") == delivered_before + 1
