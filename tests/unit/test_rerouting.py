"""Rerouting: a department that turns a case down is skipped; after too many refusals, triage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseRecategorised,
    CaseReopened,
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    Location,
    ResolutionDisputed,
    WorkOrderReferred,
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


# --- internal referrals and a department reopening its job --------------------------------------


def referral(to: str | None, by: str = "streets") -> WorkOrderReferred:
    return WorkOrderReferred(department_id=by, to_department_id=to, external_id="WO-1", note="not ours")


def test_a_referral_to_a_department_goes_there_by_the_rule_that_places_it_there() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    referred = referral("water")
    decision = reroute(RULES, [SUBMITTED, first, referred], referred, "phone")
    assert isinstance(decision, CaseRerouted)
    assert (decision.department_id, decision.rule_id, decision.previous_department_id) == (
        "water",
        "gas-smell",
        "streets",
    )
    assert decision.reason == "referred by streets"


def test_a_referral_to_a_department_no_rule_places_it_at_goes_there_all_the_same_without_a_due_date() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    assert isinstance(first, CaseRouted)
    referred = referral("animals")
    decision = reroute(RULES, [SUBMITTED, first, referred], referred, "phone")
    assert isinstance(decision, CaseRerouted)
    assert (decision.department_id, decision.department_name, decision.due_at) == ("animals", "Animal Control", None)
    assert decision.priority == first.priority and decision.reason == "referred by streets"
    assert decision.explanation == ["streets referred the case to animals; no rule places it there"]


@pytest.mark.parametrize("to", [None, "county-roads", "streets"])
def test_a_referral_naming_no_department_we_know_places_the_case_again_without_the_referrer(to: str | None) -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    referred = referral(to)
    decision = reroute(RULES, [SUBMITTED, first, referred], referred, "phone")
    assert isinstance(decision, CaseRerouted) and decision.department_id == "water"
    assert decision.reason == "streets referred it on without naming a department we know"


def test_referrals_count_as_turn_downs_so_a_case_bounced_around_reaches_triage() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    to_water = referral("water")
    second = reroute(RULES, [SUBMITTED, first, to_water], to_water, "phone")
    assert isinstance(second, CaseRerouted) and second.department_id == "water"
    back = referral("streets", by="water")
    third = reroute(RULES, [SUBMITTED, first, to_water, second, back], back, "phone")
    assert isinstance(third, CaseNeedsTriage) and "turned down 2 times (streets, water)" in third.reason


def test_a_later_rejection_skips_the_department_that_referred_the_case_on() -> None:
    plain = SUBMITTED.model_copy(update={"description": "a big branch fell"})
    first = route_new_case(RULES, plain, "phone")
    referred = referral("parks")
    second = reroute(RULES, [plain, first, referred], referred, "phone")
    assert isinstance(second, CaseRerouted) and second.department_id == "parks"
    change = CaseRecategorised(service_code="POTHOLE", previous_service_code="TREE_DOWN", reason="a hole")
    third = reroute(RULES, [plain, first, referred, second, change], change, "phone")
    assert isinstance(third, CaseRerouted | CaseNeedsTriage)
    assert not (isinstance(third, CaseRerouted) and third.department_id == "streets"), "streets said not theirs"


def test_a_late_referral_by_a_department_that_no_longer_holds_the_case_changes_nothing() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    no = WorkOrderRejected(department_id="streets", reason="not ours")
    second = reroute(RULES, [SUBMITTED, first, no], no, "phone")
    late = referral("parks")
    assert reroute(RULES, [SUBMITTED, first, no, second, late], late, "phone") is None  # type: ignore[list-item]


def test_a_case_its_department_reopened_no_longer_stands_resolved_and_can_be_turned_down_or_resolved_again() -> None:
    first = route_new_case(RULES, SUBMITTED, "phone")
    resolved = CaseResolved(resolution="Branch removed.", resolved_at=datetime(2026, 11, 25, 16, tzinfo=UTC))
    reopened = CaseReopened(department_id="streets", external_id="WO-1", note="more branches")
    history: list[CaseEvent] = [SUBMITTED, first, resolved, reopened]
    assert not stands_resolved(history)
    assert stands_resolved([*history, resolved])
    # the resident disputing it now changes nothing: the department has it open already
    disputed = ResolutionDisputed(call_sid="CA1")
    assert reopen(RULES, [*history, disputed], datetime(2026, 12, 7, tzinfo=UTC), "phone") is None
    no = WorkOrderRejected(department_id="streets", reason="not ours after all")
    assert isinstance(reroute(RULES, [*history, no], no, "phone"), CaseRerouted)
