"""Asking the provider about texts whose final delivery report never came (services/notifier/status_checks.py),
against real PostgreSQL and the in-memory telephony double: a report that never came is found and recorded once,
also when it comes both ways or two replicas ask at once; a text still on its way is asked again, less often; one
sent more than a day ago is left alone; a provider that is down, forgot a text or answers unreadably holds up no
other text. And a callback that meets another writer on its case is decided again, not lost."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.events import (
    CaseEvent,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    NotificationDelivered,
    NotificationFailed,
    RecordedEvent,
    ResidentReplied,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import UnitOfWork, in_order
from services.notifier.calls import CallDelivery, deferred_row
from services.notifier.domain import MessageTemplates
from services.notifier.inbound_texts import FINAL, StatusReports
from services.notifier.main import NotificationHandler
from services.notifier.sms import TextTemplates
from services.notifier.status_checks import ASKED_FOR, TAKE_DUE, TextStatusChecks
from services.notifier.texting import TextDelivery
from services.notifier.voice import CallScripts
from tests.telephony_double import InMemoryTelephony

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
ZONE = ZoneInfo("UTC")
PHONE = "+13125550146"  # in the 555-01xx range kept for fiction
EVERY = timedelta(minutes=2)
# Each test's clock stands three days apart from any other's, long before any other test's rows (the tasks read
# every row of the shared database, by time): this test's texts are the only ones its checks can find.
_ERA = datetime(1700, 1, 1, tzinfo=UTC)


class Notifier:
    """The notifier's texting policy, its delivery reports and the status checks, at a clock of the test's own,
    over one database and one telephony double."""

    def __init__(self, engine: AsyncEngine, vault: ContactVault) -> None:
        self.engine = engine
        self.vault = vault
        self.telephony = InMemoryTelephony()
        self.now = _ERA + timedelta(days=3 * (uuid4().int % 20_000))
        self.key = uuid4().bytes
        self.texts = TextDelivery(engine, self.telephony, TextTemplates(ZONE), self.key, clock=lambda: self.now)
        self.reports = StatusReports(engine, STORE, vault, clock=lambda: self.now)
        self.checks = self.checker()
        self.sent = self.now
        policy = NotificationHandler(engine, vault, object(), MessageTemplates(ZONE), "311 <a@b>", self.texts)
        unit = UnitOfWork(engine, "notifier", STORE)
        self.notify = lambda event: unit.run([event], in_order({event.type: policy}))

    def checker(self) -> TextStatusChecks:
        """The periodic task as one replica runs it."""
        return TextStatusChecks(self.engine, self.telephony, self.reports, EVERY, clock=lambda: self.now)

    async def case(self, contact: ResidentContact, channel: str = "sms") -> RecordedEvent:
        """A case of a resident who chose `channel`, routed (not yet told)."""
        case_id = uuid7()
        async with self.engine.begin() as tx:
            sealed = await self.vault.seal(tx, case_id, contact)
            submitted = CaseSubmitted(
                tracking_number="T" + case_id.hex[-6:],
                service_code="POTHOLE",
                description="a hole",
                location=Location(lat=41.88, long=-87.63),
                submitted_at=self.now,
                sealed_contact=sealed,
                preferred_channel=channel,
            )
            await STORE.append(tx, case_id, 0, [submitted], EventMetadata(correlation_id=uuid7(), actor="test"))
            routed = CaseRouted(
                department_id="streets",
                department_name="Public Works - Streets",
                priority="normal",
                due_at=self.now + timedelta(days=2),
                rule_id="potholes",
                rule_set_version="test",
            )
            [recorded] = await STORE.append(tx, case_id, 1, [routed], EventMetadata(correlation_id=uuid7(), actor="t"))
        return recorded

    async def texted(self, contact: ResidentContact | None = None) -> tuple[RecordedEvent, str]:
        """A case texted about its routing now: the routing event and the text's sid."""
        routed = await self.case(contact or ResidentContact(phone=PHONE))
        await self.notify(routed)
        return routed, self.telephony.taken[-1].sid

    async def check(self, after: timedelta) -> list[str]:
        """Run the task `after` the texts went (the clock moves there); the sids it asked about."""
        self.now = self.sent + after
        asked = len(self.telephony.status_lookups)
        await self.checks.check_due()
        return self.telephony.status_lookups[asked:]

    def mark_sent(self) -> None:
        """The moment the texts went: later checks are counted from it."""
        self.sent = self.now

    async def told(self, case: RecordedEvent) -> list[CaseEvent]:
        async with self.engine.connect() as conn:
            events = await STORE.read_stream(conn, case.case_id)
        return [e.data for e in events if isinstance(e.data, NotificationDelivered | NotificationFailed)]

    async def row(self, sid: str) -> tuple[str | None, int]:
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(
                    text("SELECT provider_status, status_checks FROM notifier.deliveries WHERE provider_sid = :s"),
                    {"s": sid},
                )
            ).one()
        return found.provider_status, found.status_checks


