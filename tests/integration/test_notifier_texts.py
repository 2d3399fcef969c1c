"""The notifier's texts against real PostgreSQL and an in-memory telephony double: one text per stage,
never twice (a redelivery, the crash between the provider taking a text and our commit), STOP honoured on
a later case, a refusal recorded with the provider's code and never the number, an outage retried."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

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
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import Decision, Reads, UnitOfWork, in_order
from services.notifier.claims import LEASE, ClaimHeld
from services.notifier.domain import MessageTemplates
from services.notifier.inbound_texts import StatusReports
from services.notifier.main import NotificationHandler
from services.notifier.sms import TextTemplates
from services.notifier.telephony import Telephony, TelephonyUnavailable
from services.notifier.texting import TextDelivery, number_digest
from tests.conftest import eventually
from tests.held_telephony import HeldTelephony
from tests.telephony_double import CrashedAfterTaking, InMemoryTelephony

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
UTC_ZONE = ZoneInfo("UTC")
PHONE = "+13125550142"  # in the 555-01xx range kept for fiction
NOON = datetime(2026, 11, 30, 12, tzinfo=UTC)  # the consumers' clock: what a claim's lease is measured by


@pytest.fixture
def vault(tmp_path: Path) -> ContactVault:
    return ContactVault(load_master_key("", tmp_path))


@pytest.fixture
def key() -> bytes:
    """A digest key of the test's own, so one test's opt-out or case numbers are not another's."""
    return uuid4().bytes


async def append(engine: AsyncEngine, case: RecordedEvent, event: CaseEvent) -> RecordedEvent:
    async with engine.begin() as tx:
        [recorded] = await STORE.append(
            tx, case.case_id, None, [event], EventMetadata(correlation_id=uuid7(), actor="test")
        )
    return recorded


async def texted_case(engine: AsyncEngine, vault: ContactVault, phone: str, **preferences: str) -> RecordedEvent:
    case_id = uuid7()
    async with engine.begin() as tx:
        sealed = await vault.seal(tx, case_id, ResidentContact(phone=phone))
        event = CaseSubmitted(
            tracking_number="T" + case_id.hex[-6:],
            service_code="POTHOLE",
            description="a hole",
            location=Location(lat=41.88, long=-87.63),
            submitted_at=datetime.now(UTC),
            sealed_contact=sealed,
            preferred_channel="sms",
            **preferences,  # type: ignore[arg-type]
        )
        [recorded] = await STORE.append(tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="test"))
    return recorded


def routed() -> CaseRouted:
    return CaseRouted(
        department_id="streets",
        department_name="Public Works - Streets",
        priority="normal",
        due_at=datetime.now(UTC) + timedelta(days=2),
        rule_id="potholes",
        rule_set_version="test",
    )


def handler(
    engine: AsyncEngine,
    vault: ContactVault,
    telephony: Telephony,
    key: bytes,
    now: datetime = NOON,
    batch_fails: bool = False,
) -> Callable[[RecordedEvent], Awaitable[int]]:
    """The notifier's policy as its consumer runs it at `now`, each event in a unit of work of its own (one that
    fails after deciding, with `batch_fails`: another event of its batch, say)."""
    texts = TextDelivery(engine, telephony, TextTemplates(UTC_ZONE), key, clock=lambda: now)
    policy = NotificationHandler(engine, vault, _no_mail(), MessageTemplates(UTC_ZONE), "311 <a@b>", texts)

    async def then_fails(event: RecordedEvent, reads: Reads) -> Decision:
        await policy(event, reads)
        raise RuntimeError("the batch failed after deciding")

    unit = UnitOfWork(engine, "notifier", STORE)
    return lambda event: unit.run([event], in_order({event.type: then_fails if batch_fails else policy}))


def _no_mail() -> object:
    class NoMail:
        async def send(self, message: object) -> None:
            raise AssertionError("a resident who chose texts was emailed")

    return NoMail()


async def outcomes(engine: AsyncEngine, case: RecordedEvent) -> list[CaseEvent]:
    async with engine.connect() as conn:
        history = await STORE.read_stream(conn, case.case_id)
    return [e.data for e in history if isinstance(e.data, NotificationSent | NotificationFailed)]


async def row_status(engine: AsyncEngine, case: RecordedEvent, stage: str) -> str | None:
    async with engine.connect() as conn:
        status: str | None = await conn.scalar(
            text("SELECT status FROM notifier.deliveries WHERE case_id = :c AND stage = :s AND channel = 'sms'"),
            {"c": case.case_id, "s": stage},
        )
        return status


