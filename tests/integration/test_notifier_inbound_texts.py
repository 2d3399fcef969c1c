"""The notifier's telephony endpoint against real PostgreSQL: signed inbound texts only; STOP stops texts on
every case until START; STATUS and a tracking number answer with the right case; anything else is recorded
as the resident's reply; status callbacks land on the delivery row; hostile bodies change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode
from uuid import uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.events import CaseSubmitted, EventMetadata, Location, NotificationFailed, RecordedEvent, ResidentReplied
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import UnitOfWork, in_order
from services.notifier.domain import MessageTemplates
from services.notifier.inbound_texts import InboundTexts, StatusReports
from services.notifier.main import NotificationHandler
from services.notifier.sms import TextTemplates
from services.notifier.telephony_http import INBOUND_PATH, SIGNATURE_HEADER, STATUS_PATH, create_telephony_app
from services.notifier.texting import TextDelivery
from tests.telephony_double import InMemoryTelephony

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
ZONE = ZoneInfo("America/Chicago")
PUBLIC_URL = "https://notifier.example.org"
PHONE = "+13125550177"  # in the 555-01xx range kept for fiction
OTHER_PHONE = "+13125550178"


def new_sid() -> str:
    """A MessageSid no other text has: the endpoint answers each sid once."""
    return "SM" + uuid4().hex


class Endpoint:
    """The notifier's policy and its telephony endpoint over one database, one digest key and one double."""

    def __init__(
        self,
        engine: AsyncEngine,
        vault: ContactVault,
        client: httpx.AsyncClient,
        telephony: InMemoryTelephony,
        key: bytes,
    ) -> None:
        self.engine = engine
        self.vault = vault
        self.client = client
        self.telephony = telephony
        texts = TextDelivery(engine, telephony, TextTemplates(ZONE), key)
        policy = NotificationHandler(engine, vault, object(), MessageTemplates(ZONE), "311 <a@b>", texts)  # type: ignore[arg-type]
        unit = UnitOfWork(engine, "notifier", STORE)
        self.notify = lambda event: unit.run([event], in_order({event.type: policy}))

    async def post(self, path: str, form: dict[str, str], signature: str | None = None) -> httpx.Response:
        signed = self.telephony.sign(PUBLIC_URL + path, form) if signature is None else signature
        return await self.client.post(
            path,
            content=urlencode(form),
            headers={"content-type": "application/x-www-form-urlencoded", SIGNATURE_HEADER: signed},
        )

    async def text_in(self, body: str, sender: str = PHONE, sid: str | None = None) -> str:
        answered = await self.post(
            INBOUND_PATH, {"From": sender, "To": "+13125550100", "Body": body, "MessageSid": sid or new_sid()}
        )
        assert answered.status_code == 200, answered.text
        assert answered.text.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Message>')
        return answered.text.split("<Message>")[1].split("</Message>")[0]

    async def case(self, phone: str = PHONE, language: str = "en") -> RecordedEvent:
        """A case submitted by a resident who chose texts, and its first text sent (or not)."""
        case_id = uuid7()
        async with self.engine.begin() as tx:
            sealed = await self.vault.seal(tx, case_id, ResidentContact(phone=phone))
            event = CaseSubmitted(
                tracking_number=tracking.issue(),
                service_code="POTHOLE",
                description="a hole",
                location=Location(lat=41.88, long=-87.63),
                submitted_at=datetime.now(UTC),
                sealed_contact=sealed,
                preferred_channel="sms",
                language=language,
            )
            [recorded] = await STORE.append(
                tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="test")
            )
        await self.notify(recorded)
        return recorded

    async def history(self, case: RecordedEvent) -> list[RecordedEvent]:
        async with self.engine.connect() as conn:
            return await STORE.read_stream(conn, case.case_id)


@pytest.fixture
async def endpoint(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Endpoint]:
    key = uuid4().bytes  # the test's own: its opt-outs and numbers are no other test's
    telephony = InMemoryTelephony()
    vault = ContactVault(load_master_key("", tmp_path))
    reports = StatusReports(engine, STORE, vault)
    app = create_telephony_app(telephony, PUBLIC_URL, InboundTexts(engine, STORE, key, ZONE), reports)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client:
        yield Endpoint(engine, vault, client, telephony, key)


