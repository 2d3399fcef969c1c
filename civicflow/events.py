"""The event catalogue: every fact civicflow records about a case, with its envelope and upcasters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

JsonDict = dict[str, Any]
Upcaster = Callable[[JsonDict], JsonDict]


class CaseEvent(BaseModel):
    """Base of every event payload. Subclasses name their type and version; older shapes are upcast."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    # upcasters[n] turns a stored version-n payload into version n+1.
    upcasters: ClassVar[dict[int, Upcaster]] = {}


CATALOGUE: dict[str, type[CaseEvent]] = {}
E = TypeVar("E", bound=type[CaseEvent])


def catalogued(cls: E) -> E:
    """Register an event class under its type name so stored and wire events can be decoded."""
    if cls.event_type in CATALOGUE:
        raise ValueError(f"event type {cls.event_type!r} is registered twice")
    CATALOGUE[cls.event_type] = cls
    return cls


class UnknownEventType(ValueError):
    pass


def decode_payload(event_type: str, schema_version: int, data: JsonDict) -> CaseEvent:
    """Load a stored payload of any past version into the current model."""
    cls = CATALOGUE.get(event_type)
    if cls is None:
        raise UnknownEventType(f"no event type {event_type!r} in the catalogue")
    if schema_version > cls.schema_version:
        raise ValueError(
            f"{event_type} v{schema_version} is newer than this code (v{cls.schema_version}); upgrade the service"
        )
    for version in range(schema_version, cls.schema_version):
        data = cls.upcasters[version](data)
    return cls.model_validate(data)


class EventMetadata(BaseModel):
    """Who and what caused an event; copied from cause to effect so one request can be followed end to end."""

    model_config = ConfigDict(frozen=True)

    correlation_id: UUID
    causation_id: UUID | None = None
    actor: str
    channel: str | None = None


class RecordedEvent(BaseModel):
    """An event as the store holds it: the envelope and its decoded payload."""

    model_config = ConfigDict(frozen=True)

    position: int
    event_id: UUID
    case_id: UUID
    version: int
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    metadata: EventMetadata
    data: CaseEvent

    def caused(self, actor: str) -> EventMetadata:
        """Metadata for an event decided in reaction to this one."""
        return EventMetadata(
            correlation_id=self.metadata.correlation_id,
            causation_id=self.event_id,
            actor=actor,
            channel=self.metadata.channel,
        )


# --- the catalogue -----------------------------------------------------------------------------


