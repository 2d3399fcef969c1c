"""Work-order decisions: what a department is sent and what its reports mean. Pure: no framework, no I/O."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseReopened,
    CaseResolved,
    CaseSubmitted,
    RecordedEvent,
    ResolutionDisputed,
    RoutingDecision,
    WorkOrderReferred,
    WorkOrderRejected,
    WorkOrderStatusChanged,
    stands_resolved,
)
from civicflow.notes import resident_text

SIGNATURE_HEADER = "X-Civicflow-Signature"
TIMESTAMP_HEADER = "X-Civicflow-Timestamp"
SIGNATURE_SCHEME = "sha256="
UNMAPPED = "unmapped"  # WorkOrderStatusChanged.status when the department's mapping does not know theirs
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class WorkOrderRequest(BaseModel):
    """What a department's system is sent to open a work order, in our words (each kind's connector says it
    in theirs: their service code, their attribute names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: str
    tracking_number: str
    service_code: str
    summary: str
    callback_url: str
    due_at: datetime | None  # None: the rule gives no SLA
    # the answers to the service's questions, by our question code; a connector sends only those its
    # department's `attributes` mapping names, under their field names
    attributes: dict[str, str] = {}
    # Where the work is, for systems that need a place (Open311 requires one). Left out of the serialized body
    # (exclude), which the REST department system takes as it was and refuses unknown fields in.
    lat: float | None = Field(default=None, exclude=True)
    long: float | None = Field(default=None, exclude=True)
    address: str | None = Field(default=None, exclude=True)
    # the routing decision's priority, for systems that take it as a field (left out of the REST body as well)
    priority: str | None = Field(default=None, exclude=True)


class StatusReport(BaseModel):
    """A department's webhook (the rest_webhook kind): its work order changed status, in its own words."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    external_id: str = Field(min_length=1, max_length=100, pattern=_PRINTABLE)
    department_id: str = Field(min_length=1, max_length=100, pattern=_PRINTABLE)
    # theirs, free: the department's reverse mapping makes it ours, and one it does not know is noted
    status: str = Field(min_length=1, max_length=64, pattern=_PRINTABLE)
    note: str | None = Field(default=None, max_length=2000)
    changed_at: AwareDatetime
    # a duplicate's other case (its tracking number), an internal referral's department
    refers_to: str | None = Field(default=None, min_length=1, max_length=100, pattern=_PRINTABLE)
    # their id for this update, where their system numbers updates: a replay of it is a duplicate
    update_id: str | None = Field(default=None, min_length=1, max_length=100, pattern=_PRINTABLE)

    @field_validator("note")
    @classmethod
    def _readable_by_residents(cls, note: str | None) -> str | None:
        """The note can reach residents (the resolved email, the public view): from here on it is plain
        text without links (civicflow.notes), so duplicates are compared and events recorded as shown."""
        return resident_text(note) or None


@dataclass(frozen=True)
class StatusChange:
    """One department update as the bridge decides on it: `theirs` as their system said it, `ours` from the
    department's reverse mapping (None: unmapped)."""

    department_id: str
    external_id: str
    theirs: str
    ours: str | None
    changed_at: datetime
    note: str | None = None
    refers_to: str | None = None


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
    case_id: UUID,
    submitted: CaseSubmitted,
    routed: RoutingDecision,
    callback_url: str,
    service_code: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> WorkOrderRequest:
    """What the department needs to schedule the job. The resident's words and contact are not sent:
    the summary is built from the catalogue only. `attributes` are the service questions' answers the
    caller chose to pass (each connector then sends only those its department maps)."""
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
        attributes=dict(attributes or {}),
        lat=submitted.location.lat if submitted.location else None,
        long=submitted.location.long if submitted.location else None,
        address=submitted.location.address if submitted.location else None,
        priority=routed.priority,
    )


def is_resolved(history: Iterable[CaseEvent]) -> bool:
    """Whether the case stands resolved. The router does not place a resolved case again, and a resident whose
    problem is back makes a new request (the resolved email says so), unless they disputed the resolution on
    its call or the department reopened its job: then the work order's next `resolved` resolves it again."""
    return stands_resolved(history)


def report_may_act(stream: Sequence[RecordedEvent], opened_by_event: UUID) -> bool:
    """Whether a report on the work order opened for `opened_by_event` may resolve, reject or refer the case.

    Only while the case does not stand resolved, and only for the work order of the standing routing decision
    (the case's latest CaseRouted or CaseRerouted, not followed by CaseNeedsTriage). After a reroute, triage or
    a dispute the older work orders are
    history: a `resolved` resent on the disputed one would resolve the reopened case with no new work done,
    and a late `not_our_responsibility` on it would send the case away from the department that now owns it.
    Between a dispute and the router's reroute no work order acts: the disputed one is done with, the reopened
    one not open. A department that reopened its own job (CaseReopened) keeps it: its work order acts again."""
    if is_resolved(e.data for e in stream):
        return False
    return _standing_work_order(stream, opened_by_event)


def may_reopen(stream: Sequence[RecordedEvent], opened_by_event: UUID) -> bool:
    """Whether a `reopened` on this work order reopens the case: it stands resolved, and by this work order's
    routing decision (a replaced work order reopening its job is that work order's change only)."""
    return is_resolved(e.data for e in stream) and _standing_work_order(stream, opened_by_event)