@pytest.fixture
def notifier(engine: AsyncEngine, tmp_path: Path) -> Notifier:
    return Notifier(engine, ContactVault(load_master_key("", tmp_path)))


DELIVERED = NotificationDelivered(stage="routed", channel="sms", outcome="delivered", attempt=1)


async def test_a_report_that_never_came_is_found_at_the_provider_and_recorded_once(notifier: Notifier) -> None:
    case, sid = await notifier.texted()
    notifier.mark_sent()
    notifier.telephony.move(sid, "delivered")  # the provider's callback never reached us

    assert await notifier.check(after=EVERY - timedelta(seconds=1)) == []  # not yet: the callback may still come
    assert await notifier.check(after=EVERY) == [sid]
    assert await notifier.told(case) == [DELIVERED]
    assert await notifier.row(sid) == ("delivered", 1)

    assert await notifier.reports(sid, "delivered", None)  # the callback after all: changes nothing
    assert await notifier.check(after=timedelta(hours=3)) == []  # final: never asked again
    assert await notifier.told(case) == [DELIVERED]


async def test_a_report_that_comes_both_ways_at_once_is_recorded_once(notifier: Notifier) -> None:
    cases = [await notifier.texted() for _ in range(4)]
    notifier.mark_sent()
    for _, sid in cases:
        notifier.telephony.move(sid, "delivered")
    notifier.now = notifier.sent + EVERY
    await asyncio.gather(notifier.checks.check_due(), *(notifier.reports(sid, "delivered", None) for _, sid in cases))
    for case, _ in cases:
        assert await notifier.told(case) == [DELIVERED]


async def test_an_undelivered_text_reported_both_ways_at_once_is_one_failure(notifier: Notifier) -> None:
    # no email to fall back to (a fallback email row would be sent by the calls' task, which other tests run)
    case, sid = await notifier.texted(ResidentContact(phone=PHONE))
    notifier.mark_sent()
    notifier.telephony.move(sid, "undelivered", 30003)

    await asyncio.gather(notifier.check(after=EVERY), notifier.reports(sid, "undelivered", 30003))

    assert await notifier.told(case) == [
        NotificationDelivered(stage="routed", channel="sms", outcome="undelivered", attempt=1, error_code=30003),
        NotificationFailed(
            stage="routed", channel="sms", reason="the text was not delivered (error 30003), and no email"
        ),
    ]


async def test_two_replicas_never_ask_about_one_text_twice(notifier: Notifier) -> None:
    sids = [(await notifier.texted())[1] for _ in range(6)]
    notifier.mark_sent()
    notifier.now = notifier.sent + EVERY
    other = notifier.checker()
    await asyncio.gather(notifier.checks.check_due(), other.check_due())
    asked = [sid for sid in notifier.telephony.status_lookups if sid in sids]
    assert sorted(asked) == sorted(sids)  # each once, by one replica or the other


