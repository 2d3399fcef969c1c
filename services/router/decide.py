"""What the router decides about one case, from its events so far. Pure: no framework, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseRecategorised,
    CaseRerouted,
    CaseRouted,
    CaseSubmitted,
    ResolutionDisputed,
    RoutingDecision,
    WorkOrderRejected,
    current_service_code,
    stands_resolved,
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
    if stands_resolved(history):
        return None  # resolved cases stay resolved; a new problem is a new request (or a disputed resolution)
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


REOPENED_BECAUSE = "the resident said the problem is not fixed"


def reopen(
    rules: CompiledRuleSet, history: Sequence[CaseEvent], disputed_at: datetime, channel: str | None
) -> CaseEvent | None:
    """After the resident disputed the resolution (ResolutionDisputed, the last of history): the case goes back
    to the department that resolved it, due afresh from the dispute as its rule reckons; None when there is no
    resolution standing to dispute or no department that resolved it.

    The rules are not asked where the case goes, only how long the department has: the department that did
    the work is the one the resident says did not fix it. Should today's rules place the case elsewhere, it
    goes back all the same, with no due date rather than another department's."""
    before = list(history[:-1]) if history and isinstance(history[-1], ResolutionDisputed) else list(history)
    if not stands_resolved(before):
        return None
    resolver = next((e for e in reversed(before) if isinstance(e, RoutingDecision)), None)
    if resolver is None:
        return None
    again = rules.route(replace(facts_of(before, channel), submitted_at=disputed_at))
    if isinstance(again, Routed) and again.department_id == resolver.department_id:
        return _as_event(again, REOPENED_BECAUSE, resolver.department_id)
    terms = resolver.model_dump(include=set(RoutingDecision.model_fields))
    return CaseRerouted(
        **{**terms, "due_at": None}, reason=REOPENED_BECAUSE, previous_department_id=resolver.department_id
    )