def _standing_work_order(stream: Sequence[RecordedEvent], opened_by_event: UUID) -> bool:
    """Whether the work order's routing decision still stands: no later decision, no dispute, and not sent to
    triage since (a call-taker places it now; the work order was cancelled)."""
    for recorded in reversed(stream):
        if isinstance(recorded.data, ResolutionDisputed | CaseNeedsTriage):
            return False
        if isinstance(recorded.data, RoutingDecision):
            return recorded.event_id == opened_by_event
    return False


def update_may_act(stream: Sequence[RecordedEvent], opened_by_event: UUID, ours: str | None) -> bool:
    """Whether a change to `ours` may act on the case (events_for_status): a reopening only on a resolved case,
    anything else only on one not resolved."""
    if ours == "reopened":
        return may_reopen(stream, opened_by_event)
    return report_may_act(stream, opened_by_event)


def events_for_status(
    change: StatusChange, acts: bool = True, known_departments: Collection[str] = ()
) -> list[CaseEvent]:
    """The events a department's update means. Every update is recorded as the work order's change
    (WorkOrderStatusChanged with ours, or `unmapped`, and theirs); while it may act on the case
    (`acts`, update_may_act) our status also means:

    - resolved, closed: CaseResolved (its note, else what the department did);
    - duplicate: CaseResolved as a duplicate of the request it names (`refers_to`);
    - not_our_responsibility, cancelled: WorkOrderRejected: the router places the case again without it;
    - internal_referral: WorkOrderReferred, to the department `refers_to` names when it is one of
      `known_departments`: the router places it there, else again without the referring department;
    - reopened: CaseReopened (acts only on a resolved case): the work order's next `resolved` resolves it again;
    - open, acknowledged, in_progress, action_scheduled, and a status no mapping knows: nothing more.

    Once the case is resolved, or for a work order a later routing decision replaced, an update is only the
    work order's change: a second `resolved` resolves nothing a second time, and a late
    `not_our_responsibility` sends nothing back to the router."""
    x, note = change.external_id, change.note
    changed = WorkOrderStatusChanged(
        external_id=x, status=change.ours or UNMAPPED, note=note, external_status=change.theirs
    )
    if not acts or change.ours is None:
        return [changed]
    ours, department = change.ours, change.department_id
    refers_to = _reference(change.refers_to)
    if ours == "resolved":
        resolution = note or f"Work order {x} completed by the department"
        return [changed, CaseResolved(resolution=resolution, resolved_at=change.changed_at)]
    if ours == "closed":
        resolution = note or "closed by the department"
        return [changed, CaseResolved(resolution=resolution, resolved_at=change.changed_at)]
    if ours == "duplicate":
        resolution = f"a duplicate of {refers_to}" if refers_to else "a duplicate of another request"
        if note:
            resolution += f": {note}"
        resolved = CaseResolved(resolution=resolution, resolved_at=change.changed_at, duplicate_of=refers_to)
        return [changed, resolved]
    if ours in ("not_our_responsibility", "cancelled"):
        if ours == "cancelled":
            reason = "the department cancelled its work order" + (f": {note}" if note else "")
        else:
            reason = note or "the department says it is not theirs"
        return [changed, WorkOrderRejected(department_id=department, reason=reason, external_id=x)]
    if ours == "internal_referral":
        to = refers_to if refers_to in known_departments and refers_to != department else None
        referred = WorkOrderReferred(department_id=department, to_department_id=to, external_id=x, note=note)
        return [changed, referred]
    if ours == "reopened":
        return [changed, CaseReopened(department_id=department, external_id=x, note=note)]
    return [changed]


def _reference(refers_to: str | None) -> str | None:
    """What an update points at, as it may be shown: it reaches the public view (a duplicate's other case),
    and it comes from a system we do not control, so plain text, short, without links."""
    return (resident_text(refers_to)[:100] or None) if refers_to else None


def sign(secret: str, body: bytes, timestamp: int | str) -> str:
    """The signature header value for a raw webhook body sent at `timestamp` (unix seconds): sha256=<hex
    HMAC-SHA256 of "<timestamp>." and the body>, so a captured body cannot be replayed with a fresh time."""
    signed = f"{timestamp}.".encode() + body
    return SIGNATURE_SCHEME + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_is_valid(secret: str, body: bytes, timestamp: str, header: str | None) -> bool:
    """True when the header is the HMAC of this timestamp and exactly these bytes (compared in constant time)."""
    if not header or not header.startswith(SIGNATURE_SCHEME):
        return False
    return hmac.compare_digest(sign(secret, body, timestamp).encode(), header.strip().encode())


def timestamp_problem(header: str | None, now: float, tolerance_seconds: float) -> str | None:
    """Why a webhook's X-Civicflow-Timestamp is not acceptable, or None when it is: present, whole unix seconds,
    and within `tolerance_seconds` of `now` either way (a replayed old body, a sender's clock far off)."""
    if header is None or not header.strip():
        return f"the {TIMESTAMP_HEADER} header is missing: send the unix time in seconds and sign it with the body"
    value = header.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        return f"the {TIMESTAMP_HEADER} header is not a unix time in whole seconds"
    age = now - int(value)
    if age > tolerance_seconds:
        return (
            f"the {TIMESTAMP_HEADER} is {int(age)} s old, older than the {int(tolerance_seconds)} s allowed:"
            " sign each delivery with the time it is sent (and check the sender's clock)"
        )
    if -age > tolerance_seconds:
        return (
            f"the {TIMESTAMP_HEADER} is {int(-age)} s in the future, more than the {int(tolerance_seconds)} s"
            " allowed: check the sender's clock"
        )
    return None
