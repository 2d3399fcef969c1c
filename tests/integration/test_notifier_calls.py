"""The notifier's calls against real PostgreSQL and the in-memory telephony double: a resident who chose voice is
called once per stage in their language (the resolution with its menu), a redelivery calls no one, pressing 2
records ResolutionDisputed once however often the provider posts it, a STOP'd number is not called, a service
the city calls back about is a call at resolution whatever the channel, calls wait out quiet hours, and a call
the provider placed before a crash kept us from recording it is found by asking the provider, not placed again."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode, urlsplit
from uuid import uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.events import (
    CaseEvent,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    NotificationDelivered,
    NotificationFailed,
    NotificationSent,
    RecordedEvent,
    ResolutionDisputed,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import Decision, Reads, UnitOfWork, in_order
from services.notifier.call_outcomes import CallOutcomes
from services.notifier.calls import CallDelivery, CallMenu, MailFallback
from services.notifier.claims import LEASE, ClaimHeld
from services.notifier.domain import MessageTemplates
from services.notifier.inbound_texts import InboundTexts, StatusReports
from services.notifier.main import NotificationHandler
from services.notifier.quiet_hours import QuietHours
from services.notifier.sms import TextTemplates
from services.notifier.telephony import Telephony, TelephonyUnavailable
from services.notifier.telephony_http import SIGNATURE_HEADER, STATUS_PATH, create_telephony_app
from services.notifier.texting import TextDelivery, number_digest
from services.notifier.voice import CallScripts
from tests.held_telephony import HeldTelephony
from tests.telephony_double import CrashedAfterTaking, InMemoryTelephony, PlacedCall

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
ZONE = ZoneInfo("America/Chicago")
PUBLIC_URL = "http://notifier.test"
PHONE = "+13125550143"  # in the 555-01xx range kept for fiction
NOON = datetime(2026, 11, 30, 18, tzinfo=UTC)  # 12:00 in Chicago
MIDNIGHT = datetime(2026, 12, 1, 6, tzinfo=UTC)  # 00:00 in Chicago


class KeptMail:
    """A mail server that keeps what it is handed, or is down."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.down = False

    async def send(self, message: EmailMessage) -> None:
        if self.down:
            raise ConnectionRefusedError("the test's mail server is down")
        self.sent.append(message)


class Calls:
    """The notifier's policy and its telephony endpoint over one database, one digest key and one double."""

    def __init__(self, engine: AsyncEngine, vault: ContactVault, client: httpx.AsyncClient, key: bytes) -> None:
        self.engine = engine
        self.vault = vault
        self.client = client
        self.key = key
        self.telephony = InMemoryTelephony()
        self.now = NOON
        scripts = CallScripts(ZONE, PUBLIC_URL)
        self.texts = TextDelivery(engine, self.telephony, TextTemplates(ZONE), key)
        self.mail = KeptMail()
        self.delivery = CallDelivery(
            engine,
            self.telephony,
            scripts,
            key,
            quiet=QuietHours(ZONE),
            call_back_services=frozenset({"CALL_BACK"}),
            clock=lambda: self.now,
            texts=self.texts,
            mail=MailFallback(self.mail, MessageTemplates(ZONE), "311 <no-reply@example.test>"),
        )
        self.scripts = scripts
        self.outcomes = CallOutcomes(
            engine, STORE, vault, key, QuietHours(ZONE), StatusReports(engine, STORE, vault), clock=lambda: self.now
        )
        policy = NotificationHandler(
            engine,
            vault,
            object(),
            MessageTemplates(ZONE),
            "311 <a@b>",
            None,
            self.delivery,  # type: ignore[arg-type]
        )
        unit = UnitOfWork(engine, "notifier", STORE)
        self.notify = lambda event: unit.run([event], in_order({event.type: policy}))
        self.menu = CallMenu(engine, STORE, vault, scripts)

    def replica(self, telephony: Telephony) -> CallDelivery:
        """The calls' task of another notifier process over the same database."""
        return CallDelivery(
            self.engine, telephony, self.scripts, self.key, quiet=QuietHours(ZONE), clock=lambda: self.now
        )

    async def case(self, contact: ResidentContact, service: str = "POTHOLE", **preferences: str) -> RecordedEvent:
        case_id = uuid7()
        async with self.engine.begin() as tx:
            sealed = await self.vault.seal(tx, case_id, contact)
            event = CaseSubmitted(
                tracking_number=tracking.issue(),
                service_code=service,
                description="a hole",
                location=Location(lat=41.88, long=-87.63),
                submitted_at=NOON,
                sealed_contact=sealed,
                **preferences,  # type: ignore[arg-type]
            )
            [recorded] = await STORE.append(
                tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="test")
            )
        return recorded

    async def append(self, case: RecordedEvent, event: CaseEvent) -> RecordedEvent:
        async with self.engine.begin() as tx:
            [recorded] = await STORE.append(
                tx, case.case_id, None, [event], EventMetadata(correlation_id=uuid7(), actor="test")
            )
        return recorded

    async def history(self, case: RecordedEvent) -> list[CaseEvent]:
        async with self.engine.connect() as conn:
            return [e.data for e in await STORE.read_stream(conn, case.case_id)]

    async def ended(self, call: PlacedCall, status: str, error_code: str = "") -> None:
        """The provider's status callback for the call, signed."""
        form = {"CallSid": call.sid, "CallStatus": status, "To": call.to}
        if error_code:
            form["ErrorCode"] = error_code
        answered = await self.client.post(
            STATUS_PATH,
            content=urlencode(form),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                SIGNATURE_HEADER: self.telephony.sign(PUBLIC_URL + STATUS_PATH, form),
            },
        )
        assert answered.status_code == 204, answered.text

    async def press(self, call: PlacedCall, digits: str) -> httpx.Response:
        """The provider posting the digits pressed at the call's menu, signed, to the Gather's action."""
        gather = ET.fromstring(call.twiml).find("Gather")
        assert gather is not None
        action = gather.get("action", "")
        form = {"CallSid": call.sid, "Digits": digits, "To": call.to}
        where = urlsplit(action)
        return await self.client.post(
            f"{where.path}?{where.query}",
            content=urlencode(form),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                SIGNATURE_HEADER: self.telephony.sign(action, form),
            },
        )


