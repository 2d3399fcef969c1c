"""What the router decides about one case, from its events so far. Pure: no framework, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseRecategorised,
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    RoutingDecision,
    WorkOrderRejected,
    current_service_code,
)
from services.router.engine import CaseFacts, CompiledRuleSet, Routed, Triage


def facts_of(history: Sequence[CaseEvent], channel: str | None) -> CaseFacts:
    """The routing facts of a case: its submission (made by `channel`), with the latest service code a
    call-taker gave it."""
    submitted = next((e for e in history if isinstance(e, CaseSubmitted)), None)
    if submitted is None:
        raise ValueError("the case has no CaseSubmitted event")
    return CaseFacts(
        service_code=current_service_code(history) or submitted.service_code,
        description=submitted.description,
        submitted_at=submitted.submitted_at,
        lat=submitted.location.lat if submitted.location else None,
        long=submitted.location.long if submitted.location else None,
        attributes=submitted.attributes,
        flags=frozenset(submitted.flags),
        channel=channel,
        unplaced=submitted.location.unplaced if submitted.location else None,
    )


def current_department(history: Sequence[CaseEvent]) -> str | None:
    department = None
    for event in history:
        if isinstance(event, RoutingDecision):
            department = event.department_id
        elif isinstance(event, CaseNeedsTriage):
            department = None
    return department


def _as_event(decision: Routed | Triage, rerouted_because: str | None, previous: str | None) -> CaseEvent:
    if isinstance(decision, Triage):
        return CaseNeedsTriage(queue=decision.queue, reason=decision.reason, rule_set_version=decision.rule_set_version)
    fields: dict[str, Any] = {
        "department_id": decision.department_id,
        "department_name": decision.department_name,
        "priority": decision.priority,
        "due_at": decision.due_at,
        "rule_id": decision.rule_id,
        "rule_set_version": decision.rule_set_version,
        "explanation": list(decision.explanation),
        "queue": decision.queue,
        "crew": decision.crew,
        "sla": decision.sla,
        "tags": list(decision.tags),
        "time_zone": decision.time_zone,
    }
    if rerouted_because is None:
        return CaseRouted(**fields)
    return CaseRerouted(**fields, reason=rerouted_because, previous_department_id=previous)


def route_new_case(rules: CompiledRuleSet, submitted: CaseSubmitted, channel: str | None) -> CaseEvent:
    return _as_event(rules.route(facts_of([submitted], channel)), None, None)


def reroute(
    rules: CompiledRuleSet, history: Sequence[CaseEvent], trigger: CaseEvent, channel: str | None
) -> CaseEvent | None:
    """After a rejection or a recategorisation: the next department, triage, or None when nothing changes."""
    if any(isinstance(e, CaseResolved) for e in history):
        return None  # resolved cases stay resolved; a new problem is a new request
    previous = current_department(history)
    rejected = [e for e in history if isinstance(e, WorkOrderRejected)]
    if isinstance(trigger, WorkOrderRejected):
        if trigger.department_id != previous:
            return None  # a late or repeated rejection by a department that no longer holds the case
        if len(rejected) >= rules.rule_set.triage.max_rejections:
            turned_down = ", ".join(dict.fromkeys(r.department_id for r in rejected))
            return CaseNeedsTriage(
                queue=rules.rule_set.triage.queue,
                reason=f"turned down {len(rejected)} times ({turned_down}); a call-taker should place it",
                rule_set_version=rules.version,
            )
        because = f"{trigger.department_id} turned it down: {trigger.reason}"
    elif isinstance(trigger, CaseRecategorised):
        because = f"recategorised from {trigger.previous_service_code} to {trigger.service_code}: {trigger.reason}"
    else:
        raise TypeError(f"cannot reroute on {type(trigger).__name__}")
    exclude = frozenset(r.department_id for r in rejected)
    return _as_event(rules.route(facts_of(history, channel), exclude), because, previous)
