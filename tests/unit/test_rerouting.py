"""Rerouting: a department that turns a case down is skipped; after too many refusals, triage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseRecategorised,
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    Location,
    ResolutionDisputed,
    WorkOrderRejected,
    stands_resolved,
)
from services.router.decide import reopen, reroute, route_new_case
from services.router.rulebook import load_rules

RULES = load_rules(Path(__file__).parents[1] / "fixtures" / "city" / "rules.yaml")
SUBMITTED = CaseSubmitted(
    tracking_number="QGPE-J5T",
    service_code="TREE_DOWN",
    description="a big branch fell and I smell a gas leak",
    location=Location(lat=41.87, long=-87.68),
    submitted_at=datetime(2026, 11, 24, 16, 0, tzinfo=UTC),
)


def test_a_new_case_is_routed_with_its_rule_and_reasons() -> None:
    routed = route_new_case(RULES, SUBMITTED, "phone")
    assert isinstance(routed, CaseRouted)
    assert (routed.department_id, routed.rule_id) == ("streets", "trees-west")
    assert routed.explanation == ["service TREE_DOWN", "inside west", "outside park"]


def test_a_rejection_reroutes_without_the_department_that_turned_it_down() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    rejection = WorkOrderRejected(department_id="streets", reason="the gas is the urgent part")
    decision = reroute(RULES, [SUBMITTED, first, rejection], rejection, "phone")
    assert isinstance(decision, CaseRerouted)
    assert (decision.department_id, decision.rule_id, decision.tags) == ("water", "gas-smell", ["call-gas-utility"])
    assert decision.previous_department_id == "streets"
    assert decision.reason == "streets turned it down: the gas is the urgent part"


def test_after_the_allowed_number_of_rejections_the_case_goes_to_triage() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    history: list[CaseEvent] = [SUBMITTED, first]
    no_1 = WorkOrderRejected(department_id="streets", reason="not ours")
    history += [no_1]
    second = reroute(RULES, history, no_1, "phone")
    assert isinstance(second, CaseRerouted) and second.department_id == "water"
    no_2 = WorkOrderRejected(department_id="water", reason="not ours either")
    history += [second, no_2]
    third = reroute(RULES, history, no_2, "phone")
    assert isinstance(third, CaseNeedsTriage)
    assert "turned down 2 times (streets, water)" in third.reason


def test_a_late_rejection_from_a_department_that_no_longer_holds_the_case_changes_nothing() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    no_1 = WorkOrderRejected(department_id="streets", reason="not ours")
    second = reroute(RULES, [SUBMITTED, first, no_1], no_1, "phone")
    assert second is not None
    again = WorkOrderRejected(department_id="streets", reason="repeated")
    assert reroute(RULES, [SUBMITTED, first, no_1, second, again], again, "phone") is None


def test_recategorising_routes_by_the_new_service() -> None:
    plain = SUBMITTED.model_copy(update={"description": "a big branch fell"})
    first = route_new_case(RULES, plain, "phone")
    assert isinstance(first, CaseRouted) and first.department_id == "streets"
    change = CaseRecategorised(
        service_code="NOISE", previous_service_code="TREE_DOWN", reason="caller meant the chainsaw"
    )
    decision = reroute(RULES, [plain, first, change], change, "phone")
    assert isinstance(decision, CaseRerouted)
    assert decision.department_id == "police" and decision.reason.startswith("recategorised from TREE_DOWN to NOISE")


def test_a_resolved_case_is_not_rerouted() -> None:
    from civicflow.events import CaseResolved

    first = route_new_case(RULES, SUBMITTED, "phone")
    done = CaseResolved(resolution="cleared", resolved_at=datetime(2026, 11, 25, tzinfo=UTC))
    change = CaseRecategorised(service_code="NOISE", previous_service_code="TREE_DOWN", reason="late correction")
    assert reroute(RULES, [SUBMITTED, first, done, change], change, "phone") is None


def test_a_disputed_resolution_goes_back_to_the_department_that_resolved_it_due_afresh() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    assert isinstance(first, CaseRouted) and first.due_at is not None
    resolved = CaseResolved(resolution="Branch removed.", resolved_at=datetime(2026, 11, 25, 16, tzinfo=UTC))
    disputed_at = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)
    history: list[CaseEvent] = [SUBMITTED, first, resolved, ResolutionDisputed(call_sid="CA1")]
    assert stands_resolved(history[:3]) and not stands_resolved(history)
    decision = reopen(RULES, history, disputed_at, "phone")
    assert isinstance(decision, CaseRerouted)
    assert (decision.department_id, decision.previous_department_id) == ("streets", "streets")
    assert decision.reason == "the resident said the problem is not fixed"
    assert decision.due_at is not None and decision.due_at > disputed_at > first.due_at
    # a second press of 2 on another call after the case went back changes nothing more
    assert reopen(RULES, [*history, decision, ResolutionDisputed(call_sid="CA2")], disputed_at, "phone") is None
    # the reopened work order can be turned down like any other
    no = WorkOrderRejected(department_id="streets", reason="not ours")
    assert isinstance(reroute(RULES, [*history, decision, no], no, "phone"), CaseRerouted | CaseNeedsTriage)


def test_a_dispute_of_an_unresolved_case_changes_nothing() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    disputed = ResolutionDisputed(call_sid="CA1")
    assert reopen(RULES, [SUBMITTED, first, disputed], datetime(2026, 12, 7, tzinfo=UTC), "phone") is None