@pytest.fixture
async def calls(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Calls]:
    key = uuid4().bytes  # the test's own: its opt-outs and numbers are no other test's
    async with httpx.AsyncClient(base_url=PUBLIC_URL) as placeholder:
        made = Calls(engine, ContactVault(load_master_key("", tmp_path)), placeholder, key)
    app = create_telephony_app(
        made.telephony, PUBLIC_URL, InboundTexts(engine, STORE, key, ZONE), made.outcomes, menu=made.menu
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client:
        made.client = client
        yield made


def routed() -> CaseRouted:
    return CaseRouted(
        department_id="streets",
        department_name="Public Works - Streets",
        priority="normal",
        due_at=NOON + timedelta(days=2),
        rule_id="potholes",
        rule_set_version="test",
    )


def said(twiml: str) -> str:
    return " ".join(say.text or "" for say in ET.fromstring(twiml).iter("Say"))


async def test_a_voice_resident_is_called_once_per_stage_in_spanish_and_pressing_2_disputes_once(
    calls: Calls,
) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice", language="es")
    stages = [case, await calls.append(case, routed())]
    stages.append(await calls.append(case, CaseResolved(resolution="Bache rellenado.", resolved_at=NOON)))
    for event in stages:
        await calls.notify(event)
        await calls.notify(event)  # a redelivery (the inbox drops it)
    placed = calls.telephony.placed_to(PHONE)
    assert len(placed) == 3
    assert all('language="es-US"' in c.twiml for c in placed)
    number = case.data.tracking_number  # type: ignore[union-attr]
    assert " ".join(number.replace("-", "")) in said(placed[0].twiml).replace(",", "")
    assert "Bache rellenado." in said(placed[2].twiml) and "Marque 2" in said(placed[2].twiml)
    sent = [e for e in await calls.history(case) if isinstance(e, NotificationSent)]
    assert [(e.stage, e.channel, e.message_id) for e in sent] == [
        (stage, "voice", c.sid) for stage, c in zip(("submitted", "routed", "resolved"), placed, strict=True)
    ]

    again = await calls.press(placed[2], "1")
    assert again.status_code == 200 and "Bache rellenado." in said(again.text)
    for _ in range(2):  # the provider posts the same press twice
        answered = await calls.press(placed[2], "2")
        assert answered.status_code == 200, answered.text
        assert "Public Works - Streets" in said(answered.text)
    disputes = [e for e in await calls.history(case) if isinstance(e, ResolutionDisputed)]
    assert disputes == [ResolutionDisputed(channel="voice", call_sid=placed[2].sid)]


async def test_a_resolution_after_a_dispute_is_called_again_and_can_be_disputed_again(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    await calls.append(case, routed())
    first = await calls.append(case, CaseResolved(resolution="Pothole filled.", resolved_at=NOON))
    await calls.notify(first)
    [call] = calls.telephony.placed_to(PHONE)
    assert (await calls.press(call, "2")).status_code == 200
    second = await calls.append(case, CaseResolved(resolution="Pothole filled again.", resolved_at=NOON))
    await calls.notify(second)
    await calls.notify(second)  # a redelivery: one call
    placed = calls.telephony.placed_to(PHONE)
    assert len(placed) == 2 and "Pothole filled again." in said(placed[1].twiml)
    assert (await calls.press(placed[1], "2")).status_code == 200
    history = await calls.history(case)
    sent = [(e.stage, e.message_id) for e in history if isinstance(e, NotificationSent)]
    assert sent == [("resolved", call.sid), ("resolved.2", placed[1].sid)]
    disputes = [e.call_sid for e in history if isinstance(e, ResolutionDisputed)]
    assert disputes == [call.sid, placed[1].sid]


async def test_a_late_press_2_on_a_case_no_longer_resolved_records_no_second_dispute(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    resolved = await calls.append(case, CaseResolved(resolution="Pothole filled.", resolved_at=NOON))
    await calls.notify(resolved)
    [call] = calls.telephony.placed_to(PHONE)
    await calls.append(case, ResolutionDisputed(channel="voice", call_sid="CA" + "0" * 32))  # disputed on another call

    answered = await calls.press(call, "2")

    assert answered.status_code == 200, answered.text
    disputes = [e for e in await calls.history(case) if isinstance(e, ResolutionDisputed)]
    assert len(disputes) == 1


async def test_an_unknown_digit_repeats_the_menu_once_then_says_goodbye(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    await calls.notify(await calls.append(case, CaseResolved(resolution="Done.", resolved_at=NOON)))
    [call] = calls.telephony.placed_to(PHONE)
    first = await calls.press(call, "9")
    assert first.status_code == 200 and "not one of the choices" in said(first.text)
    menu_again = PlacedCall(call.sid, call.to, first.text, None, call.created_at)
    last = await calls.press(menu_again, "7")
    assert ET.fromstring(last.text).find("Gather") is None and "Goodbye" in said(last.text)
    assert not [e for e in await calls.history(case) if isinstance(e, ResolutionDisputed)]


async def test_a_press_that_is_forged_or_malformed_changes_nothing(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    await calls.notify(await calls.append(case, CaseResolved(resolution="Done.", resolved_at=NOON)))
    [call] = calls.telephony.placed_to(PHONE)
    query = urlencode({"case": str(case.case_id), "stage": "resolved"})
    form = {"CallSid": call.sid, "Digits": "2"}
    headers = {"content-type": "application/x-www-form-urlencoded"}
    unsigned_query = calls.telephony.sign(PUBLIC_URL + "/telephony/voice/gather", form)  # the query left out
    forged = await calls.client.post(
        f"/telephony/voice/gather?{query}",
        content=urlencode(form),
        headers={**headers, SIGNATURE_HEADER: unsigned_query},
    )
    assert forged.status_code == 403
    for bad_query in ("case=not-a-uuid&stage=resolved", f"case={case.case_id}&stage=routed"):
        signed = calls.telephony.sign(f"{PUBLIC_URL}/telephony/voice/gather?{bad_query}", form)
        refused = await calls.client.post(
            f"/telephony/voice/gather?{bad_query}",
            content=urlencode(form),
            headers={**headers, SIGNATURE_HEADER: signed},
        )
        assert refused.status_code == 400, refused.text
    nul = {"CallSid": call.sid, "Digits": "2\x00"}
    signed = calls.telephony.sign(f"{PUBLIC_URL}/telephony/voice/gather?{query}", nul)
    refused = await calls.client.post(
        f"/telephony/voice/gather?{query}", content=urlencode(nul), headers={**headers, SIGNATURE_HEADER: signed}
    )
    assert refused.status_code == 400 and "Digits" in refused.text
    assert not [e for e in await calls.history(case) if isinstance(e, ResolutionDisputed)]


async def test_a_number_that_texted_stop_is_not_called(calls: Calls) -> None:
    async with calls.engine.begin() as tx:
        await tx.execute(
            text("INSERT INTO notifier.opt_outs (number_digest) VALUES (:d)"), {"d": number_digest(PHONE, calls.key)}
        )
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    await calls.notify(case)
    assert calls.telephony.calls == []
    [failed] = [e for e in await calls.history(case) if isinstance(e, NotificationFailed)]
    assert failed.channel == "voice" and failed.reason == "the resident texted STOP"


async def test_a_service_the_city_calls_back_about_is_a_call_at_resolution_whatever_the_channel(
    calls: Calls,
) -> None:
    contact = ResidentContact(email="resident@example.org", phone=PHONE)
    case = await calls.case(contact, service="CALL_BACK", preferred_channel="email", updates="outcome")
    await calls.notify(await calls.append(case, CaseResolved(resolution="Done.", resolved_at=NOON)))
    [call] = calls.telephony.placed_to(PHONE)
    assert ET.fromstring(call.twiml).find("Gather") is not None


async def test_a_call_due_at_night_waits_for_calling_hours(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    calls.now = MIDNIGHT
    await calls.notify(case)
    assert calls.telephony.calls == []
    assert await calls.delivery.send_due(STORE, calls.vault) == 0  # still night
    calls.now = MIDNIGHT + timedelta(hours=8)  # 08:00 in Chicago
    assert await calls.delivery.send_due(STORE, calls.vault) >= 1
    [call] = calls.telephony.placed_to(PHONE)
    sent = [e for e in await calls.history(case) if isinstance(e, NotificationSent)]
    assert [(e.stage, e.channel, e.message_id) for e in sent] == [("submitted", "voice", call.sid)]


async def test_an_unanswered_call_is_tried_again_within_hours_then_falls_back_to_a_text(calls: Calls) -> None:
    contact = ResidentContact(email="resident@example.org", phone=PHONE)
    case = await calls.case(contact, preferred_channel="voice", updates="outcome")
    calls.now = datetime(2026, 12, 1, 19, 50, tzinfo=UTC)  # 13:50 in Chicago
    await calls.notify(await calls.append(case, CaseResolved(resolution="Done.", resolved_at=calls.now)))
    [first] = calls.telephony.placed_to(PHONE)
    await calls.ended(first, "ringing")
    await calls.ended(first, "busy")
    await calls.ended(first, "busy")  # the provider repeats a callback: acted on once
    assert await calls.delivery.send_due(STORE, calls.vault) == 0  # not yet ten minutes later
    moments = []
    for status in ("no-answer", "busy", "failed"):
        told = [e for e in await calls.history(case) if isinstance(e, NotificationDelivered)]
        assert told[-1].retry_at is not None
        moments.append(told[-1].retry_at)
        calls.now = told[-1].retry_at
        assert await calls.delivery.send_due(STORE, calls.vault) >= 1
        await calls.ended(calls.telephony.placed_to(PHONE)[-1], status, "31005" if status == "failed" else "")
    assert len(calls.telephony.placed_to(PHONE)) == 4
    chicago = [m.astimezone(ZONE) for m in moments]
    assert chicago[0] == datetime(2026, 12, 1, 14, 0, tzinfo=ZONE)
    assert chicago[1] == datetime(2026, 12, 1, 15, 0, tzinfo=ZONE)
    assert chicago[2] == datetime(2026, 12, 2, 8, 0, tzinfo=ZONE)  # the next morning
    told = [e for e in await calls.history(case) if isinstance(e, NotificationDelivered)]
    assert [(e.outcome, e.attempt) for e in told] == [("busy", 1), ("no-answer", 2), ("busy", 3), ("failed", 4)]
    assert told[-1].fallback == "sms" and told[-1].error_code == 31005
    assert calls.telephony.bodies_to(PHONE) == []
    assert await calls.delivery.send_due(STORE, calls.vault) >= 1
    [body] = calls.telephony.bodies_to(PHONE)
    assert case.data.tracking_number in body  # type: ignore[union-attr]
    history = await calls.history(case)
    assert [(e.stage, e.channel) for e in history if isinstance(e, NotificationSent)] == [
        ("resolved", "voice"),
        ("resolved", "sms"),
    ]
    assert not [e for e in history if isinstance(e, NotificationFailed)]
    assert calls.mail.sent == []
    [texted] = calls.telephony.taken
    form = {"MessageSid": texted.sid, "MessageStatus": "delivered"}
    reported = await calls.client.post(
        STATUS_PATH,
        content=urlencode(form),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            SIGNATURE_HEADER: calls.telephony.sign(PUBLIC_URL + STATUS_PATH, form),
        },
    )
    assert reported.status_code == 204
    async with calls.engine.connect() as conn:
        kept = await conn.scalar(
            text("SELECT provider_status FROM notifier.deliveries WHERE provider_sid = :sid"), {"sid": texted.sid}
        )
    assert kept == "delivered", "the fallback text's delivery report is kept as a text's"
    assert [e for e in await calls.history(case) if isinstance(e, NotificationDelivered)][-1] == (
        NotificationDelivered(stage="resolved", channel="sms", outcome="delivered", attempt=5)
    )


async def test_a_fallback_text_that_is_not_delivered_falls_back_to_email(calls: Calls) -> None:
    contact = ResidentContact(email="resident@example.org", phone=PHONE)
    case = await calls.case(contact, preferred_channel="voice", updates="outcome")
    await unanswered_four_times(calls, case)
    assert await calls.delivery.send_due(STORE, calls.vault) >= 1
    [texted] = calls.telephony.taken
    await calls.outcomes(texted.sid, "undelivered", 30003)
    await calls.outcomes(texted.sid, "undelivered", 30003)  # repeated: acted on once
    told = [e for e in await calls.history(case) if isinstance(e, NotificationDelivered)]
    assert told[-1] == NotificationDelivered(
        stage="resolved", channel="sms", outcome="undelivered", attempt=5, fallback="email", error_code=30003
    )
    assert await calls.delivery.send_due(STORE, calls.vault) >= 1
    [mail] = calls.mail.sent
    assert mail["To"] == "resident@example.org"
    sent = [(e.stage, e.channel) for e in await calls.history(case) if isinstance(e, NotificationSent)]
    assert sent == [("resolved", "voice"), ("resolved", "sms"), ("resolved", "email")]


async def stop_texted(calls: Calls, number: str) -> None:
    async with calls.engine.begin() as tx:
        await tx.execute(
            text("INSERT INTO notifier.opt_outs (number_digest) VALUES (:d)"), {"d": number_digest(number, calls.key)}
        )


async def unanswered_four_times(calls: Calls, case: RecordedEvent, stop_before_the_last: str = "") -> None:
    """The resolution's call and its three retries, each unanswered (STOP texted before the last one ends)."""
    calls.now = datetime(2026, 12, 1, 19, 50, tzinfo=UTC)  # 13:50 in Chicago
    await calls.notify(await calls.append(case, CaseResolved(resolution="Done.", resolved_at=calls.now)))
    for retry in range(4):
        if retry:
            told = [e for e in await calls.history(case) if isinstance(e, NotificationDelivered)]
            assert told[-1].retry_at is not None
            calls.now = told[-1].retry_at
            assert await calls.delivery.send_due(STORE, calls.vault) >= 1
        if retry == 3 and stop_before_the_last:
            await stop_texted(calls, stop_before_the_last)
        await calls.ended(calls.telephony.calls[-1], "no-answer", "31480")


async def test_a_number_that_texted_stop_meanwhile_falls_back_to_email(calls: Calls) -> None:
    contact = ResidentContact(email="resident@example.org", phone=PHONE)
    case = await calls.case(contact, preferred_channel="voice", updates="outcome")
    await unanswered_four_times(calls, case, stop_before_the_last=PHONE)
    told = [e for e in await calls.history(case) if isinstance(e, NotificationDelivered)]
    assert told[-1].fallback == "email"
    assert await calls.delivery.send_due(STORE, calls.vault) >= 1
    [mail] = calls.mail.sent
    assert mail["To"] == "resident@example.org"
    assert case.data.tracking_number in mail.get_content()  # type: ignore[union-attr]
    assert calls.telephony.bodies_to(PHONE) == []
    sent = [(e.stage, e.channel) for e in await calls.history(case) if isinstance(e, NotificationSent)]
    assert sent == [("resolved", "voice"), ("resolved", "email")]


async def test_with_no_route_left_the_failure_is_recorded_with_the_providers_code(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice", updates="outcome")
    await unanswered_four_times(calls, case, stop_before_the_last=PHONE)
    [failed] = [e for e in await calls.history(case) if isinstance(e, NotificationFailed)]
    assert failed.channel == "voice" and "no-answer" in failed.reason and "(error 31480)" in failed.reason
    await calls.delivery.send_due(STORE, calls.vault)  # nothing of this case waits
    assert calls.mail.sent == [] and calls.telephony.bodies_to(PHONE) == []


async def test_hostile_presses_are_refused_saying_which_field_and_record_nothing(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    await calls.notify(await calls.append(case, CaseResolved(resolution="Done.", resolved_at=NOON)))
    [call] = calls.telephony.placed_to(PHONE)
    path = f"/telephony/voice/gather?{urlencode({'case': str(case.case_id), 'stage': 'resolved'})}"
    headers = {"content-type": "application/x-www-form-urlencoded"}

    async def post_raw(body: bytes, form: dict[str, str]) -> httpx.Response:
        signed = calls.telephony.sign(PUBLIC_URL + path, form)
        return await calls.client.post(path, content=body, headers={**headers, SIGNATURE_HEADER: signed})

    hostile = [
        ({"CallSid": call.sid, "Digits": "2\x00"}, 400, "Digits"),
        ({"CallSid": call.sid, "Digits": " 2 "}, 400, "Digits"),
        ({"CallSid": call.sid, "Digits": "NaN"}, 400, "Digits"),
        ({"CallSid": call.sid, "Digits": "2" * 21}, 400, "Digits"),
        ({"CallSid": "", "Digits": "2"}, 400, "CallSid"),
        ({"CallSid": "CA<&>;", "Digits": "2"}, 400, "CallSid"),
        ({"CallSid": "C" * 1_000_000, "Digits": "2"}, 413, "larger than"),
    ]
    for form, status, names in hostile:
        answered = await post_raw(urlencode(form).encode(), form)
        assert (answered.status_code, names in answered.text) == (status, True), (form.get("Digits"), answered.text)
    not_utf8 = await post_raw(b"CallSid=CA1&Digits=\xff\xfe", {})
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.text
    unknown_case = f"/telephony/voice/gather?{urlencode({'case': str(uuid4()), 'stage': 'resolved'})}"
    form = {"CallSid": call.sid, "Digits": "2"}
    signed = calls.telephony.sign(PUBLIC_URL + unknown_case, form)
    missing = await calls.client.post(
        unknown_case, content=urlencode(form), headers={**headers, SIGNATURE_HEADER: signed}
    )
    assert missing.status_code == 404
    assert not [e for e in await calls.history(case) if isinstance(e, ResolutionDisputed)]


async def test_a_call_the_provider_refuses_falls_back_to_email_with_its_code(calls: Calls) -> None:
    contact = ResidentContact(email="resident@example.org", phone=PHONE)
    case = await calls.case(contact, preferred_channel="voice", updates="outcome")
    calls.telephony.refuse_calls_with = 21211
    await calls.notify(await calls.append(case, CaseResolved(resolution="Done.", resolved_at=NOON)))
    [told] = [e for e in await calls.history(case) if isinstance(e, NotificationDelivered)]
    assert (told.outcome, told.fallback, told.error_code) == ("failed", "email", 21211)
    assert await calls.delivery.send_due(STORE, calls.vault) >= 1
    [mail] = calls.mail.sent
    assert mail["To"] == "resident@example.org"
    history = await calls.history(case)
    assert [(e.stage, e.channel) for e in history if isinstance(e, NotificationSent)] == [("resolved", "email")]
    assert not [e for e in history if isinstance(e, NotificationFailed)]

    phone_only = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice", updates="outcome")
    await calls.notify(await calls.append(phone_only, CaseResolved(resolution="Done.", resolved_at=NOON)))
    [failed] = [e for e in await calls.history(phone_only) if isinstance(e, NotificationFailed)]
    assert (failed.channel, failed.reason) == ("voice", "the provider refused the call (error 21211)")


async def voice_row(calls: Calls, case: RecordedEvent, stage: str, attempt: int = 1) -> tuple[str, str | None]:
    async with calls.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT status, provider_sid FROM notifier.deliveries"
                    " WHERE case_id = :c AND stage = :s AND channel = 'voice' AND attempt = :a"
                ),
                {"c": case.case_id, "s": stage, "a": attempt},
            )
        ).one()
    return row.status, row.provider_sid


async def test_the_crash_after_the_provider_took_a_call_is_closed_by_asking_the_provider(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice", updates="outcome")
    resolved = await calls.append(case, CaseResolved(resolution="Done.", resolved_at=NOON))
    calls.telephony.crash_after_placing = True
    with pytest.raises(CrashedAfterTaking):  # the process dies before the batch commits
        await calls.notify(resolved)
    assert (await voice_row(calls, case, "resolved"))[0] == "sending"
    assert not [e for e in await calls.history(case) if isinstance(e, NotificationSent)]

    calls.telephony.crash_after_placing = False
    with pytest.raises(ClaimHeld):  # a redelivery while the dead consumer's claim is live waits for it to lapse
        await calls.notify(resolved)
    calls.now += LEASE
    await calls.notify(resolved)  # the redelivery after the restart

    [call] = calls.telephony.placed_to(PHONE)
    assert calls.telephony.call_lookups == 1
    assert await voice_row(calls, case, "resolved") == ("sent", call.sid)
    sent = [e for e in await calls.history(case) if isinstance(e, NotificationSent)]
    assert sent == [NotificationSent(stage="resolved", channel="voice", message_id=call.sid)]
    await calls.ended(call, "completed")  # the provider's callback for that call lands on the recorded row
    [told] = [e for e in await calls.history(case) if isinstance(e, NotificationDelivered)]
    assert (told.stage, told.outcome) == ("resolved", "answered")


async def test_a_call_another_row_holds_is_not_taken_for_the_one_that_crashed(calls: Calls) -> None:
    # the same number called about another case's stage in the window: that call is its row's, not the crashed one's
    other = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice", updates="outcome")
    await calls.notify(await calls.append(other, CaseResolved(resolution="Done.", resolved_at=NOON)))
    [held] = calls.telephony.placed_to(PHONE)
    assert (await voice_row(calls, other, "resolved"))[1] == held.sid

    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice", updates="outcome")
    resolved = await calls.append(case, CaseResolved(resolution="Done.", resolved_at=NOON))
    calls.telephony.down = True  # the provider cannot be reached: nothing placed, the row stays 'sending'
    with pytest.raises(TelephonyUnavailable):
        await calls.notify(resolved)
    calls.telephony.down = False
    calls.now += LEASE  # retried once the claim lapsed
    await calls.notify(resolved)

    kept, placed = calls.telephony.placed_to(PHONE)  # the crashed row's call placed once, beside the held one
    assert kept == held
    assert calls.telephony.call_lookups == 1
    status, sid = await voice_row(calls, case, "resolved")
    assert (status, sid) == ("sent", placed.sid)


async def test_a_stale_retry_found_sending_asks_the_provider_before_calling_again(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice", updates="outcome")
    await calls.notify(await calls.append(case, CaseResolved(resolution="Done.", resolved_at=NOON)))
    calls.telephony.clock = lambda: calls.now  # the provider's clock and ours agree, as in production
    [first] = calls.telephony.placed_to(PHONE)
    await calls.ended(first, "no-answer")
    calls.now = NOON + timedelta(minutes=10)
    calls.telephony.crash_after_placing = True
    with pytest.raises(CrashedAfterTaking):  # the task dies after the provider placed the second call
        await calls.delivery.send_due(STORE, calls.vault)
    assert (await voice_row(calls, case, "resolved", attempt=2))[0] == "sending"

    calls.telephony.crash_after_placing = False
    calls.now = NOON + timedelta(minutes=13)  # the row is stale: another pass takes it again
    assert await calls.delivery.send_due(STORE, calls.vault) == 1
    first_again, second = calls.telephony.placed_to(PHONE)
    assert first_again == first and calls.telephony.call_lookups == 1
    assert await voice_row(calls, case, "resolved", attempt=2) == ("sent", second.sid)


async def test_of_two_replicas_on_a_lapsed_retry_one_takes_the_call_placed_before_the_crash(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice", updates="outcome")
    await calls.notify(await calls.append(case, CaseResolved(resolution="Done.", resolved_at=NOON)))
    calls.telephony.clock = lambda: calls.now
    [first] = calls.telephony.placed_to(PHONE)
    await calls.ended(first, "no-answer")
    calls.now = NOON + timedelta(minutes=10)
    calls.telephony.crash_after_placing = True
    with pytest.raises(CrashedAfterTaking):  # the task dies after the provider placed the second call
        await calls.delivery.send_due(STORE, calls.vault)
    calls.telephony.crash_after_placing = False

    calls.now = NOON + timedelta(minutes=13)
    held = HeldTelephony(calls.telephony, hold_at="calls_to")  # replica A has asked and found the call
    first_replica = asyncio.create_task(calls.replica(held).send_due(STORE, calls.vault))
    await held.held()
    await calls.replica(calls.telephony).send_due(STORE, calls.vault)  # replica B meanwhile
    held.released.set()
    await first_replica

    first_again, second = calls.telephony.placed_to(PHONE)  # called once more, not twice
    assert first_again == first
    assert await voice_row(calls, case, "resolved", attempt=2) == ("sent", second.sid)


async def test_a_call_left_sending_by_day_and_redelivered_at_night_is_placed_in_the_morning_once(
    calls: Calls,
) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    calls.telephony.clock = lambda: calls.now
    calls.now = NOON
    calls.telephony.crash_after_placing = True
    with pytest.raises(CrashedAfterTaking):  # the provider took the call; the process died
        await calls.notify(case)
    calls.telephony.crash_after_placing = False
    calls.now = MIDNIGHT
    await calls.notify(case)  # the redelivery, at night: the row waits for calling hours
    assert (await voice_row(calls, case, "submitted"))[0] == "sending"

    calls.now = MIDNIGHT + timedelta(hours=8)  # 08:00 in Chicago
    assert await calls.delivery.send_due(STORE, calls.vault) >= 1
    [call] = calls.telephony.placed_to(PHONE)
    assert calls.telephony.call_lookups == 1
    assert await voice_row(calls, case, "submitted") == ("sent", call.sid)
    sent = [e for e in await calls.history(case) if isinstance(e, NotificationSent)]
    assert sent == [NotificationSent(stage="submitted", channel="voice", message_id=call.sid)]


async def test_a_busy_report_after_the_batch_failed_finds_its_call_and_schedules_the_retry(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    templates = MessageTemplates(ZONE)
    policy = NotificationHandler(calls.engine, calls.vault, object(), templates, "311 <a@b>", None, calls.delivery)  # type: ignore[arg-type]

    async def then_fails(event: RecordedEvent, reads: Reads) -> Decision:
        await policy(event, reads)
        raise RuntimeError("the batch failed after deciding")

    unit = UnitOfWork(calls.engine, "notifier", STORE)
    with pytest.raises(RuntimeError):
        await unit.run([case], in_order({case.type: then_fails}))
    [call] = calls.telephony.placed_to(PHONE)
    await calls.ended(call, "busy")
    told = [e for e in await calls.history(case) if isinstance(e, NotificationDelivered)]
    assert [(e.outcome, e.attempt) for e in told] == [("busy", 1)] and told[0].retry_at is not None
    await calls.notify(case)  # the redelivery: the kept sid is the outcome, no second call
    assert calls.telephony.placed_to(PHONE) == [call] and calls.telephony.call_lookups == 0
    assert (await voice_row(calls, case, "submitted")) == ("sent", call.sid)


async def test_a_mail_server_down_for_a_fallback_email_holds_up_no_call_behind_it(calls: Calls) -> None:
    contact = ResidentContact(email="resident@example.org", phone=PHONE)
    refused = await calls.case(contact, preferred_channel="voice", updates="outcome")
    calls.telephony.refuse_calls_with = 21211  # its email fallback is due at once
    calls.now = MIDNIGHT - timedelta(hours=5)  # 19:00 in Chicago
    await calls.notify(await calls.append(refused, CaseResolved(resolution="Done.", resolved_at=calls.now)))
    calls.telephony.refuse_calls_with = None
    calls.now = MIDNIGHT
    waiting = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    await calls.notify(waiting)  # a call waiting for the morning, behind the email

    calls.mail.down = True
    calls.now = MIDNIGHT + timedelta(hours=8)
    await calls.delivery.send_due(STORE, calls.vault)
    [call] = calls.telephony.placed_to(PHONE)[-1:]
    assert await voice_row(calls, waiting, "submitted") == ("sent", call.sid)
    async with calls.engine.connect() as conn:
        failures, not_before = (
            await conn.execute(
                text("SELECT failures, not_before FROM notifier.deliveries WHERE case_id = :c AND attempt = 2"),
                {"c": refused.case_id},
            )
        ).one()
    assert (failures, not_before) == (1, calls.now + timedelta(minutes=1))  # put off, not first forever

    calls.mail.down = False
    calls.now += timedelta(minutes=2)  # its backoff and its claim have passed
    await calls.delivery.send_due(STORE, calls.vault)
    [mail] = calls.mail.sent
    assert mail["To"] == "resident@example.org"


async def test_a_consumer_that_finds_another_placing_the_call_waits_and_the_call_goes_once(calls: Calls) -> None:
    case = await calls.case(ResidentContact(phone=PHONE), preferred_channel="voice")
    held = HeldTelephony(calls.telephony, hold_at="place_call")  # consumer A, about to place the call
    policy = NotificationHandler(
        calls.engine,
        calls.vault,
        object(),
        MessageTemplates(ZONE),
        "311 <a@b>",
        None,
        calls.replica(held),  # type: ignore[arg-type]
    )
    first = asyncio.create_task(UnitOfWork(calls.engine, "notifier", STORE).run([case], in_order({case.type: policy})))
    await held.held()
    with pytest.raises(ClaimHeld):  # consumer B, after a rebalance: retried, not calling
        await calls.notify(case)
    assert calls.telephony.calls == [] and calls.telephony.call_lookups == 0
    held.released.set()
    await first
    await calls.notify(case)  # B's retry: the stage is told
    [call] = calls.telephony.placed_to(PHONE)
    sent = [e for e in await calls.history(case) if isinstance(e, NotificationSent)]
    assert sent == [NotificationSent(stage="submitted", channel="voice", message_id=call.sid)]