class Location(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: float | None = Field(default=None, ge=-90, le=90)
    long: float | None = Field(default=None, ge=-180, le=180)
    address: str | None = None
    point_source: Literal["given", "geocoded"] | None = Field(
        default=None, description="given: the point came with the request; geocoded: found from the address."
    )
    unplaced: str | None = Field(default=None, description="Why the address could not be placed on the map.")

    @model_validator(mode="after")
    def _one_way_to_find_it(self) -> Location:
        if (self.lat is None) != (self.long is None):
            raise ValueError("give both lat and long, or neither")
        if self.lat is None and not self.address:
            raise ValueError("give lat and long or an address")
        return self


class ImportedFrom(BaseModel):
    """Where an imported past request came from: it is history, so nothing acts on it as today's work."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="The old system, as the import mapping names it.")
    external_id: str = Field(
        description="The request's number in the old system (or, where it has none, a digest of its content)."
    )
    closed_at: datetime | None = Field(default=None, description="When the old system closed it, if it did.")
    status: Literal["open", "closed"] = Field(description="Its status in the old system, as open or closed.")
    old_department: str | None = Field(
        default=None, description="Our department id for the agency that had it in the old system, when mapped."
    )


@catalogued
class CaseSubmitted(CaseEvent):
    """A resident's request was accepted and given a tracking number (intake)."""

    event_type: ClassVar[str] = "CaseSubmitted"

    tracking_number: str
    service_code: str
    description: str
    location: Location | None = Field(default=None, description="None for a service with no place (a question).")
    submitted_at: datetime
    # The resident's contact, sealed with the case's own key (see civicflow.pii); never readable from
    # the log alone, and forgotten for good when that key is deleted.
    sealed_contact: str | None = Field(
        default=None,
        description="The resident's contact, encrypted with the case's own key; opaque outside civicflow.",
    )
    preferred_channel: str | None = Field(default=None, description="email, sms or voice, when the resident chose.")
    has_email: bool = False
    language: str = Field(default="en", description="The language the resident hears back in (en, es).")
    updates: Literal["all", "outcome"] = Field(
        default="all", description="all: every stage; outcome: only when the case is resolved."
    )
    attributes: dict[str, str] = Field(default={}, description="Answers to the service's questions, by question code.")
    flags: list[str] = Field(default=[], description="Priority flags the caller raised (hazard, blocking_traffic, …).")
    imported: ImportedFrom | None = Field(
        default=None,
        description="Set for a past request brought in from a city's old system (civicflow import): submitted_at"
        " is its original time, and no work order or notification is made for it.",
    )


class RoutingDecision(CaseEvent):
    """Which department owns the case, by when, and which rule of which rule set said so."""

    department_id: str
    department_name: str
    priority: str
    due_at: datetime | None = Field(description="When the department must have dealt with it; null: no SLA.")
    rule_id: str = Field(description="The rule that decided, by its id in the rule set.")
    rule_set_version: str
    explanation: list[str] = Field(default=[], description="Which of the rule's conditions matched, in words.")
    queue: str | None = None
    crew: str | None = None
    sla: str | None = None
    tags: list[str] = []
    time_zone: str | None = Field(
        default=None,
        description="The IANA time zone of the department's calendar, where the due date is a wall-clock time.",
    )


@catalogued
class CaseRouted(RoutingDecision):
    """The rules placed the case with a department, with a priority and a due date (router)."""

    event_type: ClassVar[str] = "CaseRouted"


@catalogued
class CaseRerouted(RoutingDecision):
    """Routed again after a department turned the case down or a call-taker changed its service."""

    event_type: ClassVar[str] = "CaseRerouted"

    reason: str
    previous_department_id: str | None = None


@catalogued
class WorkOrderRejected(CaseEvent):
    """A department turned the case down: not theirs, or its system refused the work order (bridge)."""

    event_type: ClassVar[str] = "WorkOrderRejected"

    department_id: str
    reason: str
    external_id: str | None = None


@catalogued
class CaseRecategorised(CaseEvent):
    """A call-taker corrected the service type; the case goes back through the rules."""

    event_type: ClassVar[str] = "CaseRecategorised"

    service_code: str
    previous_service_code: str
    reason: str


def current_service_code(history: Iterable[CaseEvent]) -> str | None:
    """A case's service as it stands: the submitted code, or the latest a call-taker corrected it to."""
    code = None
    for event in history:
        if isinstance(event, CaseSubmitted) and code is None:
            code = event.service_code
        elif isinstance(event, CaseRecategorised):
            code = event.service_code
    return code


def stands_resolved(history: Iterable[CaseEvent]) -> bool:
    """Whether a case stands resolved: resolved, and neither the resident has said since that the problem is
    not fixed (ResolutionDisputed sends it back to its department) nor the department reopened its job
    (CaseReopened), until it is resolved again."""
    resolved = False
    for event in history:
        if isinstance(event, CaseResolved):
            resolved = True
        elif isinstance(event, ResolutionDisputed | CaseReopened):
            resolved = False
    return resolved


def imported_from(history: Iterable[CaseEvent]) -> ImportedFrom | None:
    """Where a case was imported from, or None for a live request: history no one should act on today."""
    submitted = next((e for e in history if isinstance(e, CaseSubmitted)), None)
    return submitted.imported if submitted else None


@catalogued
class CaseOverdue(CaseEvent):
    """The case passed its due date without being resolved (recorded once per due date)."""

    event_type: ClassVar[str] = "CaseOverdue"

    department_id: str
    due_at: datetime


@catalogued
class CaseNeedsTriage(CaseEvent):
    """No rule could place the case, or departments kept turning it down: a call-taker decides (router)."""

    event_type: ClassVar[str] = "CaseNeedsTriage"

    queue: str
    reason: str
    rule_set_version: str


@catalogued
class WorkOrderOpened(CaseEvent):
    """The department's own work-order system took the case; external_id is its number there (bridge)."""

    event_type: ClassVar[str] = "WorkOrderOpened"

    department_id: str
    system: str
    external_id: str


@catalogued
class WorkOrderSyncFailed(CaseEvent):
    """The department's system did not take the work order; the bridge keeps trying until it does (bridge)."""

    event_type: ClassVar[str] = "WorkOrderSyncFailed"

    department_id: str
    reason: str = Field(description="What went wrong, by kind (never personal data).")


@catalogued
class WorkOrderStatusChanged(CaseEvent):
    """The department's system reported progress on the work order (bridge)."""

    event_type: ClassVar[str] = "WorkOrderStatusChanged"

    external_id: str
    status: str = Field(
        description="Our status (open, acknowledged, in_progress, action_scheduled, resolved, closed, duplicate,"
        " not_our_responsibility, internal_referral, reopened, cancelled), or unmapped when the department's"
        " mapping does not know theirs. Events recorded before the vocabulary say open, in_progress, done or"
        " rejected."
    )
    note: str | None = None
    external_status: str | None = Field(
        default=None, description="The status in the department's own words, as their system sent it."
    )


@catalogued
class WorkOrderCancelled(CaseEvent):
    """The case moved on (rerouted, sent to triage, closed as a duplicate): an earlier department's work order
    was cancelled in its system, or, where its system cannot cancel, the department was told (bridge)."""

    event_type: ClassVar[str] = "WorkOrderCancelled"

    department_id: str
    external_id: str
    reason: str = Field(description="Why, in words, as the department was told.")
    how: Literal["cancelled", "told"] = Field(
        description="cancelled: through its system; told: its system cannot cancel, so the department was told"
        " by its channel."
    )


@catalogued
class WorkOrderReopenedThere(CaseEvent):
    """The department's system no longer knew the work order (it lost it), so the bridge opened it again there
    under the same key, and their system gave it a new number: the case's updates come under external_id now
    (bridge, reconciliation)."""

    event_type: ClassVar[str] = "WorkOrderReopenedThere"

    department_id: str
    old_external_id: str
    external_id: str


@catalogued
class WorkOrderLost(CaseEvent):
    """The department's system no longer knows the work order and it could not be opened there again (their
    system refused, or still holds our key for the work order it lost): the case waits in the department's
    supervisor queue for a person to take it up (bridge, reconciliation)."""

    event_type: ClassVar[str] = "WorkOrderLost"

    department_id: str
    external_id: str
    queue: str = Field(description="The supervisor queue the case is in: the department's on-call queue, if any.")
    reason: str = Field(description="Why it could not be opened again, in words (never personal data).")


@catalogued
class CaseResolved(CaseEvent):
    """The department finished the work; resolution says what was done (bridge)."""

    event_type: ClassVar[str] = "CaseResolved"

    resolution: str
    resolved_at: datetime
    duplicate_of: str | None = Field(
        default=None,
        description="Set when the department closed it as a duplicate: the other request's tracking number, when"
        " it said which.",
    )


@catalogued
class WorkOrderReferred(CaseEvent):
    """The department passed the case to another department (an internal referral): the router places it
    there, or, when none is named or the one named is unknown, again without the referring department
    (bridge; the router reacts)."""

    event_type: ClassVar[str] = "WorkOrderReferred"

    department_id: str = Field(description="The department that referred it on.")
    to_department_id: str | None = Field(
        default=None, description="The department it was referred to, when it named one civicflow knows."
    )
    external_id: str
    note: str | None = None


@catalogued
class CaseReopened(CaseEvent):
    """The department reopened its job on a resolved case: the case no longer stands resolved, and the same
    work order's next `resolved` resolves it again (bridge)."""

    event_type: ClassVar[str] = "CaseReopened"

    department_id: str
    external_id: str
    note: str | None = None


@catalogued
class NotificationSent(CaseEvent):
    """The resident was told of a stage on their chosen channel (notifier)."""

    event_type: ClassVar[str] = "NotificationSent"

    stage: str
    channel: str
    message_id: str


@catalogued
class NotificationFailed(CaseEvent):
    """Telling the resident of a stage failed for good; reason names the kind of failure (notifier)."""

    event_type: ClassVar[str] = "NotificationFailed"

    stage: str
    channel: str
    reason: str


@catalogued
class NotificationDelivered(CaseEvent):
    """What the provider said became of a call (answered, busy, no-answer, failed) or of a text (delivered,
    undelivered, failed): when it will be tried again, or which channel the message falls back to (notifier)."""

    event_type: ClassVar[str] = "NotificationDelivered"

    stage: str
    channel: str = Field(description="voice or sms")
    outcome: str = Field(
        description="A call: answered, busy, no-answer, failed or canceled; a text: delivered, undelivered or"
        " failed (the provider's words)."
    )
    attempt: int = Field(ge=1, description="Which call of this stage it was: 1 the first (a text: its row's).")
    retry_at: datetime | None = Field(default=None, description="When the resident is called again; null: not.")
    fallback: str | None = Field(default=None, description="After the last call: sms or email is tried instead.")
    error_code: int | None = Field(default=None, description="The provider's error code, when it gave one.")


@catalogued
class ResidentReplied(CaseEvent):
    """The resident texted back about the case; the text is for the department, never for public views
    or logs (notifier)."""

    event_type: ClassVar[str] = "ResidentReplied"

    text: str = Field(max_length=1600, description="What the resident wrote, as plain text on one line.")
    channel: str = Field(default="sms", description="How it came: sms.")


@catalogued
class ResolutionDisputed(CaseEvent):
    """The resident said the problem is not fixed (pressed 2 on the resolution's call): the case goes back to
    the department that resolved it (notifier; the router reacts)."""

    event_type: ClassVar[str] = "ResolutionDisputed"

    channel: str = Field(default="voice", description="How the resident said it: voice.")
    call_sid: str | None = Field(default=None, description="The provider's id of the call it was said on.")


@catalogued
class PreferencesChanged(CaseEvent):
    """The resident changed how they hear back about the case; None: unchanged (notifier)."""

    event_type: ClassVar[str] = "PreferencesChanged"

    preferred_channel: str | None = Field(default=None, description="email, sms, voice or none.")
    language: str | None = Field(default=None, description="en or es.")
    updates: Literal["all", "outcome"] | None = None


@catalogued
class SurveySent(CaseEvent):
    """The resident was asked, once, how the city did on a resolved case (notifier)."""

    event_type: ClassVar[str] = "SurveySent"

    channel: Literal["sms", "email"]
    message_id: str = Field(description="The provider's sid for a text; the email's Message-ID.")


@catalogued
class SurveyAnswered(CaseEvent):
    """The resident's answer to the satisfaction survey: a score from 1 (poor) to 5 (great) (notifier)."""

    event_type: ClassVar[str] = "SurveyAnswered"

    score: int = Field(ge=1, le=5)
    channel: Literal["sms", "email"]


@catalogued
class StaffAlerted(CaseEvent):
    """The department's on-call contacts were alerted at once about an urgent or hazard case (notifier).
    Carries how many, never who or at which number."""

    event_type: ClassVar[str] = "StaffAlerted"

    department_id: str
    contacts: int = Field(ge=0, description="How many on-call contacts were texted or called.")
    reason: Literal["urgent", "hazard"] = Field(
        description="urgent: routed with an urgent priority; hazard: the caller flagged a hazard."
    )


@catalogued
class AlertAcknowledged(CaseEvent):
    """An on-call contact took the case by texting ACK (notifier)."""

    event_type: ClassVar[str] = "AlertAcknowledged"

    by: str = Field(description="Who took it, as the city file names the on-call contact (a role).")
    department_id: str
