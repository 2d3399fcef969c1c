"""A text's delivery report on the case, against real PostgreSQL and the in-memory telephony double: the first
final report of a resident's stage text is NotificationDelivered, once however often the provider posts it; an
undelivered text falls back to email when the resident gave one (sent by the calls' periodic task), else it is
NotificationFailed with the provider's code; hostile callbacks are refused naming the field and record nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode
from uuid import uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import (
    CaseEvent,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    NotificationDelivered,
    NotificationFailed,
    NotificationSent,
    RecordedEvent,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import UnitOfWork, in_order
from services.notifier.call_outcomes import CallOutcomes
from services.notifier.calls import CallDelivery, MailFallback
from services.notifier.domain import MessageTemplates
from services.notifier.inbound_texts import InboundTexts, StatusReports
from services.notifier.main import NotificationHandler
from services.notifier.quiet_hours import QuietHours
from services.notifier.sms import TextTemplates
from services.notifier.telephony_http import SIGNATURE_HEADER, STATUS_PATH, create_telephony_app
from services.notifier.texting import TextDelivery
from services.notifier.voice import CallScripts
from tests.telephony_double import InMemoryTelephony

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
ZONE = ZoneInfo("UTC")
PUBLIC_URL = "http://notifier.test"
PHONE = "+13125550144"  # in the 555-01xx range kept for fiction
EMAIL = "resident@example.org"
# Each test's clock stands in a moment of its own long ago, so the calls' task finds only that test's rows.
_ERA = datetime(2001, 1, 1, tzinfo=UTC)


class KeptMail:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        self.sent.append(message)


class Texts:
    """The notifier's texting policy, its status callback route (calls' outcomes first, as wired in main) and
    the calls' task that sends the emails texts fall back to, over one database and one double."""

    def __init__(
        self, engine: AsyncEngine, vault: ContactVault, client: httpx.AsyncClient, quiet: QuietHours | None = None
    ) -> None:
        self.engine = engine
        self.vault = vault
        self.client = client
        self.key = uuid4().bytes  # the test's own: its numbers are no other test's
        self.telephony = InMemoryTelephony()
        self.now = _ERA + timedelta(hours=uuid4().int % 100_000)
        self.mail = KeptMail()
        texts = TextDelivery(engine, self.telephony, TextTemplates(ZONE), self.key)
        self.calls = CallDelivery(
            engine,
            self.telephony,
            CallScripts(ZONE, PUBLIC_URL),
            self.key,
            quiet=quiet,
            clock=lambda: self.now,
            texts=texts,
            mail=MailFallback(self.mail, MessageTemplates(ZONE), "311 <no-reply@example.test>"),
        )
        self.reports = StatusReports(engine, STORE, vault, clock=lambda: self.now)
        self.outcomes = CallOutcomes(engine, STORE, vault, self.key, None, self.reports, clock=lambda: self.now)
        policy = NotificationHandler(engine, vault, object(), MessageTemplates(ZONE), "311 <a@b>", texts)
        unit = UnitOfWork(engine, "notifier", STORE)
        self.notify = lambda event: unit.run([event], in_order({event.type: policy}))

    async def texted(self, contact: ResidentContact) -> tuple[RecordedEvent, str]:
        """A case whose resident chose texts, routed and texted about it: the case and the text's sid."""
        case_id = uuid7()
        async with self.engine.begin() as tx:
            sealed = await self.vault.seal(tx, case_id, contact)
            event = CaseSubmitted(
                tracking_number="T" + case_id.hex[-6:],
                service_code="POTHOLE",
                description="a hole",
                location=Location(lat=41.88, long=-87.63),
                submitted_at=self.now,
                sealed_contact=sealed,
                preferred_channel="sms",
            )
            [case] = await STORE.append(tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="test"))
            routed = CaseRouted(
                department_id="streets",
                department_name="Public Works - Streets",
                priority="normal",
                due_at=self.now + timedelta(days=2),
                rule_id="potholes",
                rule_set_version="test",
            )
            [recorded] = await STORE.append(tx, case_id, 1, [routed], EventMetadata(correlation_id=uuid7(), actor="t"))
        await self.notify(recorded)
        [message] = self.telephony.taken
        return case, message.sid

    async def report(self, form: dict[str, str]) -> httpx.Response:
        """The provider's status callback, signed, as it posts it."""
        return await self.client.post(
            STATUS_PATH,
            content=urlencode(form),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                SIGNATURE_HEADER: self.telephony.sign(PUBLIC_URL + STATUS_PATH, form),
            },
        )

    async def history(self, case: RecordedEvent) -> list[CaseEvent]:
        async with self.engine.connect() as conn:
            events = await STORE.read_stream(conn, case.case_id)
        return [e.data for e in events if isinstance(e.data, NotificationDelivered | NotificationFailed)]

    async def sent(self, case: RecordedEvent) -> list[NotificationSent]:
        async with self.engine.connect() as conn:
            events = await STORE.read_stream(conn, case.case_id)
        return [e.data for e in events if isinstance(e.data, NotificationSent)]

    async def provider_status(self, sid: str) -> str | None:
        async with self.engine.connect() as conn:
            status: str | None = await conn.scalar(
                text("SELECT provider_status FROM notifier.deliveries WHERE provider_sid = :sid"), {"sid": sid}
            )
            return status


