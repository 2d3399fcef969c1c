"""The satisfaction survey against the embedded PostgreSQL: scheduled with a resolution, sent once when due (a
second run, a crash between the provider and our commit), answered by a text "4" or a one-click link; a link
we did not make, or a wrong score, gets a clear page and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.events import (
    CaseEvent,
    CaseResolved,
    CaseSubmitted,
    EventMetadata,
    Location,
    RecordedEvent,
    ResidentReplied,
    ResolutionDisputed,
    SurveyAnswered,
    SurveySent,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import UnitOfWork, in_order
from services.notifier.inbound_texts import InboundTexts, StatusReports
from services.notifier.quiet_hours import QuietHours
from services.notifier.sms import TextTemplates
from services.notifier.survey import Page, SurveyTokens
from services.notifier.survey_delivery import STALE, SurveyLinks, SurveySchedule, SurveySender
from services.notifier.survey_http import survey_routes
from services.notifier.telephony_http import INBOUND_PATH, SIGNATURE_HEADER, create_telephony_app
from services.notifier.texting import TextDelivery
from tests.telephony_double import CrashedAfterTaking, InMemoryTelephony

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
ZONE = ZoneInfo("America/Chicago")
PUBLIC_URL = "http://notifier.test"
DELAY = timedelta(hours=24)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Outbox:
    """A mail server that keeps what it took."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        self.messages.append(message)

    def links(self) -> list[str]:
        body = str(self.messages[-1].get_content())
        return [word for word in body.split() if word.startswith(PUBLIC_URL + "/survey/")]


