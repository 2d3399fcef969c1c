"""The router's policies return decisions; in a batch, a later event of a case sees the earlier ones'."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from civicflow.events import (
    CaseOverdue,
    CaseRecategorised,
    CaseReopened,
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    Location,
    WorkOrderReferred,
    WorkOrderRejected,
)
from civicflow.ids import uuid7
from civicflow.unit_of_work import in_order
from services.router.decide import route_new_case
from services.router.handlers import Router
from services.router.rulebook import RuleBook, load_rules
from tests.factories import recorded
from tests.fake_store import StoredStreams, events_of

RULES = load_rules(Path(__file__).parents[1] / "fixtures" / "city" / "rules.yaml")
AT = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
SUBMITTED = CaseSubmitted(
    tracking_number="QGPE-J5T",
    service_code="TREE_DOWN",
    description="a big branch fell and I smell a gas leak",
    location=Location(lat=41.87, long=-87.68),
    submitted_at=AT,
)


class FixedRules:
    current = RULES


def a_router() -> Router:
    return Router(None, None, cast(RuleBook, FixedRules()))  # type: ignore[arg-type]


async def test_a_new_case_is_routed_and_its_due_date_watched_without_reading_the_store() -> None:
    case_id = uuid7()
    submitted = recorded(SUBMITTED, case_id=case_id, version=1, at=AT)
    store = StoredStreams(submitted)

    decision = await a_router().on_submitted(submitted, store.reads_of())

    [append] = decision.appends
    assert (append.case_id, append.expected_version) == (case_id, None)
    [routed] = append.events
    assert isinstance(routed, CaseRouted) and routed.department_id == "streets"
    assert append.metadata.causation_id == submitted.event_id and append.metadata.actor == "router"
    [watch] = decision.writes
    assert watch.params == {"c": case_id, "d": "streets", "due": routed.due_at}
    assert store.reads == 0


async def test_a_rejection_is_rerouted_after_the_version_it_read() -> None:
    case_id = uuid7()
    routed = route_new_case(RULES, SUBMITTED, "phone")
    rejected = WorkOrderRejected(department_id="streets", reason="the gas is the urgent part")
    stream = [recorded(e, case_id=case_id, version=v, at=AT) for v, e in enumerate([SUBMITTED, routed, rejected], 1)]

    decision = await a_router().on_reroute_trigger(stream[2], StoredStreams(*stream).reads_of())

    [append] = decision.appends
    assert append.expected_version == 3
    [rerouted] = append.events
    assert isinstance(rerouted, CaseRerouted) and (rerouted.department_id, rerouted.previous_department_id) == (
        "water",
        "streets",
    )


async def test_a_late_rejection_by_a_department_that_no_longer_holds_the_case_decides_nothing() -> None:
    case_id = uuid7()
    routed = route_new_case(RULES, SUBMITTED, "phone")
    late = WorkOrderRejected(department_id="parks", reason="not ours")
    stream = [recorded(e, case_id=case_id, version=v, at=AT) for v, e in enumerate([SUBMITTED, routed, late], 1)]

    decision = await a_router().on_reroute_trigger(stream[2], StoredStreams(*stream).reads_of())

    assert decision.appends == [] and decision.writes == []


async def test_a_batch_routes_then_reroutes_a_recategorised_case_after_the_pending_decision() -> None:
    case_id = uuid7()
    submitted = recorded(SUBMITTED, case_id=case_id, version=1, at=AT)
    recategorised = recorded(
        CaseRecategorised(service_code="POTHOLE", previous_service_code="TREE_DOWN", reason="a hole, not a tree"),
        case_id=case_id,
        version=2,
        at=AT,
    )
    store = StoredStreams(submitted, recategorised)

    decision = await in_order(a_router().policies())([submitted, recategorised], store.reads_of())

    first, second = decision.appends
    assert isinstance(first.events[0], CaseRouted) and first.expected_version is None
    assert isinstance(second.events[0], CaseRerouted)
    assert second.expected_version == 3, "after the batch's own CaseRouted, which lands as version 3"
    assert store.reads == 1, "one read of the case for the whole batch"
    assert [w.params["c"] for w in decision.writes] == [case_id, case_id]
    assert len(events_of(decision.appends)) == 2


async def test_a_resolved_case_is_no_longer_watched() -> None:
    case_id = uuid7()
    resolved = recorded(CaseResolved(resolution="filled", resolved_at=AT), case_id=case_id, version=7, at=AT)
    decision = await a_router().on_resolved(resolved, StoredStreams().reads_of())
    assert decision.appends == [] and [w.params for w in decision.writes] == [{"c": case_id}]


async def test_a_referral_is_placed_with_the_department_it_names() -> None:
    case_id = uuid7()
    routed = route_new_case(RULES, SUBMITTED, "phone")
    referred = WorkOrderReferred(department_id="streets", to_department_id="water", external_id="WO-1")
    stream = [recorded(e, case_id=case_id, version=v, at=AT) for v, e in enumerate([SUBMITTED, routed, referred], 1)]

    decision = await in_order(a_router().policies())([stream[2]], StoredStreams(*stream).reads_of())

    [append] = decision.appends
    [rerouted] = append.events
    assert isinstance(rerouted, CaseRerouted) and rerouted.department_id == "water"
    assert rerouted.reason == "referred by streets"


async def test_a_case_its_department_reopened_is_watched_for_its_due_date_again_and_flagged_once() -> None:
    case_id = uuid7()
    routed = route_new_case(RULES, SUBMITTED, "phone")
    assert isinstance(routed, CaseRouted) and routed.due_at is not None
    resolved = CaseResolved(resolution="filled", resolved_at=AT)
    reopened = CaseReopened(department_id="streets", external_id="WO-1")
    life = [SUBMITTED, routed, resolved, reopened]
    stream = [recorded(e, case_id=case_id, version=v, at=AT) for v, e in enumerate(life, 1)]

    decision = await in_order(a_router().policies())([stream[3]], StoredStreams(*stream).reads_of())

    assert decision.appends == []
    assert [w.params for w in decision.writes] == [
        {"c": case_id, "d": "streets", "due": routed.due_at, "overdue": None}
    ]
    overdue = CaseOverdue(department_id="streets", due_at=routed.due_at)
    flagged = [SUBMITTED, routed, overdue, resolved, reopened]
    stream = [recorded(e, case_id=case_id, version=v, at=AT) for v, e in enumerate(flagged, 1)]
    decision = await a_router().on_reopened(stream[4], StoredStreams(*stream).reads_of())
    assert [w.params["overdue"] for w in decision.writes] == [routed.due_at], "not flagged overdue twice"
