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
    WorkOrderReferred,
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


def turned_down_by(history: Sequence[CaseEvent]) -> list[str]:
    """The departments that passed the case on, once per time: rejections and internal referrals alike (a
    referral is the department saying it is not theirs), so a case bounced between departments reaches triage
    after the rule set's max_rejections as a rejected one does."""
    return [e.department_id for e in history if isinstance(e, WorkOrderRejected | WorkOrderReferred)]


def reroute(
    rules: CompiledRuleSet, history: Sequence[CaseEvent], trigger: CaseEvent, channel: str | None
) -> CaseEvent | None:
    """After a rejection, an internal referral or a recategorisation: the next department, triage, or None when
    nothing changes. A referral to a department goes there (`refer`); one that names none we know is placed
    again without the referring department, as a rejection is."""
    if stands_resolved(history):
        return None  # resolved cases stay resolved; a new problem is a new request (or a disputed resolution)
    previous = current_department(history)
    turned_down = turned_down_by(history)
    exclude = frozenset(turned_down)
    if isinstance(trigger, WorkOrderRejected | WorkOrderReferred):
        if trigger.department_id != previous:
            return None  # a late or repeated rejection by a department that no longer holds the case
        if len(turned_down) >= rules.rule_set.triage.max_rejections:
            names = ", ".join(dict.fromkeys(turned_down))
            return CaseNeedsTriage(
                queue=rules.rule_set.triage.queue,
                reason=f"turned down {len(turned_down)} times ({names}); a call-taker should place it",
                rule_set_version=rules.version,
            )
        if isinstance(trigger, WorkOrderReferred):
            referred = refer(rules, history, trigger, channel, exclude)
            if referred is not None:
                return referred
            because = f"{trigger.department_id} referred it on without naming a department we know"
        else:
            because = f"{trigger.department_id} turned it down: {trigger.reason}"
    elif isinstance(trigger, CaseRecategorised):
        because = f"recategorised from {trigger.previous_service_code} to {trigger.service_code}: {trigger.reason}"
    else:
        raise TypeError(f"cannot reroute on {type(trigger).__name__}")
    return _as_event(rules.route(facts_of(history, channel), exclude), because, previous)


def refer(
    rules: CompiledRuleSet,
    history: Sequence[CaseEvent],
    trigger: WorkOrderReferred,
    channel: str | None,
    exclude: frozenset[str],
) -> CaseEvent | None:
    """The case placed with the department a referral names: by the rule that would place it there, or, when
    no rule does, there all the same with the referring decision's priority and no due date. None when it
    names no department of the rule set, or one that has turned the case down before (the rules decide)."""
    to = trigger.to_department_id
    departments = rules.rule_set.departments
    if to is None or to not in departments or to in exclude:
        return None
    because = f"referred by {trigger.department_id}"
    previous = current_department(history)
    facts = facts_of(history, channel)
    there = rules.route(facts, frozenset(departments) - {to})
    if isinstance(there, Routed) and there.department_id == to:
        return _as_event(there, because, previous)
    referring = next((e for e in reversed(history) if isinstance(e, RoutingDecision)), None)
    if referring is None:
        return None
    department = departments[to]
    terms = referring.model_dump(include=set(RoutingDecision.model_fields))
    return CaseRerouted(
        **{
            **terms,
            "department_id": to,
            "department_name": department.name,
            "due_at": None,
            "queue": None,
            "crew": None,
            "sla": None,
            "explanation": [f"{trigger.department_id} referred the case to {to}; no rule places it there"],
            "time_zone": rules.calendars[department.calendar].spec.timezone,
        },
        reason=because,
        previous_department_id=previous,
    )


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