async def test_an_unsigned_or_wrongly_signed_text_is_refused_and_changes_nothing(endpoint: Endpoint) -> None:
    case = await endpoint.case()
    form = {"From": PHONE, "Body": "STOP"}
    assert (await endpoint.post(INBOUND_PATH, form, signature="")).status_code == 403
    assert (
        await endpoint.post(INBOUND_PATH, form, signature=endpoint.telephony.sign(PUBLIC_URL + "/elsewhere", form))
    ).status_code == 403
    forged = {**form, "Body": "START"}
    assert (
        await endpoint.post(INBOUND_PATH, forged, signature=endpoint.telephony.sign(PUBLIC_URL + INBOUND_PATH, form))
    ).status_code == 403
    second = await endpoint.case()
    assert len(endpoint.telephony.bodies_to(PHONE)) == 2, "a forged STOP stopped texts"
    assert [e.type for e in await endpoint.history(case)] == ["CaseSubmitted", "NotificationSent"]
    assert second.case_id != case.case_id


async def test_stop_stops_texts_on_every_later_case_until_start(endpoint: Endpoint) -> None:
    await endpoint.case()
    assert "no more texts or calls" in await endpoint.text_in("  Stop ")
    later = await endpoint.case()
    assert len(endpoint.telephony.bodies_to(PHONE)) == 1
    told = [e.data for e in await endpoint.history(later) if isinstance(e.data, NotificationFailed)]
    assert told == [NotificationFailed(stage="submitted", channel="sms", reason="the resident texted STOP")]
    assert "texts about your requests again" in await endpoint.text_in("START")
    await endpoint.case()
    assert len(endpoint.telephony.bodies_to(PHONE)) == 2
    async with endpoint.engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT count(*) FROM notifier.opt_outs WHERE number_digest LIKE :n"), {"n": "%3125550177%"}
        )
    assert stored == 0, "the opt-out list keeps the number in clear"


async def test_status_and_a_tracking_number_answer_only_for_the_number_own_cases(endpoint: Endpoint) -> None:
    first = await endpoint.case(language="es")
    newest = await endpoint.case()
    someone_elses = await endpoint.case(phone=OTHER_PHONE)
    newest_number = newest.data.tracking_number  # type: ignore[attr-defined]
    first_number = first.data.tracking_number  # type: ignore[attr-defined]
    other_number = someone_elses.data.tracking_number  # type: ignore[attr-defined]

    assert await endpoint.text_in("status") == f"311 {newest_number}: received, not yet with a department."
    assert await endpoint.text_in(first_number.lower()) == f"311 {first_number}: recibida, aún sin departamento."
    assert await endpoint.text_in(other_number) == f"311: we have no request {other_number} for this phone number."
    assert "we have no request for this phone number" in await endpoint.text_in("STATUS", sender="+13125550199")
    assert "Reply STATUS" in await endpoint.text_in("help")


async def test_anything_else_is_recorded_as_the_resident_reply_on_the_newest_case(endpoint: Endpoint) -> None:
    await endpoint.case()
    newest = await endpoint.case()
    answered = await endpoint.text_in("the hole\x00 is  bigger now <b>")
    assert "thank you, we passed your message" in answered and "&lt;" not in answered
    replies = [e.data for e in await endpoint.history(newest) if isinstance(e.data, ResidentReplied)]
    assert replies == [ResidentReplied(text="the hole is bigger now <b>")]


async def test_a_status_callback_lands_on_the_delivery_row(endpoint: Endpoint) -> None:
    case = await endpoint.case()
    sid = endpoint.telephony.taken[0].sid
    reported = await endpoint.post(
        STATUS_PATH, {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    )
    assert reported.status_code == 204
    assert (
        await endpoint.post(STATUS_PATH, {"MessageSid": sid, "MessageStatus": "delivered"}, signature="x")
    ).status_code == 403
    async with endpoint.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT provider_status, provider_error FROM notifier.deliveries WHERE case_id = :c"),
                {"c": case.case_id},
            )
        ).one()
    assert (row.provider_status, row.provider_error) == ("undelivered", 30003)


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"From=%2B13125550177&Body=%FF%FE", 400),  # not UTF-8 once decoded
        (b"From=%2B13125550177&Body=\xff\xfe", 400),  # not UTF-8 as sent
        (b"From=%2B13125550177&Body=" + b"x" * 40_000, 413),
    ],
)
async def test_hostile_bodies_are_refused_before_anything_changes(
    endpoint: Endpoint, content: bytes, status: int
) -> None:
    case = await endpoint.case()
    answered = await endpoint.client.post(
        INBOUND_PATH,
        content=content,
        headers={"content-type": "application/x-www-form-urlencoded", SIGNATURE_HEADER: "x"},
    )
    assert answered.status_code == status
    assert PHONE not in answered.text
    assert [e.type for e in await endpoint.history(case)] == ["CaseSubmitted", "NotificationSent"]