async def test_one_text_per_stage_in_the_resident_language_and_a_redelivery_sends_nothing(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    phone = PHONE
    telephony = InMemoryTelephony()
    notify = handler(engine, vault, telephony, key)
    case = await texted_case(engine, vault, phone, language="es")
    stages = [case, await append(engine, case, routed())]
    stages.append(
        await append(engine, case, CaseResolved(resolution="Bache rellenado.", resolved_at=datetime.now(UTC)))
    )
    for event in stages:
        await notify(event)
        await notify(event)  # a redelivery (the inbox drops it)

    bodies = telephony.bodies_to(phone)
    assert len(bodies) == 3
    assert "recibimos su solicitud" in bodies[0] and case.data.tracking_number in bodies[0]  # type: ignore[attr-defined]
    assert "pasó a Public Works - Streets" in bodies[1]
    assert "Bache rellenado." in bodies[2]
    told = await outcomes(engine, case)
    assert [(o.stage, o.channel) for o in told] == [("submitted", "sms"), ("routed", "sms"), ("resolved", "sms")]  # type: ignore[attr-defined]
    assert [o.message_id for o in told] == [m.sid for m in telephony.taken]  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        history = await STORE.read_stream(conn, case.case_id)
        stored = await conn.scalar(
            text("SELECT count(*) FROM notifier.case_numbers WHERE number_digest = :d AND case_id = :c"),
            {"d": number_digest(phone, key), "c": case.case_id},
        )
    assert stored == 1
    assert phone not in "".join(e.model_dump_json() for e in history)
    assert phone.lstrip("+") not in "".join(e.model_dump_json() for e in history)


async def test_the_crash_after_the_provider_took_a_text_is_closed_by_asking_the_provider(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    phone = PHONE
    telephony = InMemoryTelephony(crash_after_taking=True)
    case = await texted_case(engine, vault, phone)

    with pytest.raises(CrashedAfterTaking):  # the process dies before the batch commits
        await handler(engine, vault, telephony, key)(case)
    assert await row_status(engine, case, "submitted") == "sending"
    assert await outcomes(engine, case) == []

    telephony.crash_after_taking = False
    with pytest.raises(ClaimHeld):  # a redelivery while the dead consumer's claim is live waits for it to lapse
        await handler(engine, vault, telephony, key)(case)
    assert telephony.lookups == 0
    await handler(engine, vault, telephony, key, NOON + LEASE)(case)  # the redelivery after the restart

    assert len(telephony.bodies_to(phone)) == 1, "texted twice"
    assert telephony.lookups == 1
    assert await outcomes(engine, case) == [
        NotificationSent(stage="submitted", channel="sms", message_id=telephony.taken[0].sid)
    ]
    assert await row_status(engine, case, "submitted") == "sent"


async def test_a_redelivery_that_finds_nothing_at_the_provider_texts(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    phone = PHONE
    telephony = InMemoryTelephony(down=True)
    case = await texted_case(engine, vault, phone)
    with pytest.raises(TelephonyUnavailable):  # the consumer retries
        await handler(engine, vault, telephony, key)(case)
    assert await row_status(engine, case, "submitted") == "sending"
    assert await outcomes(engine, case) == []

    telephony.down = False
    await handler(engine, vault, telephony, key, NOON + LEASE)(case)  # retried once the claim lapsed
    assert len(telephony.bodies_to(phone)) == 1 and telephony.lookups == 1
    assert [o.channel for o in await outcomes(engine, case)] == ["sms"]  # type: ignore[attr-defined]


async def test_a_number_that_texted_stop_gets_no_text_on_a_later_case(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    phone = PHONE
    telephony = InMemoryTelephony()
    async with engine.begin() as tx:
        await tx.execute(
            text("INSERT INTO notifier.opt_outs (number_digest) VALUES (:d)"), {"d": number_digest(phone, key)}
        )
    case = await texted_case(engine, vault, phone)
    await handler(engine, vault, telephony, key)(case)
    assert telephony.taken == []
    assert await outcomes(engine, case) == [
        NotificationFailed(stage="submitted", channel="sms", reason="the resident texted STOP")
    ]


async def test_a_refused_text_is_recorded_with_the_provider_code_never_the_number(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    phone = PHONE
    telephony = InMemoryTelephony(refuse_with=21211)
    case = await texted_case(engine, vault, phone)
    notify = handler(engine, vault, telephony, key)
    await notify(case)
    await notify(case)
    told = await outcomes(engine, case)
    assert told == [
        NotificationFailed(stage="submitted", channel="sms", reason="the provider refused the text (error 21211)")
    ]
    assert await row_status(engine, case, "submitted") == "refused"


async def test_a_resident_who_wants_only_the_outcome_is_texted_only_the_resolution(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    phone = PHONE
    telephony = InMemoryTelephony()
    notify = handler(engine, vault, telephony, key)
    case = await texted_case(engine, vault, phone, updates="outcome")
    await notify(case)
    await notify(await append(engine, case, routed()))
    await notify(await append(engine, case, CaseResolved(resolution="Filled.", resolved_at=datetime.now(UTC))))
    assert [b.split(":")[1].strip() for b in telephony.bodies_to(phone)] == ["your request is resolved. Filled."]
    assert [(o.stage, o.channel) for o in await outcomes(engine, case)] == [("resolved", "sms")]  # type: ignore[attr-defined]


async def test_a_consumer_that_finds_another_at_the_provider_waits_and_the_text_goes_once(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = InMemoryTelephony()
    held = HeldTelephony(telephony, hold_at="send_text")  # consumer A, about to hand the text over
    case = await texted_case(engine, vault, PHONE)
    first = asyncio.create_task(handler(engine, vault, held, key)(case))
    await held.held()
    with pytest.raises(ClaimHeld):  # consumer B, after a rebalance: retried, not texted
        await handler(engine, vault, telephony, key)(case)
    assert telephony.taken == [] and telephony.lookups == 0
    held.released.set()
    await first
    await handler(engine, vault, telephony, key)(case)  # B's retry: the stage is told
    assert len(telephony.bodies_to(PHONE)) == 1, "texted twice"
    assert [type(o).__name__ for o in await outcomes(engine, case)] == ["NotificationSent"]


async def test_a_report_after_the_batch_failed_finds_its_text_and_the_redelivery_texts_nothing(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = InMemoryTelephony()
    case = await texted_case(engine, vault, PHONE)
    with pytest.raises(RuntimeError):  # the provider took the text; the batch did not commit
        await handler(engine, vault, telephony, key, batch_fails=True)(case)
    [message] = telephony.taken
    assert await row_status(engine, case, "submitted") == "sending"

    reports = StatusReports(engine, STORE, vault)
    assert await reports(message.sid, "undelivered", 30003), "the report found no text of ours"
    await handler(engine, vault, telephony, key)(case)  # the redelivery: the kept sid is the outcome

    assert len(telephony.bodies_to(PHONE)) == 1 and telephony.lookups == 0
    async with engine.connect() as conn:
        history = [e.data for e in await STORE.read_stream(conn, case.case_id)]
    assert NotificationSent(stage="submitted", channel="sms", message_id=message.sid) in history
    assert (
        NotificationDelivered(stage="submitted", channel="sms", outcome="undelivered", attempt=1, error_code=30003)
        in history
    )
    assert await row_status(engine, case, "submitted") == "sent"


async def test_a_report_that_comes_before_the_batch_commits_is_kept_and_lands_after_the_sent_event(
    engine: AsyncEngine, vault: ContactVault, key: bytes
) -> None:
    telephony = InMemoryTelephony()
    texts = TextDelivery(engine, telephony, TextTemplates(UTC_ZONE), key, clock=lambda: NOON)
    policy = NotificationHandler(engine, vault, _no_mail(), MessageTemplates(UTC_ZONE), "311 <a@b>", texts)
    reports = StatusReports(engine, STORE, vault)
    early: list[asyncio.Task[bool]] = []

    async def report_before_commit(event: RecordedEvent, reads: Reads) -> Decision:
        decided = await policy(event, reads)
        [message] = telephony.taken  # the provider's report, while the batch has yet to commit
        early.append(asyncio.create_task(reports(message.sid, "delivered", None)))

        async def reported_or_waiting() -> bool:
            if early[0].done():
                return True
            async with engine.connect() as conn:
                waiting = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE 'UPDATE notifier.deliveries SET provider_status%'"
                    )
                )
            return bool(waiting)

        await eventually(reported_or_waiting, what="the report to be handled or to wait for the batch")
        return decided

    case = await texted_case(engine, vault, PHONE)
    await UnitOfWork(engine, "notifier", STORE).run([case], in_order({case.type: report_before_commit}))
    assert await early[0], "the report found no text of ours"
    async with engine.connect() as conn:
        told = [e.data for e in await STORE.read_stream(conn, case.case_id) if e.type.startswith("Notification")]
    sid = telephony.taken[0].sid
    assert told == [
        NotificationSent(stage="submitted", channel="sms", message_id=sid),
        NotificationDelivered(stage="submitted", channel="sms", outcome="delivered", attempt=1),
    ]