async def test_a_text_still_on_its_way_is_asked_again_less_and_less_often_then_left(notifier: Notifier) -> None:
    case, sid = await notifier.texted()
    notifier.mark_sent()
    notifier.telephony.move(sid, "sent")  # a carrier that never reports
    day = int(ASKED_FOR.total_seconds() // 60)
    asked_at = [m for m in range(0, day + 180, 2) if await notifier.check(after=timedelta(minutes=m))]
    # two minutes after sending, then after 2, 4, 8… minutes more, then every 64 minutes until a day has passed
    assert asked_at[:7] == [2, 4, 8, 16, 32, 64, 128]
    assert all(later - earlier == 64 for earlier, later in itertools.pairwise(asked_at[6:]))
    assert day - 64 < asked_at[-1] < day
    assert await notifier.told(case) == [] and await notifier.row(sid) == ("sent", len(asked_at))


async def test_a_text_sent_more_than_a_day_ago_is_left_alone(notifier: Notifier) -> None:
    case, sid = await notifier.texted()
    notifier.mark_sent()
    notifier.telephony.move(sid, "delivered")
    assert await notifier.check(after=ASKED_FOR) == []
    assert await notifier.told(case) == [] and await notifier.row(sid) == (None, 0)


async def test_a_provider_down_or_forgetful_or_unreadable_holds_up_no_other_text(notifier: Notifier) -> None:
    (forgotten_case, forgotten), (unreadable_case, unreadable), (case, sid) = [
        await notifier.texted() for _ in range(3)
    ]
    notifier.mark_sent()
    notifier.telephony.forget(forgotten)  # as the sample provider after a restart: 404
    notifier.telephony.move(unreadable, "délivré", 30003)
    notifier.telephony.move(sid, "delivered")
    notifier.telephony.down = True
    assert sorted(await notifier.check(after=EVERY)) == sorted([forgotten, unreadable, sid])  # no exception
    assert [await notifier.told(c) for c in (forgotten_case, unreadable_case, case)] == [[], [], []]

    notifier.telephony.down = False
    assert sorted(await notifier.check(after=2 * EVERY)) == sorted([forgotten, unreadable, sid])
    assert await notifier.told(case) == [DELIVERED]
    assert await notifier.told(forgotten_case) == [] and await notifier.told(unreadable_case) == []
    assert await notifier.row(unreadable) == (None, 2)  # nothing of the unreadable answer kept

    notifier.telephony.move(unreadable, "failed", 30006)  # readable at its next turn
    assert sorted(await notifier.check(after=4 * EVERY)) == sorted([forgotten, unreadable])
    [told, failed] = await notifier.told(unreadable_case)
    assert (told, failed) == (
        NotificationDelivered(stage="routed", channel="sms", outcome="failed", attempt=1, error_code=30006),
        NotificationFailed(
            stage="routed", channel="sms", reason="the text was not delivered (error 30006), and no email"
        ),
    )


async def test_a_calls_fallback_text_is_asked_about_too(notifier: Notifier) -> None:
    case = await notifier.case(ResidentContact(phone=PHONE), channel="voice")
    calls = CallDelivery(
        notifier.engine,
        notifier.telephony,
        CallScripts(ZONE, "http://notifier.test"),
        notifier.key,
        clock=lambda: notifier.now,
        texts=notifier.texts,
    )
    # the calls went unanswered: the message falls back to a text (as CallOutcomes writes it after the last call)
    fallback = deferred_row(case.case_id, "routed", 5, case.event_id, notifier.now, "sms")
    async with notifier.engine.begin() as tx:
        await tx.execute(fallback.sql, fallback.params)
    assert await calls.send_due(STORE, notifier.vault) == 1
    sid = notifier.telephony.taken[-1].sid
    notifier.mark_sent()
    notifier.telephony.move(sid, "delivered")

    assert await notifier.check(after=EVERY) == [sid]
    [told] = await notifier.told(case)
    assert isinstance(told, NotificationDelivered) and (told.channel, told.outcome) == ("sms", "delivered")


async def test_texts_already_told_by_their_callback_are_not_asked_about(notifier: Notifier) -> None:
    case, sid = await notifier.texted()
    notifier.mark_sent()
    assert await notifier.reports(sid, "delivered", None)
    assert await notifier.check(after=EVERY) == []
    assert await notifier.told(case) == [DELIVERED]


class CutIn(PostgresEventStore):
    """The event store, with another writer (the router, the bridge) appending to the case in a transaction of its
    own, younger than the reader's, just before the reader's first append: the real store's conflict, on cue."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self._engine = engine
        self.cut_in = 1

    async def append(
        self,
        tx: AsyncConnection,
        case_id: UUID,
        expected_version: int | None,
        events: Sequence[CaseEvent],
        metadata: EventMetadata,
        occurred_at: datetime | None = None,
    ) -> list[RecordedEvent]:
        if self.cut_in:
            self.cut_in -= 1
            async with self._engine.begin() as other:
                reply = [ResidentReplied(text="thanks")]
                await super().append(other, case_id, None, reply, EventMetadata(correlation_id=uuid7(), actor="t"))
        return await super().append(tx, case_id, expected_version, events, metadata, occurred_at)


async def test_a_callback_that_meets_another_writer_on_its_case_is_decided_again_not_lost(
    notifier: Notifier,
) -> None:
    case, sid = await notifier.texted()
    store = CutIn(notifier.engine)
    reports = StatusReports(notifier.engine, store, notifier.vault, clock=lambda: notifier.now)
    assert await reports(sid, "delivered", None)
    assert store.cut_in == 0  # the other writer did cut in
    assert await notifier.told(case) == [DELIVERED]


def test_the_checks_skip_exactly_the_statuses_a_report_settles_on() -> None:
    # the SQL spells them out (its partial index, notifier migration 0008, must match it word for word)
    spelt = "coalesce(provider_status, '') NOT IN (" + ", ".join(f"'{s}'" for s in sorted(FINAL)) + ")"
    assert spelt in str(TAKE_DUE)