async def test_a_sender_that_is_not_a_number_is_refused(endpoint: Endpoint) -> None:
    answered = await endpoint.post(INBOUND_PATH, {"From": "client:alice", "Body": "STOP"})
    assert answered.status_code == 400 and "From" in answered.text


async def test_a_text_the_provider_sends_again_is_answered_the_same_and_acted_on_once(endpoint: Endpoint) -> None:
    case = await endpoint.case()
    sid = new_sid()

    answers = await asyncio.gather(*(endpoint.text_in("the hole is bigger now", sid=sid) for _ in range(3)))
    answers.append(await endpoint.text_in("the hole is bigger now", sid=sid))  # a retry after the first answer

    assert len(set(answers)) == 1 and "we passed your message" in answers[0]
    replies = [e.data for e in await endpoint.history(case) if isinstance(e.data, ResidentReplied)]
    assert replies == [ResidentReplied(text="the hole is bigger now")]
    async with endpoint.engine.connect() as conn:
        kept = (
            await conn.execute(text("SELECT * FROM notifier.inbound_messages WHERE message_sid = :s"), {"s": sid})
        ).one()
    assert "the hole" not in str(kept) and "3125550177" not in str(kept), "the number or the text is kept"


async def test_a_replayed_start_does_not_subscribe_a_number_that_texted_stop_since(endpoint: Endpoint) -> None:
    await endpoint.case()
    start = new_sid()
    await endpoint.text_in("STOP")
    assert "texts about your requests again" in await endpoint.text_in("START", sid=start)
    await endpoint.text_in("STOP")

    replayed = await endpoint.text_in("START", sid=start)

    assert "texts about your requests again" in replayed, "the replay hears what the first START heard"
    later = await endpoint.case()
    told = [e.data for e in await endpoint.history(later) if isinstance(e.data, NotificationFailed)]
    assert told == [NotificationFailed(stage="submitted", channel="sms", reason="the resident texted STOP")]


@pytest.mark.parametrize(
    ("form", "names"),
    [
        ({"From": "+\u0661\u0662\u0663\u0665\u0665\u0665\u0660\u0661\u0667\u0667", "Body": "START"}, "From"),
        ({"From": "+1312\u00b2555017", "Body": "START"}, "From"),
        ({"From": "+013125550177", "Body": "START"}, "From"),
        ({"From": "+1" + "3" * 15, "Body": "START"}, "From"),
        ({"From": PHONE, "Body": "START"}, "MessageSid"),
        ({"From": PHONE, "Body": "START", "MessageSid": ""}, "MessageSid"),
        ({"From": PHONE, "Body": "START", "MessageSid": "SM\u0661"}, "MessageSid"),
        ({"From": PHONE, "Body": "START", "MessageSid": "SM\x00"}, "MessageSid"),
        ({"From": PHONE, "Body": "START", "MessageSid": "SM" + "a" * 5000}, "MessageSid"),
    ],
)
async def test_a_signed_text_with_a_malformed_sender_or_sid_is_refused_naming_it_and_changes_nothing(
    endpoint: Endpoint, form: dict[str, str], names: str
) -> None:
    await endpoint.case()
    await endpoint.text_in("STOP")

    answered = await endpoint.post(INBOUND_PATH, form)

    assert answered.status_code == 400 and answered.text.startswith(names)
    assert PHONE not in answered.text
    await endpoint.case()
    assert len(endpoint.telephony.bodies_to(PHONE)) == 1, "a malformed START subscribed the number again"
