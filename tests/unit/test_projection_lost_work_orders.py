"""The view of a case whose department lost its work order (services/workorder_bridge/reconcile.py): opened again
under a new number, or sent to the department's supervisor queue; both say so on the timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from civicflow.events import (
    CaseEvent,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    Location,
    RecordedEvent,
    WorkOrderLost,
    WorkOrderOpened,
    WorkOrderReopenedThere,
)
from civicflow.ids import uuid7
from services.query.projection import CaseRecord, TimelineEntry, apply
from tests.factories import recorded as stored

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def fold(*events: CaseEvent) -> tuple[CaseRecord, list[TimelineEntry]]:
    case_id = uuid7()
    record: CaseRecord | None = None
    timeline: list[TimelineEntry] = []
    for version, data in enumerate(events, start=1):
        event: RecordedEvent = stored(data, case_id=case_id, version=version, at=T0 + timedelta(minutes=version))
        record, line = apply(record, event)
        if line is not None:
            timeline.append(line)
    assert record is not None
    return record, timeline


OPENED = (
    CaseSubmitted(
        tracking_number="QGPE-J5T",
        service_code="POTHOLE",
        description="the resident's words",
        location=Location(address="1 Main St"),
        submitted_at=T0,
    ),
    CaseRouted(
        department_id="streets",
        department_name="Public Works - Streets",
        priority="normal",
        due_at=T0 + timedelta(days=5),
        rule_id="service:POTHOLE",
        rule_set_version="v1",
    ),
    WorkOrderOpened(department_id="streets", system="rest_webhook", external_id="WO-1"),
)


def test_a_work_order_opened_again_shows_its_new_number() -> None:
    record, timeline = fold(
        *OPENED, WorkOrderReopenedThere(department_id="streets", old_external_id="WO-1", external_id="WO-9")
    )
    assert (record.work_order_id, record.status) == ("WO-9", "work_order_open")
    assert (timeline[-1].stage, timeline[-1].detail) == (
        "work_order_reopened_there",
        "Public Works - Streets's system lost work order WO-1; opened again there as WO-9",
    )


def test_a_lost_work_order_puts_the_case_in_the_supervisor_queue_and_says_so() -> None:
    lost = WorkOrderLost(department_id="streets", external_id="WO-1", queue="streets-on-call", reason="refused")
    record, timeline = fold(*OPENED, lost)
    assert record.status == "supervisor_queue" and record.department_id == "streets"
    assert (timeline[-1].stage, timeline[-1].detail) == (
        "work_order_lost",
        "Public Works - Streets lost the work order WO-1; sent to its supervisor queue streets-on-call",
    )
    # a resolved case stays resolved in the view, the line is history
    resolved, _ = fold(*OPENED, CaseResolved(resolution="filled", resolved_at=T0), lost)
    assert resolved.status == "resolved"
