"""Work-order decisions: what a department is sent and what its reports mean. Pure: no framework, no I/O."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from civicflow.events import (
    CaseEvent,
    CaseResolved,
    CaseSubmitted,
    RecordedEvent,
    ResolutionDisputed,
    RoutingDecision,
    WorkOrderRejected,
    WorkOrderStatusChanged,
    stands_resolved,
)
from civicflow.notes import resident_text

SIGNATURE_HEADER = "X-Civicflow-Signature"
SIGNATURE_SCHEME = "sha256="
WorkOrderStatus = Literal["open", "in_progress", "done", "rejected"]


class WorkOrderRequest(BaseModel):
    """The body sent to a department's system to open a work order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: str
    tracking_number: str
    service_code: str
    summary: str
    callback_url: str
    due_at: datetime | None  # None: the rule gives no SLA
    # Where the work is, for systems that need a place (Open311 requires one). Left out of the serialized body
    # (exclude), which the REST department system takes as it was and refuses unknown fields in.
    lat: float | None = Field(default=None, exclude=True)
    long: float | None = Field(default=None, exclude=True)
    address: str | None = Field(default=None, exclude=True)


class StatusReport(BaseModel):
    """A department's webhook: its work order changed status."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    external_id: str = Field(min_length=1, max_length=100)
    department_id: str = Field(min_length=1, max_length=100)
    status: WorkOrderStatus
    note: str | None = Field(default=None, max_length=2000)
    changed_at: AwareDatetime

    @field_validator("note")
    @classmethod
    def _readable_by_residents(cls, note: str | None) -> str | None:
        """The note can reach residents (the resolved email, the public view): from here on it is plain
        text without links (civicflow.notes), so duplicates are compared and events recorded as shown."""
        return resident_text(note) or None


class CaseNotSubmitted(LookupError):
    """A routing decision arrived for a case whose stream holds no CaseSubmitted."""


def submission_of(stream: Sequence[RecordedEvent]) -> CaseSubmitted:
    """The CaseSubmitted of a case's stream: where the tracking number and service code live."""
    for recorded in stream:
        if isinstance(recorded.data, CaseSubmitted):
            return recorded.data
    case_id = stream[0].case_id if stream else "?"
    raise CaseNotSubmitted(f"case {case_id} has no CaseSubmitted event; cannot open a work order")


def work_order_request(
    case_id: UUID, submitted: CaseSubmitted, routed: RoutingDecision, callback_url: str, service_code: str | None = None
) -> WorkOrderRequest:
    """What the department needs to schedule the job. The resident's words and contact are not sent:
    the summary is built from the catalogue only."""
    code = service_code or submitted.service_code
    return WorkOrderRequest(
        case_id=str(case_id),
        tracking_number=submitted.tracking_number,
        service_code=code,
        summary=(
            f"311 case {submitted.tracking_number}: {code} for {routed.department_name}, priority {routed.priority}"
        ),
        callback_url=callback_url,
        due_at=routed.due_at,
        lat=submitted.location.lat if submitted.location else None,
        long=submitted.location.long if submitted.location else None,
        address=submitted.location.address if submitted.location else None,
    )


def is_resolved(history: Iterable[CaseEvent]) -> bool:
    """Whether the case stands resolved. The router does not place a resolved case again, and a resident whose
    problem is back makes a new request (the resolved email says so), unless they disputed the resolution on
    its call: then the reopened work order's `done` resolves it again."""
    return stands_resolved(history)


def report_may_act(stream: Sequence[RecordedEvent], opened_by_event: UUID) -> bool:
    """Whether a report on the work order opened for `opened_by_event` may resolve or reject the case.

    Only while the case does not stand resolved, and only for the work order of the standing routing decision
    (the case's latest CaseRouted or CaseRerouted). After a reroute or a dispute the older work orders are
    history: a `done` resent on the disputed one would resolve the reopened case with no new work done, and a
    late `rejected` on it would send the case away from the department that now owns it. Between a dispute
    and the router's reroute no work order acts: the disputed one is done with, the reopened one not open."""
    if is_resolved(e.data for e in stream):
        return False
    for recorded in reversed(stream):
        if isinstance(recorded.data, ResolutionDisputed):
            return False
        if isinstance(recorded.data, RoutingDecision):
            return recorded.event_id == opened_by_event
    return False


def events_for_status(report: StatusReport, acts: bool = True) -> list[CaseEvent]:
    """The events a status report means: every change is recorded; `done` also resolves the case, and
    `rejected` (the department says it is not theirs) sends it back to the router.

    Unless the report may act on the case (`acts`, report_may_act): once the case is resolved, or for a
    work order a later routing decision replaced, a report is only recorded as the work order's change: a
    second `done` (a resend with a new note, another work order of the case, a reopened job finished
    again) resolves nothing a second time, and a `rejected` sends nothing back to the router."""
    changed = WorkOrderStatusChanged(external_id=report.external_id, status=report.status, note=report.note)
    if not acts:
        return [changed]
    if report.status == "rejected":
        reason = report.note or "the department says it is not theirs"
        return [
            changed,
            WorkOrderRejected(department_id=report.department_id, reason=reason, external_id=report.external_id),
        ]
    if report.status != "done":
        return [changed]
    resolution = report.note or f"Work order {report.external_id} completed by the department"
    return [changed, CaseResolved(resolution=resolution, resolved_at=report.changed_at)]


def sign(secret: str, body: bytes) -> str:
    """The signature header value for a raw webhook body: sha256=<hex HMAC-SHA256>."""
    return SIGNATURE_SCHEME + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_is_valid(secret: str, body: bytes, header: str | None) -> bool:
    """True when the header is the HMAC of exactly these bytes (compared in constant time)."""
    if not header or not header.startswith(SIGNATURE_SCHEME):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())
