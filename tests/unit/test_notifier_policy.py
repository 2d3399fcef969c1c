"""The notifier's policy decides without a database when nobody is to be called."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from civicflow.events import CaseSubmitted, Location, NotificationFailed, NotificationSent
from civicflow.eventstore import StreamAppend
from civicflow.ids import uuid7
from civicflow.pii import ContactVault
from services.notifier.domain import MessageTemplates
from services.notifier.main import NotificationHandler
from tests.factories import recorded
from tests.fake_store import StoredStreams

AT = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


class NoOneToCall:
    """Engine, vault and mail server in one: any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the policy used {name} when it had no one to tell")


def a_policy() -> NotificationHandler:
    nobody: Any = NoOneToCall()
    templates = MessageTemplates(ZoneInfo("UTC"))
    return NotificationHandler(nobody, cast(ContactVault, nobody), nobody, templates, "311 <a@b>")


def submitted(sealed: str | None) -> CaseSubmitted:
    return CaseSubmitted(
        tracking_number="QGPE-J5T",
        service_code="POTHOLE",
        description="a hole",
        location=Location(lat=41.88, long=-87.63),
        submitted_at=AT,
        sealed_contact=sealed,
    )


async def test_a_resident_who_left_no_contact_is_told_nothing_and_nothing_is_recorded() -> None:
    event = recorded(submitted(None), case_id=uuid7(), version=1, at=AT)
    decision = await a_policy()(event, StoredStreams(event).reads_of())
    assert decision.appends == [] and decision.writes == []


async def test_a_stage_told_earlier_in_the_batch_is_not_told_again() -> None:
    event = recorded(submitted("sealed"), case_id=uuid7(), version=1, at=AT)
    store = StoredStreams(event)
    reads = store.reads_of()
    sent = NotificationSent(stage="submitted", channel="email", message_id="<m>")
    await reads.stage([StreamAppend(event.case_id, None, [sent], event.caused("notifier"))])

    decision = await a_policy()(event, reads)

    assert decision.appends == []


async def test_a_stage_that_failed_earlier_in_the_batch_is_not_tried_again() -> None:
    event = recorded(submitted("sealed"), case_id=uuid7(), version=1, at=AT)
    reads = StoredStreams(event).reads_of()
    failed = NotificationFailed(stage="submitted", channel="sms", reason="channel not yet supported")
    await reads.stage([StreamAppend(event.case_id, None, [failed], event.caused("notifier"))])
    assert (await a_policy()(event, reads)).appends == []
