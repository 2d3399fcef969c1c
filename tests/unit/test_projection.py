"""The case read model as a fold: stages in order, duplicates ignored, no resident data."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseOverdue,
    CaseReopened,
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    Location,
    NotificationDelivered,
    NotificationSent,
    RecordedEvent,
    ResolutionDisputed,
    WorkOrderCancelled,
    WorkOrderOpened,
    WorkOrderReferred,
    WorkOrderStatusChanged,
)
from civicflow.ids import uuid7
from services.query.projection import CaseRecord, apply
from tests.factories import recorded as stored

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
CASE = uuid7()


def recorded(version: int, data: CaseEvent, case_id: UUID = CASE) -> RecordedEvent:
    return stored(data, case_id=case_id, version=version, at=T0 + timedelta(minutes=version))


LIFE = [
    recorded(
        1,
        CaseSubmitted(
            tracking_number="QGPE-J5T",
            service_code="POTHOLE",
            description="secret description from the resident",
            location=Location(lat=41.88, long=-87.65, address="1 Main St"),
            submitted_at=T0,
            sealed_contact="gAAAA-sealed",
            has_email=True,
        ),
    ),
    recorded(2, NotificationSent(stage="submitted", channel="email", message_id="<m1>")),
    recorded(
        3,
        CaseRouted(
            department_id="streets",
            department_name="Public Works - Streets",
            priority="normal",
            due_at=T0 + timedelta(days=5),
            rule_id="service:POTHOLE",
            rule_set_version="1",
        ),
    ),
    recorded(4, WorkOrderOpened(department_id="streets", system="rest", external_id="WO-1")),
    recorded(5, WorkOrderStatusChanged(external_id="WO-1", status="in_progress", note="Crew 4 on site")),
    recorded(6, WorkOrderStatusChanged(external_id="WO-1", status="done", note="Repaired")),
    recorded(7, CaseResolved(resolution="Repaired", resolved_at=T0 + timedelta(hours=3))),
]


def fold(events: list[RecordedEvent]) -> tuple[CaseRecord | None, list[str]]:
    record, stages = None, []
    for event in events:
        record, entry = apply(record, event)
        if entry is not None:
            stages.append(entry.stage)
    return record, stages


def test_a_case_life_reads_as_its_stages() -> None:
    record, stages = fold(LIFE)
    assert record is not None
    assert stages == [
        "submitted",
        "resident_notified",
        "routed",
        "work_order_opened",
        "work_order_in_progress",
        "work_order_done",
        "resolved",
    ]
    assert (record.status, record.department_id, record.work_order_id) == ("resolved", "streets", "WO-1")
    assert record.due_at == T0 + timedelta(days=5) and record.last_version == 7


def test_a_redelivered_event_changes_nothing() -> None:
    once, stages_once = fold(LIFE)
    twice, stages_twice = fold([e for event in LIFE for e in (event, event)])
    assert once == twice and stages_once == stages_twice


def test_the_public_record_holds_no_resident_contact_or_description() -> None:
    record, _ = fold(LIFE)
    values = " ".join(str(v) for v in asdict(record).values())  # type: ignore[arg-type]
    assert "secret description" not in values and "sealed" not in values


def test_due_dates_read_in_the_departments_time_zone_and_in_utc_without_one() -> None:
    due = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)  # 17:00 in Chicago (CST, UTC-6)
    routed = CaseRouted(
        department_id="streets",
        department_name="Streets",
        priority="normal",
        due_at=due,
        rule_id="r",
        rule_set_version="1",
        time_zone="America/Chicago",
    )
    record, entry = apply(None, recorded(1, routed))
    assert entry is not None and "expected by 2026-11-28 17:00 CST" in entry.detail
    assert record.time_zone == "America/Chicago"
    _, overdue = apply(record, recorded(2, CaseOverdue(department_id="streets", due_at=due)))
    assert overdue is not None and "passed its due date 2026-11-28 17:00 CST" in overdue.detail

    _, before_zones = apply(None, recorded(1, routed.model_copy(update={"time_zone": None})))
    assert before_zones is not None and "expected by 2026-11-28 23:00 UTC" in before_zones.detail


def test_a_triaged_case_has_no_department_due_date() -> None:
    record, _ = fold(LIFE[:3])  # submitted, notified, routed to streets
    assert record is not None and record.due_at is not None
    triaged, entry = apply(
        record, recorded(4, CaseNeedsTriage(queue="call-centre-triage", reason="turned down", rule_set_version="1"))
    )
    assert (triaged.status, triaged.department_name, triaged.due_at, triaged.rule_id) == (
        "triage",
        "311 triage",
        None,
        None,
    )
    assert entry is not None and entry.stage == "triage"


def test_a_resolved_case_stays_resolved_when_its_work_order_changes_later() -> None:
    record = None
    for event in LIFE:
        record, _ = apply(record, event)
    assert record is not None
    later = recorded(len(LIFE) + 1, WorkOrderStatusChanged(external_id="WO-1", status="in_progress", note="again"))

    after, entry = apply(record, later)

    assert after.status == "resolved" and after.resolution == record.resolution
    assert entry is not None and entry.stage == "work_order_in_progress"


def test_a_departments_words_reach_the_public_view_as_plain_text_without_links() -> None:
    hostile = "Fixed <script>x()</script> see http://evil.example\x00"
    events = [
        *LIFE[:5],
        recorded(6, WorkOrderStatusChanged(external_id="WO-1", status="done", note=hostile)),
        recorded(7, CaseResolved(resolution=hostile, resolved_at=T0 + timedelta(hours=3))),
    ]
    record, entries = None, []
    for event in events:
        record, entry = apply(record, event)
        entries.append(entry)

    assert record is not None and record.resolution == "Fixed x() see [link removed]"
    assert entries[-2] is not None and entries[-2].detail.endswith(": Fixed x() see [link removed]")


def test_a_disputed_resolution_leaves_resolved_and_goes_back_to_its_department() -> None:
    reopened = CaseRerouted(
        department_id="streets",
        department_name="Public Works - Streets",
        priority="normal",
        due_at=T0 + timedelta(days=9),
        rule_id="service:POTHOLE",
        rule_set_version="1",
        reason="the resident said the problem is not fixed",
        previous_department_id="streets",
    )
    disputed = [recorded(8, ResolutionDisputed(call_sid="CA1")), recorded(9, reopened)]
    record, _ = fold(LIFE + disputed[:1])
    assert record is not None and record.status == "reopened"
    entry = apply(fold(LIFE)[0], disputed[0])[1]
    assert entry is not None and entry.detail == "the resident said the problem is not fixed (by phone)"
    record, stages = fold(
        [*LIFE, *disputed, recorded(10, WorkOrderOpened(department_id="streets", system="rest", external_id="WO-2"))]
    )
    assert record is not None and stages[-3:] == ["resolution_disputed", "rerouted", "work_order_opened"]
    assert (record.status, record.department_id, record.work_order_id) == ("work_order_open", "streets", "WO-2")


def test_a_calls_outcome_reads_as_a_line_with_when_it_is_tried_again() -> None:
    routed = fold(LIFE[:3])[0]
    assert routed is not None
    zoned = replace(routed, time_zone="America/Chicago")
    retry = NotificationDelivered(
        stage="resolved",
        channel="voice",
        outcome="no-answer",
        attempt=1,
        retry_at=datetime(2026, 12, 1, 16, tzinfo=UTC),
    )
    lines = [
        apply(zoned, recorded(4, event))[1]
        for event in (
            retry,
            retry.model_copy(update={"retry_at": None, "fallback": "sms", "outcome": "busy"}),
            retry.model_copy(update={"retry_at": None, "outcome": "answered"}),
        )
    ]
    placed = apply(zoned, recorded(4, NotificationSent(stage="resolved", channel="voice", message_id="CA1")))[1]
    assert placed is not None and placed.detail == "calling the resident about 'resolved'"
    assert [line.detail for line in lines if line is not None] == [
        "called about 'resolved', no answer; trying again at 2026-12-01 10:00 CST",
        "called about 'resolved', busy; texting instead",
        "called about 'resolved', answered",
    ]


def test_a_texts_delivery_report_reads_as_a_line_saying_whether_it_arrived_and_what_came_instead() -> None:
    routed = fold(LIFE[:3])[0]
    assert routed is not None
    delivered = NotificationDelivered(stage="routed", channel="sms", outcome="delivered", attempt=1)
    undelivered = NotificationDelivered(
        stage="resolved", channel="sms", outcome="undelivered", attempt=1, fallback="email", error_code=30003
    )
    events = (
        delivered,
        undelivered,
        undelivered.model_copy(update={"fallback": None, "outcome": "failed"}),
        undelivered.model_copy(update={"fallback": None, "error_code": None}),
    )
    lines = [apply(routed, recorded(4, event))[1] for event in events]
    assert [(line.stage, line.detail) for line in lines if line is not None] == [
        ("resident_texted", "texted about 'routed', delivered"),
        ("resident_texted", "texted about 'resolved', not delivered (error 30003); emailed instead"),
        ("resident_texted", "texted about 'resolved', not delivered (error 30003)"),
        ("resident_texted", "texted about 'resolved', not delivered"),
    ]
    after = apply(routed, recorded(4, delivered))[0]
    assert replace(after, last_version=3, updated_at=routed.updated_at) == routed, "only the timeline changes"


def test_the_extended_vocabulary_reads_on_the_timeline_and_in_the_status() -> None:
    record, _ = fold(LIFE[:4])  # up to the work order opened
    steps = [
        (WorkOrderStatusChanged(external_id="WO-1", status="acknowledged", external_status="ack"), "acknowledged"),
        (WorkOrderStatusChanged(external_id="WO-1", status="action_scheduled", note="Tue"), "scheduled"),
        (WorkOrderStatusChanged(external_id="WO-1", status="resolved", external_status="done"), "work_done"),
    ]
    stages, details = [], []
    for version, (event, status) in enumerate(steps, 5):
        record, entry = apply(record, recorded(version, event))
        assert record.status == status and entry is not None
        stages.append(entry.stage)
        details.append(entry.detail)
    assert stages == ["work_order_acknowledged", "work_order_action_scheduled", "work_order_done"]
    assert details[1] == "work order WO-1 is action scheduled: Tue"


def test_a_status_no_mapping_knows_reads_as_what_the_department_reported_and_changes_no_status() -> None:
    record, _ = fold(LIFE[:5])  # in progress
    assert record is not None
    unmapped = WorkOrderStatusChanged(
        external_id="WO-1", status="unmapped", note="valve on order", external_status="awaiting parts"
    )
    after, entry = apply(record, recorded(6, unmapped))
    assert after.status == "in_progress"
    assert entry is not None and entry.stage == "work_order_unmapped"
    assert entry.detail == "Public Works - Streets reported 'awaiting parts' (not a status we map): valve on order"
    hostile = unmapped.model_copy(update={"external_status": "see http://evil.example", "note": None})
    _, shown = apply(record, recorded(6, hostile))
    assert shown is not None and "evil" not in shown.detail


def test_a_referral_and_a_reopened_job_read_on_the_timeline_and_reopened_shows_in_the_status() -> None:
    record, _ = fold(LIFE)  # resolved
    assert record is not None and record.status == "resolved"
    reopened, entry = apply(
        record, recorded(8, CaseReopened(department_id="streets", external_id="WO-1", note="failed inspection"))
    )
    assert reopened.status == "reopened"
    assert entry is not None and entry.detail == "streets reopened work order WO-1: failed inspection"
    working, _ = apply(reopened, recorded(9, WorkOrderStatusChanged(external_id="WO-1", status="in_progress")))
    assert working.status == "in_progress", "the reopened job's progress shows again"
    _, referred = apply(
        record, recorded(8, WorkOrderReferred(department_id="streets", to_department_id="water", external_id="WO-1"))
    )
    _, unnamed = apply(record, recorded(8, WorkOrderReferred(department_id="streets", external_id="WO-1")))
    assert referred is not None and referred.detail == "streets referred it to water"
    assert unnamed is not None and unnamed.detail == "streets referred it on, naming no department we know"


def test_a_duplicate_reads_as_resolved_as_a_duplicate_of_the_other_request() -> None:
    record, _ = fold(LIFE[:6])
    duplicate = CaseResolved(resolution="a duplicate of QGPE-J5S", resolved_at=T0, duplicate_of="QGPE-J5S")
    after, entry = apply(record, recorded(7, duplicate))
    assert (after.status, after.resolution) == ("resolved", "a duplicate of QGPE-J5S")
    assert entry is not None and entry.detail == "resolved: a duplicate of QGPE-J5S"


def test_a_cancelled_work_order_reads_on_the_timeline_and_its_late_changes_move_no_status() -> None:
    record, _ = fold(LIFE[:4])  # up to work order WO-1 opened
    assert record is not None and record.work_order_id == "WO-1"
    cancelled = WorkOrderCancelled(
        department_id="streets", external_id="WO-0", reason="the case was sent to Water: recategorised", how="told"
    )
    after, entry = apply(record, recorded(5, cancelled))
    assert entry is not None and entry.stage == "work_order_cancelled"
    assert entry.detail == (
        "work order WO-0 at streets withdrawn; the department was told by email: the case was sent to Water:"
        " recategorised"
    )
    late, _ = apply(after, recorded(6, WorkOrderStatusChanged(external_id="WO-0", status="acknowledged")))
    assert late.status == record.status, "a replaced work order's news is on the timeline only"
