"""Texts due in quiet hours wait in the database and go once the hours open: never dropped, never twice (a
crash after the provider took one), and not at all to a number that texted STOP while it waited."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import CaseSubmitted, EventMetadata, Location, NotificationFailed, NotificationSent, RecordedEvent
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import UnitOfWork, in_order
from services.notifier.claims import LEASE
from services.notifier.deferred_texts import DeferredTexts
from services.notifier.domain import MessageTemplates
from services.notifier.main import NotificationHandler
from services.notifier.quiet_hours import QuietHours
from services.notifier.sms import TextTemplates
from services.notifier.telephony import Telephony
from services.notifier.texting import TextDelivery
from tests.held_telephony import HeldTelephony
from tests.telephony_double import CrashedAfterTaking, InMemoryTelephony

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
CHICAGO = ZoneInfo("America/Chicago")
PHONE = "+13125550163"  # in the 555-01xx range kept for fiction
OTHER_PHONE = "+13125550164"
# far in the future, so no row of another test (or of the wall clock) is due at these moments
NIGHT = datetime(2031, 1, 14, 23, 30, tzinfo=CHICAGO)
MORNING = datetime(2031, 1, 15, 8, 0, tzinfo=CHICAGO)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Notifier:
    def __init__(self, engine: AsyncEngine, tmp_path: Path) -> None:
        self.engine = engine
        self.vault = ContactVault(load_master_key("", tmp_path))
        self.clock = Clock(NIGHT)
        self.telephony = InMemoryTelephony(clock=self.clock)
        self.key = uuid4().bytes
        self.texts = self.delivery(self.telephony)
        policy = NotificationHandler(engine, self.vault, object(), MessageTemplates(CHICAGO), "311 <a@b>", self.texts)  # type: ignore[arg-type]
        unit = UnitOfWork(engine, "notifier", STORE)
        self.notify = lambda event: unit.run([event], in_order({event.type: policy}))
        self.deferred = DeferredTexts(engine, STORE, self.vault, self.texts, clock=self.clock)

    def delivery(self, telephony: Telephony) -> TextDelivery:
        return TextDelivery(
            self.engine, telephony, TextTemplates(CHICAGO), self.key, quiet=QuietHours(CHICAGO), clock=self.clock
        )

    def replica(self, telephony: Telephony) -> DeferredTexts:
        """The deferred-text task of another notifier process over the same database."""
        return DeferredTexts(self.engine, STORE, self.vault, self.delivery(telephony), clock=self.clock)

    async def case(self, phone: str = PHONE) -> RecordedEvent:
        case_id = uuid7()
        async with self.engine.begin() as tx:
            sealed = await self.vault.seal(tx, case_id, ResidentContact(phone=phone))
            event = CaseSubmitted(
                tracking_number="T" + case_id.hex[-6:],
                service_code="POTHOLE",
                description="a hole",
                location=Location(lat=41.88, long=-87.63),
                submitted_at=datetime.now(UTC),
                sealed_contact=sealed,
                preferred_channel="sms",
            )
            [recorded] = await STORE.append(
                tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="test")
            )
        return recorded

    async def told(self, case: RecordedEvent) -> list[object]:
        async with self.engine.connect() as conn:
            return [e.data for e in await STORE.read_stream(conn, case.case_id) if e.type.startswith("Notification")]

    async def status(self, case: RecordedEvent) -> str | None:
        async with self.engine.connect() as conn:
            found: str | None = await conn.scalar(
                text("SELECT status FROM notifier.deliveries WHERE case_id = :c AND channel = 'sms'"),
                {"c": case.case_id},
            )
            return found


@pytest.fixture
def notifier(engine: AsyncEngine, tmp_path: Path) -> Notifier:
    return Notifier(engine, tmp_path)


async def test_a_text_due_at_night_waits_survives_a_restart_and_goes_once_at_eight(
    notifier: Notifier, engine: AsyncEngine, tmp_path: Path
) -> None:
    case = await notifier.case()
    await notifier.notify(case)
    assert notifier.telephony.taken == [] and await notifier.told(case) == []
    assert await notifier.status(case) == "deferred"
    await notifier.deferred.send_due()  # still night
    assert notifier.telephony.taken == []

    notifier.clock.now = MORNING
    restarted = DeferredTexts(engine, STORE, notifier.vault, notifier.texts, clock=notifier.clock)  # a new process
    await restarted.send_due()
    await restarted.send_due()
    assert len(notifier.telephony.bodies_to(PHONE)) == 1
    assert await notifier.told(case) == [
        NotificationSent(stage="submitted", channel="sms", message_id=notifier.telephony.taken[0].sid)
    ]
    assert await notifier.status(case) == "sent"


async def test_a_crash_after_the_provider_took_a_deferred_text_is_closed_by_asking_it(notifier: Notifier) -> None:
    case = await notifier.case()
    await notifier.notify(case)
    notifier.clock.now = MORNING
    notifier.telephony.crash_after_taking = True
    with pytest.raises(CrashedAfterTaking):
        await notifier.deferred.send_due()
    notifier.telephony.crash_after_taking = False
    await notifier.deferred.send_due()  # too soon: its sender may still be at work
    assert notifier.telephony.lookups == 0

    notifier.clock.now = MORNING + LEASE + timedelta(minutes=1)
    await notifier.deferred.send_due()
    assert len(notifier.telephony.bodies_to(PHONE)) == 1, "texted twice"
    assert notifier.telephony.lookups == 1
    assert [type(e).__name__ for e in await notifier.told(case)] == ["NotificationSent"]


async def test_a_number_that_texted_stop_while_its_text_waited_is_not_texted(notifier: Notifier) -> None:
    case = await notifier.case()
    await notifier.notify(case)
    async with notifier.engine.begin() as tx:
        await tx.execute(
            text("INSERT INTO notifier.opt_outs (number_digest) VALUES (:d)"), {"d": notifier.texts.digest(PHONE)}
        )
    notifier.clock.now = MORNING
    await notifier.deferred.send_due()
    assert notifier.telephony.taken == []
    assert await notifier.told(case) == [
        NotificationFailed(stage="submitted", channel="sms", reason="the resident texted STOP")
    ]
    assert await notifier.status(case) == "refused"


async def failures(notifier: Notifier, case: RecordedEvent) -> tuple[int, datetime]:
    async with notifier.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT failures, not_before FROM notifier.deliveries WHERE case_id = :c AND channel = 'sms'"),
                {"c": case.case_id},
            )
        ).one()
    return row.failures, row.not_before


async def test_of_two_replicas_on_a_lapsed_row_one_asks_the_provider_and_one_text_goes(notifier: Notifier) -> None:
    case = await notifier.case()
    await notifier.notify(case)
    notifier.clock.now = MORNING
    notifier.telephony.down = True  # claimed, then the provider cannot be reached: the row stays 'sending'
    await notifier.deferred.send_due()
    assert await notifier.status(case) == "sending" and notifier.telephony.taken == []
    notifier.telephony.down = False

    notifier.clock.now = MORNING + LEASE + timedelta(minutes=1)
    held = HeldTelephony(notifier.telephony, hold_at="texts_to")  # replica A has asked, and heard of no text
    first = asyncio.create_task(notifier.replica(held).send_due())
    await held.held()
    await notifier.replica(notifier.telephony).send_due()  # replica B meanwhile
    held.released.set()
    await first

    assert len(notifier.telephony.bodies_to(PHONE)) == 1, "texted twice"
    assert notifier.telephony.lookups == 1
    assert [type(e).__name__ for e in await notifier.told(case)] == ["NotificationSent"]


async def test_a_row_the_task_fails_on_is_put_off_and_the_rows_behind_it_still_go(notifier: Notifier) -> None:
    failing, behind = await notifier.case(), await notifier.case(OTHER_PHONE)
    await notifier.notify(failing)
    await notifier.notify(behind)
    async with notifier.engine.begin() as tx:  # the failing row first in line
        await tx.execute(
            text("UPDATE notifier.deliveries SET not_before = not_before - interval '1 minute' WHERE case_id = :c"),
            {"c": failing.case_id},
        )
    notifier.clock.now = MORNING
    down_for_one = HeldTelephony(notifier.telephony, down_for=PHONE)
    task = notifier.replica(down_for_one)
    await task.send_due()
    assert len(notifier.telephony.bodies_to(OTHER_PHONE)) == 1
    assert await failures(notifier, failing) == (1, MORNING + timedelta(minutes=1))
    await task.send_due()  # not first forever: it waits its backoff
    assert await failures(notifier, failing) == (1, MORNING + timedelta(minutes=1))

    notifier.clock.now = MORNING + LEASE + timedelta(seconds=1)
    await notifier.deferred.send_due()  # the provider answers for it again
    assert len(notifier.telephony.bodies_to(PHONE)) == 1
    assert [type(e).__name__ for e in await notifier.told(failing)] == ["NotificationSent"]
