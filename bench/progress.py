"""How far each of the run's cases got, folded from its stored events and read-model sightings. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

# The event that opens each stage a resident hears about (the notifier's STAGE_OF_EVENT, by name: the
# benchmark must not import a service).
STAGE_OF_EVENT = {
    "CaseSubmitted": "submitted",
    "CaseRouted": "routed",
    "CaseRerouted": "rerouted",
    "CaseResolved": "resolved",
}
ROUTING_EVENTS = ("CaseRouted", "CaseNeedsTriage")
# query.cases.status once a case is placed (routed, or with the call centre); anything but these two
PLACED_STATUSES_EXCLUDED = ("submitted", "unknown")


@dataclass(frozen=True)
class StoredEvent:
    """The few columns of an events.case_events row the benchmark needs; `at` is recorded_at (epoch s)."""

    position: int
    case_id: str
    type: str
    at: float
    stage: str | None = None  # NotificationSent / NotificationFailed
    status: str | None = None  # WorkOrderStatusChanged


@dataclass
class CaseProgress:
    """One case of the run. Times are epoch seconds: the store's recorded_at for events, this client's
    clock for read-model sightings (the same clock when the database runs on this machine)."""

    case_id: str
    tracking_number: str
    with_email: bool
    submit_started_at: float  # this client, just before SubmitRequest was sent
    submitted_at: float | None = None
    routed_at: float | None = None
    triage: bool = False
    work_order_done_at: float | None = None
    resolved_at: float | None = None
    stages: dict[str, float] = field(default_factory=dict)  # stage → when the event that opens it was stored
    notified: dict[str, float] = field(default_factory=dict)  # stage → NotificationSent / Failed stored
    notifications_failed: int = 0
    visible_placed_at: float | None = None  # first seen in query.cases past "submitted"
    visible_resolved_at: float | None = None  # first seen in query.cases as "resolved"

    def apply(self, event: StoredEvent) -> None:
        """Fold one stored event in; the first occurrence of each milestone counts (redeliveries, reopened jobs)."""
        kind = event.type
        if kind == "CaseSubmitted" and self.submitted_at is None:
            self.submitted_at = event.at
        elif kind in ROUTING_EVENTS and self.routed_at is None:
            self.routed_at = event.at
            self.triage = kind == "CaseNeedsTriage"
        elif (
            kind == "WorkOrderStatusChanged"
            and event.status in ("resolved", "done")
            and self.work_order_done_at is None
        ):
            self.work_order_done_at = event.at
        elif kind == "CaseResolved" and self.resolved_at is None:
            self.resolved_at = event.at
        elif kind in ("NotificationSent", "NotificationFailed") and event.stage:
            self.notified.setdefault(event.stage, event.at)
            self.notifications_failed += kind == "NotificationFailed"
        if (stage := STAGE_OF_EVENT.get(kind)) is not None:
            self.stages.setdefault(stage, event.at)

    def seen_in_read_model(self, status: str, at: float) -> None:
        if status not in PLACED_STATUSES_EXCLUDED and self.visible_placed_at is None:
            self.visible_placed_at = at
        if status == "resolved" and self.visible_resolved_at is None:
            self.visible_resolved_at = at

    @property
    def emails_done_at(self) -> float | None:
        """When the last stage so far was told (sent or failed for good); 0.0 for a case with no email, whose
        resident the notifier does not write to; None while a stage is still untold."""
        if not self.with_email:
            return 0.0
        if not self.stages or any(stage not in self.notified for stage in self.stages):
            return None
        return max(self.notified[stage] for stage in self.stages)

    @property
    def fully_processed_at(self) -> float | None:
        """Resolved, its work order done, every email sent, and visible as resolved: the latest of those."""
        parts = (self.resolved_at, self.work_order_done_at, self.emails_done_at, self.visible_resolved_at)
        if any(part is None for part in parts):
            return None
        return max(part for part in parts if part is not None)

    @property
    def finished(self) -> bool:
        """Nothing more will happen without a person: fully processed, or in the triage queue and told so."""
        if self.triage:
            return self.visible_placed_at is not None and self.emails_done_at is not None
        return self.fully_processed_at is not None

    @property
    def submit_to_routed_s(self) -> float | None:
        return _span(self.submitted_at, self.routed_at)

    @property
    def submit_to_resolved_s(self) -> float | None:
        return _span(self.submitted_at, self.resolved_at)


def _span(start: float | None, end: float | None) -> float | None:
    return end - start if start is not None and end is not None else None