class Notifier:
    """The survey's policy, task and endpoints over one database, one key, one provider double and one outbox."""

    def __init__(self, engine: AsyncEngine, tmp_path: Path, client: httpx.AsyncClient, resolved_at: datetime) -> None:
        key = uuid4().bytes + uuid4().bytes  # the test's own: its numbers are no other test's
        self.engine = engine
        self.client = client
        self.vault = ContactVault(load_master_key("", tmp_path))
        self.resolved_at = resolved_at
        self.clock = Clock(resolved_at)
        self.telephony = InMemoryTelephony(clock=self.clock)
        self.outbox = Outbox()
        self.tokens = SurveyTokens(key)
        self.texts = TextDelivery(engine, self.telephony, TextTemplates(ZONE), key, clock=self.clock)
        self.inbound = InboundTexts(engine, STORE, key, ZONE)
        self.links = SurveyLinks(engine, STORE, self.tokens)
        schedule = SurveySchedule(lambda code: None if code == "FEEDBACK" else DELAY, self.tokens)
        unit = UnitOfWork(engine, "notifier", STORE)
        self.resolve_policy = lambda event: unit.run([event], in_order({event.type: schedule}))
        self.cases: set[UUID] = set()  # this test's: its sender sends no other test's surveys
        self.sender = self.new_process()

    def new_process(self) -> SurveySender:
        return SurveySender(
            self.engine,
            STORE,
            self.vault,
            self.texts,
            self.outbox,
            "311 <a@b>",
            self.tokens,
            PUBLIC_URL,
            self.clock,
            only=self.cases,
        )

    async def resolved_case(
        self, contact: ResidentContact, channel: str, language: str = "en", service_code: str = "POTHOLE"
    ) -> RecordedEvent:
        case_id = uuid7()
        self.cases.add(case_id)
        metadata = EventMetadata(correlation_id=uuid7(), actor="test")
        async with self.engine.begin() as tx:
            sealed = await self.vault.seal(tx, case_id, contact)
            submitted = CaseSubmitted(
                tracking_number=tracking.issue(),
                service_code=service_code,
                description="a fictional hole",
                location=Location(lat=41.88, long=-87.63),
                submitted_at=self.resolved_at - timedelta(days=2),
                sealed_contact=sealed,
                preferred_channel=channel,
                language=language,
            )
            resolved = CaseResolved(resolution="Filled.", resolved_at=self.resolved_at)
            [_, recorded] = await STORE.append(tx, case_id, 0, [submitted, resolved], metadata)
        await self.resolve_policy(recorded)
        return recorded

    async def history(self, case: RecordedEvent) -> list[object]:
        async with self.engine.connect() as conn:
            return [e.data for e in await STORE.read_stream(conn, case.case_id)]

    async def history_recorded(self, case: RecordedEvent) -> list[RecordedEvent]:
        async with self.engine.connect() as conn:
            return list(await STORE.read_stream(conn, case.case_id))

    async def append(self, case: RecordedEvent, event: CaseEvent) -> RecordedEvent:
        async with self.engine.begin() as tx:
            [recorded] = await STORE.append(
                tx, case.case_id, None, [event], EventMetadata(correlation_id=uuid7(), actor="test")
            )
        return recorded

    async def survey_row(self, case: RecordedEvent, resolved: RecordedEvent | None = None) -> dict[str, object] | None:
        """The survey row of the case's resolution (the one resolved_case made, unless given)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT status, due_at, channel, score FROM notifier.surveys WHERE case_id = :c"
                        " AND caused_by = :e"
                    ),
                    {"c": case.case_id, "e": (resolved or case).event_id},
                )
            ).first()
        return dict(row._mapping) if row else None

    async def text_in(self, phone: str, body: str) -> str:
        form = {"From": phone, "To": "+13125550100", "Body": body, "MessageSid": "SM" + uuid4().hex}
        answered = await self.client.post(
            INBOUND_PATH,
            content=urlencode(form),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                SIGNATURE_HEADER: self.telephony.sign(PUBLIC_URL + INBOUND_PATH, form),
            },
        )
        assert answered.status_code == 200, answered.text
        return answered.text.split("<Message>")[1].split("</Message>")[0]


def _sid_to(telephony: InMemoryTelephony, phone: str) -> str:
    [sid] = [m.sid for m in telephony.taken if m.to == phone]
    return sid


def fictional_phone() -> str:
    return f"+1312555{uuid4().int % 10_000:04d}"


# Each test resolves in its own far-future hour, and its sender is limited to its own cases (Notifier.cases).
_ERA = datetime(2040, 1, 1, 15, 0, tzinfo=UTC)


@pytest.fixture
async def notifier(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Notifier]:
    resolved_at = _ERA + timedelta(hours=uuid4().int % 100_000)
    holder: list[Notifier] = []

    class Pages:
        async def shown(self, token: str, score: str) -> Page:
            return await holder[0].links.shown(token, score)

        async def answered(self, token: str, score: str) -> Page:
            return await holder[0].links.answered(token, score)

    async def inbound(number: str, body: str, message_sid: str) -> str:
        return await holder[0].inbound(number, body, message_sid)

    telephony_for_app = InMemoryTelephony()
    reports = StatusReports(engine, STORE, ContactVault(load_master_key("", tmp_path)))
    app = create_telephony_app(telephony_for_app, PUBLIC_URL, inbound, reports, survey_routes(Pages()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client:
        holder.append(Notifier(engine, tmp_path, client, resolved_at))
        holder[0].telephony.auth_token = telephony_for_app.auth_token
        yield holder[0]


async def test_a_resolution_schedules_a_survey_sent_once_by_text_and_answered_with_a_4(notifier: Notifier) -> None:
    phone = fictional_phone()
    case = await notifier.resolved_case(ResidentContact(phone=phone), "sms")
    row = await notifier.survey_row(case)
    assert row is not None and row["status"] == "scheduled" and row["due_at"] == notifier.resolved_at + DELAY

    notifier.clock.now = notifier.resolved_at + DELAY - timedelta(minutes=1)
    await notifier.sender.send_due()
    assert notifier.telephony.bodies_to(phone) == [], "sent before it was due"

    notifier.clock.now = notifier.resolved_at + DELAY
    await notifier.sender.send_due()
    await notifier.new_process().send_due()  # the task runs again, in a restarted process
    [body] = notifier.telephony.bodies_to(phone)
    number = next(e for e in await notifier.history(case) if isinstance(e, CaseSubmitted)).tracking_number
    assert body == f"311: How did we do on {number}? Reply 1 (poor) to 5 (great)."
    sid = _sid_to(notifier.telephony, phone)
    assert [e for e in await notifier.history(case) if isinstance(e, SurveySent)] == [
        SurveySent(channel="sms", message_id=sid)
    ]

    assert await notifier.text_in(phone, "4") == f"311 {number}: thank you for your answer."
    assert await notifier.text_in(phone, "2") != f"311 {number}: thank you for your answer."  # a reply now
    history = await notifier.history(case)
    assert [e for e in history if isinstance(e, SurveyAnswered)] == [SurveyAnswered(score=4, channel="sms")]
    assert [e for e in history if isinstance(e, ResidentReplied)] == [ResidentReplied(text="2")]
    assert (await notifier.survey_row(case) or {})["score"] == 4


async def test_a_digit_before_the_survey_is_a_reply(notifier: Notifier) -> None:
    phone = fictional_phone()
    case = await notifier.resolved_case(ResidentContact(phone=phone), "sms")
    number = next(e for e in await notifier.history(case) if isinstance(e, CaseSubmitted)).tracking_number
    async with notifier.engine.begin() as tx:  # as the stage texts left it: the number knows its case
        await tx.execute(
            text("INSERT INTO notifier.case_numbers (number_digest, case_id, tracking_number) VALUES (:d, :c, :t)"),
            {"d": notifier.texts.digest(phone), "c": case.case_id, "t": number},
        )
    await notifier.text_in(phone, "5")
    history = await notifier.history(case)
    assert [e for e in history if isinstance(e, SurveyAnswered)] == []
    assert ResidentReplied(text="5") in history
    notifier.clock.now = notifier.resolved_at + DELAY  # and the survey still goes when due
    await notifier.sender.send_due()
    assert len(notifier.telephony.bodies_to(phone)) == 1


async def test_a_crash_between_the_provider_and_our_commit_texts_once(notifier: Notifier) -> None:
    phone = fictional_phone()
    case = await notifier.resolved_case(ResidentContact(phone=phone), "voice")  # a caller gets the text
    notifier.clock.now = notifier.resolved_at + DELAY
    notifier.telephony.crash_after_taking = True
    with pytest.raises(CrashedAfterTaking):
        await notifier.sender.send_due()
    notifier.telephony.crash_after_taking = False
    await notifier.new_process().send_due()  # too soon: its sender may still be at work
    assert notifier.telephony.lookups == 0

    notifier.clock.now += STALE + timedelta(minutes=1)
    await asyncio.gather(notifier.new_process().send_due(), notifier.new_process().send_due())  # two replicas
    assert len(notifier.telephony.bodies_to(phone)) == 1, "texted twice"
    assert notifier.telephony.lookups == 1
    sent = [e for e in await notifier.history(case) if isinstance(e, SurveySent)]
    assert sent == [SurveySent(channel="sms", message_id=_sid_to(notifier.telephony, phone))]


async def test_no_survey_for_a_service_without_one_nor_a_resident_who_asked_for_nothing(notifier: Notifier) -> None:
    feedback = await notifier.resolved_case(ResidentContact(phone=fictional_phone()), "sms", service_code="FEEDBACK")
    silent = await notifier.resolved_case(ResidentContact(phone=fictional_phone()), "none")
    assert await notifier.survey_row(feedback) is None
    assert await notifier.survey_row(silent) is None


async def test_an_opted_out_number_is_not_asked(notifier: Notifier) -> None:
    phone = fictional_phone()
    case = await notifier.resolved_case(ResidentContact(phone=phone), "sms")
    async with notifier.engine.begin() as tx:
        await tx.execute(
            text("INSERT INTO notifier.opt_outs (number_digest) VALUES (:d)"), {"d": notifier.texts.digest(phone)}
        )
    notifier.clock.now = notifier.resolved_at + DELAY
    await notifier.sender.send_due()
    assert notifier.telephony.bodies_to(phone) == []
    assert (await notifier.survey_row(case) or {})["status"] == "skipped"
    assert [e for e in await notifier.history(case) if isinstance(e, SurveySent)] == []


async def test_an_email_survey_is_answered_by_one_click_in_spanish_and_the_first_answer_stands(
    notifier: Notifier,
) -> None:
    case = await notifier.resolved_case(ResidentContact(email="vecina@example.org"), "email", language="es")
    notifier.clock.now = notifier.resolved_at + DELAY
    await notifier.sender.send_due()
    await notifier.sender.send_due()
    assert len(notifier.outbox.messages) == 1
    links = notifier.outbox.links()
    assert [link.rsplit("/", 1)[1] for link in links] == ["1", "2", "3", "4", "5"]
    assert str(case.case_id) not in " ".join(links) and case.case_id.hex not in " ".join(links)

    for link in links:  # a mail scanner, or a phone's link preview, opens every link: nothing is recorded
        opened = await notifier.client.get(link.removeprefix(PUBLIC_URL))
        assert opened.status_code == 200 and '<form method="post">' in opened.text and 'lang="es"' in opened.text
        assert "Enviar mi respuesta" in opened.text
    assert [e for e in await notifier.history(case) if isinstance(e, SurveyAnswered)] == []
    assert (await notifier.survey_row(case) or {})["score"] is None

    clicked = await notifier.client.post(links[4].removeprefix(PUBLIC_URL))  # the resident's button
    assert clicked.status_code == 200 and "Gracias" in clicked.text and 'lang="es"' in clicked.text
    again = await notifier.client.post(links[0].removeprefix(PUBLIC_URL))
    assert again.status_code == 200 and "ya estaba registrada" in again.text
    reopened = await notifier.client.get(links[0].removeprefix(PUBLIC_URL))
    assert "ya estaba registrada" in reopened.text and "<form" not in reopened.text
    answers = [e for e in await notifier.history(case) if isinstance(e, SurveyAnswered)]
    assert answers == [SurveyAnswered(score=5, channel="email")]


async def test_hostile_links_get_a_clear_page_and_change_nothing(notifier: Notifier) -> None:
    case = await notifier.resolved_case(ResidentContact(email="vecino@example.org"), "email")
    notifier.clock.now = notifier.resolved_at + DELAY
    await notifier.sender.send_due()
    good = notifier.outbox.links()[3].removeprefix(PUBLIC_URL)  # .../<token>/4
    token = good.split("/")[2]
    before = await notifier.history(case)
    cases = {
        f"/survey/{token}/0": 400,
        f"/survey/{token}/6": 400,
        f"/survey/{token}/NaN": 400,
        f"/survey/{token}/%00": 400,
        f"/survey/{token}/{'4' * 10_000}": 400,
        f"/survey/{token[:-1]}{'A' if token[-1] != 'A' else 'B'}/4": 404,
        f"/survey/{'A' * 10_000}.{'B' * 22}/4": 404,
        f"/survey/{token}%00/4": 404,
        f"/survey/{token}%C3%28/4": 404,  # invalid UTF-8
        f"/survey/{SurveyTokens(b'x' * 32).token('A' * 22)}/4": 404,
        "/survey/./4": 404,
        "/survey/4": 404,
        f"/survey/{token}/4/4": 404,
    }
    for path, status in cases.items():
        for shown in (await notifier.client.get(path), await notifier.client.post(path)):
            assert shown.status_code == status, path[:80]
            assert "survey link" in shown.text and "enlace de encuesta" in shown.text  # whose link: unknown
    assert await notifier.history(case) == before
    assert (await notifier.survey_row(case) or {})["score"] is None
    # a signed link whose survey was never sent (a forged row ref) is not known either
    unsent = f"/survey/{notifier.tokens.token(notifier.tokens.new_ref())}/4"
    assert (await notifier.client.get(unsent)).status_code == (await notifier.client.post(unsent)).status_code == 404


async def test_a_survey_due_at_night_waits_for_texting_hours(notifier: Notifier) -> None:
    phone = fictional_phone()
    case = await notifier.resolved_case(ResidentContact(phone=phone), "sms")
    notifier.texts.quiet = QuietHours(ZONE)
    due = (notifier.resolved_at + DELAY).astimezone(ZONE)
    night = due.replace(hour=23, minute=30) if due.hour < 23 else due
    notifier.clock.now = night
    await notifier.sender.send_due()
    assert notifier.telephony.bodies_to(phone) == []
    assert (await notifier.survey_row(case) or {})["status"] == "scheduled"
    notifier.clock.now = (night + timedelta(days=1)).replace(hour=8, minute=0)
    await notifier.sender.send_due()
    assert len(notifier.telephony.bodies_to(phone)) == 1


async def test_a_caller_without_a_phone_is_asked_by_email(notifier: Notifier) -> None:
    case = await notifier.resolved_case(ResidentContact(email="caller@example.org"), "voice")
    notifier.clock.now = notifier.resolved_at + DELAY
    await notifier.sender.send_due()
    assert [e for e in await notifier.history(case) if isinstance(e, SurveySent)] == [
        SurveySent(channel="email", message_id=f"<{case.case_id}.survey@civicflow.local>")
    ]


async def test_a_disputed_resolution_is_not_surveyed_and_the_resolution_after_it_is(notifier: Notifier) -> None:
    case = await notifier.resolved_case(ResidentContact(email="reopened@example.org"), "email")
    [first] = [e for e in await notifier.history_recorded(case) if isinstance(e.data, CaseResolved)]
    await notifier.append(case, ResolutionDisputed(call_sid="CA-fictional-1"))  # pressed 2 on the call
    notifier.clock.now = notifier.resolved_at + DELAY
    await notifier.sender.send_due()
    assert notifier.outbox.messages == [], "asked how we did while the problem is not fixed"
    assert (await notifier.survey_row(case, first) or {})["status"] == "skipped"

    again_at = notifier.clock.now + timedelta(hours=1)
    second = await notifier.append(case, CaseResolved(resolution="Filled again.", resolved_at=again_at))
    await notifier.resolve_policy(second)
    await notifier.resolve_policy(second)  # a redelivery: one survey
    notifier.clock.now = again_at + DELAY
    await notifier.sender.send_due()
    await notifier.sender.send_due()
    assert [e for e in await notifier.history(case) if isinstance(e, SurveySent)] == [
        SurveySent(channel="email", message_id=f"<{case.case_id}.survey.2@civicflow.local>")
    ]
    assert (await notifier.survey_row(case, second) or {})["status"] == "sent"
    clicked = await notifier.client.post(notifier.outbox.links()[3].removeprefix(PUBLIC_URL))
    assert "Thank you" in clicked.text
    assert [e for e in await notifier.history(case) if isinstance(e, SurveyAnswered)] == [
        SurveyAnswered(score=4, channel="email")
    ]


async def test_a_sender_sends_only_its_own_cases_surveys(
    notifier: Notifier, engine: AsyncEngine, tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    other = Notifier(engine, tmp_path / "other", notifier.client, notifier.resolved_at)  # another test's key
    left = await other.resolved_case(ResidentContact(email="left.behind@example.org"), "email")
    mine = await notifier.resolved_case(ResidentContact(email="mine@example.org"), "email")
    notifier.clock.now = other.clock.now = notifier.resolved_at + DELAY
    assert await notifier.sender.send_due() == 1  # the other's row, sealed with a key it lacks, is not touched
    assert (await notifier.survey_row(mine) or {})["status"] == "sent"
    assert (await other.survey_row(left) or {})["status"] == "scheduled"
