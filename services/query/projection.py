"""The case read model as a fold over a case's events. Pure: the live consumer and replay share it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from civicflow.events import (
    AlertAcknowledged,
    CaseNeedsTriage,
    CaseOverdue,
    CaseRecategorised,
    CaseReopened,
    CaseRerouted,
    CaseResolved,
    CaseSubmitted,
    NotificationDelivered,
    NotificationFailed,
    NotificationSent,
    PreferencesChanged,
    RecordedEvent,
    ResidentReplied,
    ResolutionDisputed,
    RoutingDecision,
    StaffAlerted,
    SurveyAnswered,
    SurveySent,
    WorkOrderCancelled,
    WorkOrderLost,
    WorkOrderOpened,
    WorkOrderReferred,
    WorkOrderRejected,
    WorkOrderReopenedThere,
    WorkOrderStatusChanged,
    WorkOrderSyncFailed,
)
from civicflow.localtime import wall_clock
from civicflow.notes import resident_text

UNMAPPED = "unmapped"  # a work order status the department's mapping does not know (the bridge's word)


@dataclass(frozen=True)
class CaseRecord:
    """One case as the public sees it: never the resident's contact details or description."""

    case_id: UUID
    status: str
    last_version: int
    updated_at: datetime
    tracking_number: str | None = None
    service_code: str | None = None
    department_id: str | None = None
    department_name: str | None = None
    priority: str | None = None
    rule_id: str | None = None
    submitted_at: datetime | None = None
    due_at: datetime | None = None
    work_order_id: str | None = None
    resolution: str | None = None
    lat: float | None = None
    long: float | None = None
    address: str | None = None
    time_zone: str | None = None  # the department calendar's, for reading due dates and times locally
    point_source: str | None = None  # given: with the request; geocoded: found from its address
    unplaced: str | None = None  # why its address could not be placed on the map
    satisfaction: int | None = None  # the survey's score, 1 (poor) to 5 (great): nothing personal


@dataclass(frozen=True)
class TimelineEntry:
    case_id: UUID
    version: int
    stage: str
    at: datetime
    detail: str


# The view's status for a work order's (ours; `done` in events recorded before our vocabulary). Statuses
# that act on the case (closed, duplicate, not_our_responsibility...) change it through their own events.
_WORK_ORDER_STATUS = {
    "open": "work_order_open",
    "acknowledged": "acknowledged",
    "in_progress": "in_progress",
    "action_scheduled": "scheduled",
    "resolved": "work_done",
    "done": "work_done",
}
# Timeline stages keep the names they had before our vocabulary: `work_order_done`, `work_order_rejected`.
_WORK_ORDER_STAGE = {"resolved": "done", "not_our_responsibility": "rejected"}


