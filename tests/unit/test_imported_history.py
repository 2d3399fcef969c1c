"""Imported history does not act on today's world: routed on its original time, but no work order, no
notification, no overdue watch, and a case the old system closed stays resolved in the view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import (
    CaseRecategorised,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    ImportedFrom,
    Location,
    RecordedEvent,
)
from civicflow.eventstore import EventStore, StreamAppend
from civicflow.ids import uuid7
from civicflow.pii import ContactVault
from civicflow.settings import SAMPLE_CITY
from services.intake.domain import ServiceRequest
from services.intake.handlers import Submission
from services.intake.importer import closing
from services.notifier.domain import MessageTemplates
from services.notifier.main import NotificationHandler
from services.query.projection import CaseRecord, apply
from services.router.handlers import Router
from services.router.rulebook import RuleBook, load_rules
from services.workorder_bridge.opener import WorkOrderOpener
from tests.factories import recorded
from tests.fake_store import StoredStreams

CHICAGO = ZoneInfo("America/Chicago")
SATURDAY_NIGHT = datetime(2026, 3, 14, 23, 30, tzinfo=CHICAGO)  # a Saturday, long after office hours
CLOSED = SATURDAY_NIGHT + timedelta(days=2)
TODAY = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
IMPORTED = ImportedFrom(source="oldcrm", external_id="SR-1", closed_at=CLOSED, status="closed")


def submitted(service_code: str = "ANIMAL_BITE", imported: ImportedFrom | None = IMPORTED) -> CaseSubmitted:
    return CaseSubmitted(
        tracking_number="QGPE-J5T",
        service_code=service_code,
        description="bitten by a dog at the bus stop",
        location=Location(lat=41.88, long=-87.63),
        submitted_at=SATURDAY_NIGHT,
        sealed_contact="sealed",
        imported=imported,
    )


class FixedRules:
    current = load_rules(SAMPLE_CITY)


class NoOneToCall:
    """Engine, vault, mail server and department in one: any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the policy used {name} for imported history")


async def test_the_router_routes_an_imported_case_on_its_original_time_and_does_not_watch_it() -> None:
    event = recorded(submitted(), case_id=uuid7(), version=1, at=SATURDAY_NIGHT)
    router = Router(cast(AsyncEngine, None), cast(EventStore, None), cast(RuleBook, FixedRules()))

    decision = await router.on_submitted(event, StoredStreams(event).reads_of())

    [append] = decision.appends
    [routed] = append.events
    assert isinstance(routed, CaseRouted)
    assert routed.rule_id == "animal-bite-after-hours"  # Saturday night, not today's office hours
    assert routed.due_at == SATURDAY_NIGHT + timedelta(hours=2)  # around-the-clock calendar, 2 business hours
    assert decision.writes == []  # no router.open_cases row: the overdue scan never sees it


async def test_a_live_case_is_still_watched() -> None:
    event = recorded(submitted(imported=None), case_id=uuid7(), version=1, at=SATURDAY_NIGHT)
    router = Router(cast(AsyncEngine, None), cast(EventStore, None), cast(RuleBook, FixedRules()))
    decision = await router.on_submitted(event, StoredStreams(event).reads_of())
    assert len(decision.writes) == 1


def routed_stream(imported: ImportedFrom | None) -> list[RecordedEvent]:
    case_id = uuid7()
    routed = CaseRouted(
        department_id="animals",
        department_name="Animal Control",
        priority="urgent",
        due_at=SATURDAY_NIGHT + timedelta(hours=2),
        rule_id="animal-bite-after-hours",
        rule_set_version="1",
    )
    return [
        recorded(submitted(imported=imported), case_id=case_id, version=1, at=SATURDAY_NIGHT),
        recorded(routed, case_id=case_id, version=2, at=TODAY),
    ]


async def test_the_bridge_opens_no_work_order_for_an_imported_case() -> None:
    stream = routed_stream(IMPORTED)
    nobody: Any = NoOneToCall()
    opener = WorkOrderOpener(nobody, nobody, nobody, "http://bridge.test/hook", clock=lambda: TODAY)

    decision = await opener(stream[1], StoredStreams(*stream).reads_of())

    assert decision.appends == [] and decision.writes == []


async def test_the_notifier_tells_no_one_of_an_imported_case_at_any_stage() -> None:
    stream = routed_stream(IMPORTED)
    nobody: Any = NoOneToCall()
    policy = NotificationHandler(nobody, cast(ContactVault, nobody), nobody, MessageTemplates(CHICAGO), "311 <a@b>")
    for event in stream:
        decision = await policy(event, StoredStreams(*stream).reads_of())
        assert decision.appends == [] and decision.writes == []


def test_an_imported_closed_case_stays_resolved_though_routed_after_its_closing() -> None:
    case_id = uuid7()
    request = ServiceRequest(
        service_code="ANIMAL_BITE",
        description="bitten",
        location={"lat": 41.88, "long": -87.63},  # type: ignore[arg-type]
    )
    submission = Submission(request, "import:oldcrm:SR-1", "f", "import:oldcrm", SATURDAY_NIGHT, IMPORTED)
    first = StreamAppend(
        case_id,
        0,
        [submitted()],
        recorded(submitted(), case_id=case_id, version=1, at=TODAY).metadata,
        occurred_at=SATURDAY_NIGHT,
    )
    [close] = closing(submission, first)
    assert close.occurred_at == CLOSED
    [resolved] = close.events
    assert isinstance(resolved, CaseResolved) and resolved.resolved_at == CLOSED
    stream = [
        recorded(submitted(), case_id=case_id, version=1, at=SATURDAY_NIGHT),
        recorded(resolved, case_id=case_id, version=2, at=CLOSED),
        routed_stream(IMPORTED)[1].model_copy(update={"case_id": case_id, "version": 3}),
    ]
    record: CaseRecord | None = None
    for event in stream:
        record, _ = apply(record, event)
    assert record is not None and record.status == "resolved" and record.department_id == "animals"
    assert record.submitted_at == SATURDAY_NIGHT


def test_an_open_imported_row_gets_no_closing() -> None:
    request = ServiceRequest(
        service_code="POTHOLE",
        description="deep",
        location={"address": "1200 N Main St"},  # type: ignore[arg-type]
    )
    still_open = ImportedFrom(source="oldcrm", external_id="SR-2", status="open")
    submission = Submission(request, "import:oldcrm:SR-2", "f", "import:oldcrm", SATURDAY_NIGHT, still_open)
    first = StreamAppend(uuid7(), 0, [submitted()], routed_stream(None)[0].metadata, occurred_at=SATURDAY_NIGHT)
    assert closing(submission, first) == []


async def test_an_imported_case_rerouted_after_a_correction_is_still_not_watched() -> None:
    case_id = uuid7()
    stream = [recorded(submitted(imported=IMPORTED), case_id=case_id, version=1, at=SATURDAY_NIGHT)]
    change = CaseRecategorised(service_code="STRAY_DOG", previous_service_code="ANIMAL_BITE", reason="a stray")
    stream.append(recorded(change, case_id=case_id, version=2, at=TODAY))
    router = Router(cast(AsyncEngine, None), cast(EventStore, None), cast(RuleBook, FixedRules()))

    decision = await router.on_reroute_trigger(stream[1], StoredStreams(*stream).reads_of())

    assert len(decision.appends) == 1 and decision.writes == []