@pytest.fixture
async def texts(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Texts]:
    vault = ContactVault(load_master_key("", tmp_path))
    async with httpx.AsyncClient(base_url=PUBLIC_URL) as placeholder:
        made = Texts(engine, vault, placeholder)
    app = create_telephony_app(made.telephony, PUBLIC_URL, InboundTexts(engine, STORE, made.key, ZONE), made.outcomes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client:
        made.client = client
        yield made


async def test_a_delivered_text_is_recorded_once_however_often_the_provider_says_so(texts: Texts) -> None:
    case, sid = await texts.texted(ResidentContact(phone=PHONE, email=EMAIL))
    for status in ("queued", "sent"):  # on its way: kept on the row, nothing on the case
        assert (await texts.report({"MessageSid": sid, "MessageStatus": status})).status_code == 204
    assert await texts.history(case) == [] and await texts.provider_status(sid) == "sent"

    assert (await texts.report({"MessageSid": sid, "MessageStatus": "delivered"})).status_code == 204
    for late in ("delivered", "undelivered", "sent"):  # a repeated or late callback changes nothing
        assert (await texts.report({"MessageSid": sid, "MessageStatus": late, "ErrorCode": "30003"})).status_code == 204
    assert await texts.history(case) == [
        NotificationDelivered(stage="routed", channel="sms", outcome="delivered", attempt=1)
    ]
    assert await texts.provider_status(sid) == "delivered"
    assert await texts.calls.send_due(STORE, texts.vault) == 0 and texts.mail.sent == []


async def test_an_undelivered_text_falls_back_to_email_once(texts: Texts) -> None:
    case, sid = await texts.texted(ResidentContact(phone=PHONE, email=EMAIL))
    assert await texts.reports(sid, "undelivered", 30003)
    assert await texts.reports(sid, "failed", 30005)  # late: changes nothing
    assert await texts.history(case) == [
        NotificationDelivered(
            stage="routed", channel="sms", outcome="undelivered", attempt=1, fallback="email", error_code=30003
        )
    ]
    assert await texts.calls.send_due(STORE, texts.vault) == 1
    assert await texts.calls.send_due(STORE, texts.vault) == 0
    [mail] = texts.mail.sent
    assert mail["To"] == EMAIL
    assert [(e.stage, e.channel) for e in await texts.sent(case)] == [("routed", "sms"), ("routed", "email")]
    assert [e for e in await texts.history(case) if isinstance(e, NotificationFailed)] == []


async def test_an_undelivered_text_with_no_email_is_a_failure_with_the_providers_code(texts: Texts) -> None:
    case, sid = await texts.texted(ResidentContact(phone=PHONE))
    assert await texts.reports(sid, "failed", 30006)
    told, failed = await texts.history(case)
    assert told == NotificationDelivered(stage="routed", channel="sms", outcome="failed", attempt=1, error_code=30006)
    assert failed == NotificationFailed(
        stage="routed", channel="sms", reason="the text was not delivered (error 30006), and no email"
    )
    assert PHONE not in failed.reason and PHONE.lstrip("+") not in failed.reason
    assert await texts.calls.send_due(STORE, texts.vault) == 0 and texts.mail.sent == []


async def test_a_report_for_a_sid_that_is_no_text_of_ours_changes_nothing(texts: Texts) -> None:
    case, _ = await texts.texted(ResidentContact(phone=PHONE, email=EMAIL))
    assert not await texts.reports("SM" + "0" * 32, "undelivered", 30003)
    assert await texts.history(case) == []


@pytest.mark.parametrize(
    ("form", "names"),
    [
        ({"MessageSid": "", "MessageStatus": "delivered"}, "MessageSid"),
        ({"MessageSid": "SM\x00", "MessageStatus": "delivered"}, "MessageSid"),
        ({"MessageSid": "SM" + "a" * 20_000, "MessageStatus": "delivered"}, "MessageSid"),  # 32 KiB: 413 beyond
        ({"MessageSid": "SM1", "MessageStatus": ""}, "MessageStatus"),
        ({"MessageSid": "SM1", "MessageStatus": "deliv\x00ered"}, "MessageStatus"),
        ({"MessageSid": "SM1", "MessageStatus": "NaN!"}, "MessageStatus"),
        ({"MessageSid": "SM 1", "MessageStatus": "   "}, "MessageSid"),
        ({"MessageSid": "SM1\u0661", "MessageStatus": "delivered"}, "MessageSid"),  # an Arabic-Indic digit
        ({"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "\u00b2"}, "ErrorCode"),  # '²'
        ({"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "NaN"}, "ErrorCode"),
    ],
)
async def test_hostile_reports_are_refused_naming_the_field_and_record_nothing(
    texts: Texts, form: dict[str, str], names: str
) -> None:
    case, sid = await texts.texted(ResidentContact(phone=PHONE, email=EMAIL))
    hostile = {k: v.replace("SM1", sid) for k, v in form.items()}
    answered = await texts.report(hostile)
    assert answered.status_code in (400, 413) and names in answered.text
    assert await texts.history(case) == [] and await texts.provider_status(sid) is None


async def test_a_report_that_is_not_utf8_is_refused_and_records_nothing(texts: Texts) -> None:
    case, sid = await texts.texted(ResidentContact(phone=PHONE, email=EMAIL))
    body = f"MessageSid={sid}&MessageStatus=deliver".encode() + b"\xff\xfe"
    answered = await texts.client.post(
        STATUS_PATH,
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded", SIGNATURE_HEADER: "anything"},
    )
    assert answered.status_code == 400 and "UTF-8" in answered.text
    assert await texts.history(case) == [] and await texts.provider_status(sid) is None


async def test_the_email_an_undelivered_text_falls_back_to_goes_outside_calling_hours(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    vault = ContactVault(load_master_key("", tmp_path))
    async with httpx.AsyncClient(base_url=PUBLIC_URL) as unused:
        texts = Texts(engine, vault, unused, QuietHours(ZONE))
    texts.now = texts.now.replace(hour=12)
    case, sid = await texts.texted(ResidentContact(phone=PHONE, email=EMAIL))
    texts.now = texts.now.replace(hour=23)  # the report comes late in the evening, calling hours over
    assert await texts.reports(sid, "undelivered", 30003)
    assert await texts.calls.send_due(STORE, vault) == 1
    [mail] = texts.mail.sent
    assert mail["To"] == EMAIL
    assert [e.channel for e in await texts.sent(case)] == ["sms", "email"]