def apply(record: CaseRecord | None, event: RecordedEvent) -> tuple[CaseRecord, TimelineEntry | None]:
    """The record after the event, and the timeline line it adds (None for events residents don't see)."""
    if record is not None and event.version <= record.last_version:
        return record, None  # already applied
    base = record or CaseRecord(case_id=event.case_id, status="unknown", last_version=0, updated_at=event.occurred_at)
    # One copy of the record per event (replay folds every event of the store through here).
    changes: dict[str, Any] = {"last_version": event.version, "updated_at": event.occurred_at}
    data = event.data
    stage, detail = "", ""
    if isinstance(data, CaseSubmitted):
        place = data.location
        changes.update(
            status="submitted",
            tracking_number=data.tracking_number,
            service_code=data.service_code,
            submitted_at=data.submitted_at,
            lat=place.lat if place else None,
            long=place.long if place else None,
            address=place.address if place else None,
            point_source=place.point_source if place else None,
            unplaced=place.unplaced if place else None,
        )
        stage, detail = "submitted", f"request {data.tracking_number} received ({data.service_code})"
    elif isinstance(data, RoutingDecision):
        changes.update(
            # an imported closed case is routed after its closing: it stays resolved
            status="resolved" if base.status == "resolved" else "routed",
            department_id=data.department_id,
            department_name=data.department_name,
            priority=data.priority,
            rule_id=data.rule_id,
            due_at=data.due_at,
            time_zone=data.time_zone,
        )
        stage = "rerouted" if isinstance(data, CaseRerouted) else "routed"
        expected = f"expected by {wall_clock(data.due_at, data.time_zone)}" if data.due_at else "no expected date"
        detail = f"{stage} to {data.department_name}, {expected} (rule {data.rule_id})"
        if isinstance(data, CaseRerouted):
            detail += f": {data.reason}"
    elif isinstance(data, CaseNeedsTriage):
        # No department, so no due date: the call centre places it (the view keeps the time zone to read by).
        changes.update(
            status="resolved" if base.status == "resolved" else "triage",
            department_id=data.queue,
            department_name="311 triage",
            due_at=None,
            rule_id=None,
        )
        stage, detail = "triage", f"sent to the call centre's triage queue: {data.reason}"
    elif isinstance(data, WorkOrderRejected):
        stage, detail = "turned_down", f"{data.department_id} turned it down: {resident_text(data.reason)}"
    elif isinstance(data, CaseRecategorised):
        changes["service_code"] = data.service_code
        stage = "recategorised"
        detail = f"service changed from {data.previous_service_code} to {data.service_code}: {data.reason}"
    elif isinstance(data, CaseOverdue):
        stage, detail = "overdue", f"passed its due date {wall_clock(data.due_at, base.time_zone)} unresolved"
    elif isinstance(data, WorkOrderOpened):
        changes.update(status="work_order_open", work_order_id=data.external_id)
        stage, detail = "work_order_opened", f"work order {data.external_id} opened"
    elif isinstance(data, WorkOrderReopenedThere):  # their system lost it; the same work order, a new number
        changes["work_order_id"] = data.external_id
        who = base.department_name or data.department_id
        stage = "work_order_reopened_there"
        detail = f"{who}'s system lost work order {data.old_external_id}; opened again there as {data.external_id}"
    elif isinstance(data, WorkOrderLost):  # a person takes it up: the view says where it waits
        if base.status != "resolved":
            changes["status"] = "supervisor_queue"
        who = base.department_name or data.department_id
        stage = "work_order_lost"
        detail = f"{who} lost the work order {data.external_id}; sent to its supervisor queue {data.queue}"
    elif isinstance(data, WorkOrderSyncFailed):
        stage = "work_order_waiting"
        detail = (
            f"{base.department_name or data.department_id}'s system did not answer; the work order is sent when it does"
        )
    elif isinstance(data, WorkOrderStatusChanged):
        # a case is resolved once, and follows only its standing work order: later changes, and a replaced
        # work order's, are on its timeline only
        if base.status != "resolved" and data.external_id == (base.work_order_id or data.external_id):
            changes["status"] = _WORK_ORDER_STATUS.get(data.status, base.status)
        stage = f"work_order_{_WORK_ORDER_STAGE.get(data.status, data.status)}"
        if data.status == UNMAPPED:
            # their own word, which no mapping knows: shown as they said it (plain text, as a note is)
            said = resident_text(data.external_status)[:64] or "a status"
            detail = f"{base.department_name or 'the department'} reported '{said}' (not a status we map)"
        else:
            detail = f"work order {data.external_id} is {data.status.replace('_', ' ')}"
        if note := resident_text(data.note):  # a department's words: plain text without links
            detail += f": {note}"
    elif isinstance(data, WorkOrderCancelled):
        done = "cancelled" if data.how == "cancelled" else "withdrawn; the department was told by email"
        stage = "work_order_cancelled"
        detail = f"work order {data.external_id} at {data.department_id} {done}: {resident_text(data.reason)}"
    elif isinstance(data, WorkOrderReferred):
        to = f"to {data.to_department_id}" if data.to_department_id else "on, naming no department we know"
        stage, detail = "referred", f"{data.department_id} referred it {to}"
        if note := resident_text(data.note):
            detail += f": {note}"
    elif isinstance(data, CaseReopened):  # the department took its job up again: resolved again when it finishes
        changes["status"] = "reopened" if base.status == "resolved" else base.status
        stage, detail = "reopened", f"{data.department_id} reopened work order {data.external_id}"
        if note := resident_text(data.note):
            detail += f": {note}"
    elif isinstance(data, CaseResolved):
        resolution = resident_text(data.resolution)
        changes.update(status="resolved", resolution=resolution)
        stage, detail = "resolved", f"resolved: {resolution}"
    elif isinstance(data, NotificationSent):
        # a call placed is not yet a call answered: its outcome follows (NotificationDelivered)
        told = f"calling the resident about '{_told(data.stage)}'" if data.channel == "voice" else None
        stage, detail = "resident_notified", told or f"resident told of '{_told(data.stage)}' by {data.channel}"
    elif isinstance(data, NotificationFailed):
        stage, detail = "notification_failed", f"could not tell the resident of '{_told(data.stage)}' by {data.channel}"
    elif isinstance(data, ResidentReplied):  # what they wrote is for the department, not the public view
        how = "text" if data.channel == "sms" else data.channel
        stage, detail = "resident_replied", f"the resident replied by {how}"
    elif isinstance(data, SurveySent):
        how = "text" if data.channel == "sms" else data.channel
        stage, detail = "survey_sent", f"the resident was asked by {how} how the city did"
    elif isinstance(data, SurveyAnswered):
        if base.satisfaction is None:  # the notifier keeps the first answer; so does the view
            changes["satisfaction"] = data.score
        stage, detail = "survey_answered", f"the resident rated the service {data.score} of 5"
    elif isinstance(data, StaffAlerted):  # who and at which number stay with the notifier
        stage = "staff_alerted"
        detail = f"{data.reason}: on-call alerted" if data.contacts else f"{data.reason}: no on-call contact reached"
    elif isinstance(data, AlertAcknowledged):
        stage, detail = "alert_acknowledged", f"acknowledged by {data.by}"
    elif isinstance(data, PreferencesChanged):
        stage, detail = "preferences_changed", "how the resident hears back changed"
    elif isinstance(data, NotificationDelivered) and data.channel == "sms":
        stage, detail = "resident_texted", _text_outcome(data)
    elif isinstance(data, NotificationDelivered):
        stage, detail = "resident_called", _call_outcome(data, base.time_zone)
    elif isinstance(data, ResolutionDisputed):  # the router sends it back to its department next
        changes["status"] = "reopened" if base.status == "resolved" else base.status
        how = "by phone" if data.channel == "voice" else f"by {data.channel}"
        stage, detail = "resolution_disputed", f"the resident said the problem is not fixed ({how})"
    after = replace(base, **changes)
    if not stage:
        return after, None
    return after, TimelineEntry(event.case_id, event.version, stage, event.occurred_at, detail)


def _call_outcome(data: NotificationDelivered, zone: str | None) -> str:
    """ "called about 'resolved', no answer; trying again at 2026-12-01 10:00 CST" and the like."""
    said = {"answered": "answered", "no-answer": "no answer"}.get(data.outcome, data.outcome)
    line = f"called about '{_told(data.stage)}', {said}"
    if data.retry_at is not None:
        return f"{line}; trying again at {wall_clock(data.retry_at, zone)}"
    if data.fallback is not None:
        return f"{line}; {'texting' if data.fallback == 'sms' else 'emailing'} instead"
    return line


def _text_outcome(data: NotificationDelivered) -> str:
    """ "texted about 'resolved', not delivered (error 30003); emailed instead" and the like."""
    if data.outcome == "delivered":
        return f"texted about '{_told(data.stage)}', delivered"
    line = f"texted about '{_told(data.stage)}', not delivered"
    if data.error_code is not None:
        line += f" (error {data.error_code})"
    return f"{line}; emailed instead" if data.fallback == "email" else line


def _told(stage: str) -> str:
    """A stage as the timeline says it: the notifier names a stage reached again 'resolved.2'."""
    name, _, occurrence = stage.partition(".")
    return f"{name}, again" if occurrence else name
