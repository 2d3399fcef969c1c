"""Triage that says what to fix: the rules that needed the place when the address could not be placed, and
`rules explain` / ExplainRoute showing the rules that came closest rather than every rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from civicflow.events import CaseSubmitted, Location
from civicflow.v1 import common_pb2, routing_pb2
from services.router.decide import facts_of
from services.router.engine import CaseFacts, CompiledRuleSet, Routed, Triage, compile_rule_set
from services.router.explanation import explanation_lines
from services.router.grpc_api import RoutingServicer
from services.router.rulebook import RuleBook, load_rules
from services.router.rules import dump_rule_set, parse_rule_set

FIXTURE = Path(__file__).parents[1] / "fixtures" / "city" / "rules.yaml"
RULES = load_rules(FIXTURE)
AT = datetime(2026, 11, 24, 16, tzinfo=UTC)
NOT_FOUND = "no address point matches the address given"


def tree(unplaced: str | None = None, where: tuple[float, float] | None = None) -> CaseFacts:
    lat, long = where or (None, None)
    return CaseFacts(service_code="TREE_DOWN", description="", submitted_at=AT, lat=lat, long=long, unplaced=unplaced)


def test_triage_names_the_rules_that_needed_the_place_and_why_it_could_not_be_placed() -> None:
    decision = RULES.route(tree(unplaced=NOT_FOUND))
    assert isinstance(decision, Triage)
    assert decision.reason == (
        "no rule places service 'TREE_DOWN'; rules trees-in-the-park, trees-west need the place on the map;"
        f" the address could not be placed: {NOT_FOUND}"
    )


def test_a_request_with_no_place_at_all_says_so() -> None:
    decision = RULES.route(tree())
    assert isinstance(decision, Triage) and decision.reason.endswith("the request has no place on the map")


def test_a_case_placed_on_the_map_is_not_said_to_need_the_place() -> None:
    decision = RULES.route(tree(where=(41.87, -87.60)))  # on the map, in no area a rule names
    assert isinstance(decision, Triage) and decision.reason == "no rule places service 'TREE_DOWN'"


def test_only_rules_for_the_service_and_not_turned_down_are_named() -> None:
    decision = RULES.route(tree(unplaced=NOT_FOUND), exclude=frozenset({"parks"}))
    assert isinstance(decision, Triage)
    assert "; rule trees-west needs the place on the map;" in decision.reason
    assert "trees-in-the-park" not in decision.reason
    pothole = RULES.route(CaseFacts(service_code="GRAFFITI", description="", submitted_at=AT, unplaced=NOT_FOUND))
    assert isinstance(pothole, Routed), "a case no area rule wants is routed by its other facts"


def test_a_long_unplaced_reason_is_cut_short() -> None:
    decision = RULES.route(tree(unplaced="x" * 100_000))
    assert isinstance(decision, Triage) and len(decision.reason) < 400


def test_the_facts_of_a_case_carry_why_its_address_could_not_be_placed() -> None:
    submitted = CaseSubmitted(
        tracking_number="7KQ2-M9X",
        service_code="TREE_DOWN",
        description="fictional",
        location=Location(address="1 Fictional Way", unplaced=NOT_FOUND),
        submitted_at=AT,
    )
    assert facts_of([submitted], "phone").unplaced == NOT_FOUND
    without_place = submitted.model_copy(update={"location": None})
    assert facts_of([without_place], "phone").unplaced is None


# --- the rules that came closest ------------------------------------------------------------------


def rules_of(rules: list[dict[str, Any]]) -> CompiledRuleSet:
    raw = yaml.safe_load(FIXTURE.read_text())
    raw["areas"] = []
    raw["rules"] = [
        {"description": r["id"], "then": {"department": "streets", "sla": {"business_hours": 8}}, **r} for r in rules
    ]
    return compile_rule_set(parse_rule_set(raw, "test"), {})


CLOSENESS = rules_of(
    [
        {"id": "any-gas", "when": {"words_any": ["gas"], "channels": ["system"]}},  # any service: 0 of 2
        {"id": "graffiti", "when": {"service_codes": ["GRAFFITI"], "words_any": ["deep"]}},  # another service
        {"id": "deep-hazard", "when": {"service_codes": ["POTHOLE"], "words_any": ["deep"], "flags_any": ["hazard"]}},
        {"id": "by-web", "when": {"service_codes": ["POTHOLE"], "channels": ["web"]}},
        {"id": "deep-by-web", "when": {"service_codes": ["POTHOLE"], "words_any": ["deep"], "channels": ["web"]}},
        {"id": "wide", "when": {"service_codes": ["POTHOLE"], "words_any": ["wide"]}},
        {"id": "urgent", "when": {"service_codes": ["POTHOLE"], "flags_any": ["urgent"]}},
        {"id": "huge", "when": {"service_codes": ["POTHOLE"], "words_any": ["huge"]}},
    ]
)
DEEP_BY_PHONE = CaseFacts(service_code="POTHOLE", description="a deep one", submitted_at=AT, channel="phone")


def test_a_triaged_case_shows_the_closest_rules_its_service_first_most_conditions_held_then_in_order() -> None:
    decision, trace = CLOSENESS.explain(DEEP_BY_PHONE)
    assert isinstance(decision, Triage)
    assert [(t.rule_id, t.held, t.conditions) for t in trace] == [
        ("deep-hazard", 2, 3),
        ("deep-by-web", 2, 3),
        ("by-web", 1, 2),
        ("wide", 1, 2),
        ("urgent", 1, 2),
    ]
    assert trace[0].reasons == ("service POTHOLE", "description mentions 'deep'", "not flagged hazard")
    assert trace[1].reasons == ("service POTHOLE", "description mentions 'deep'", "not by web")
    assert not any(t.matched for t in trace)
    _, all_of_them = CLOSENESS.explain(DEEP_BY_PHONE, closest=100)
    assert [t.rule_id for t in all_of_them][-2:] == ["any-gas", "graffiti"], "other services' rules come last"


def test_a_routed_case_still_shows_every_rule_up_to_the_one_that_decided() -> None:
    decision, trace = CLOSENESS.explain(
        CaseFacts(service_code="POTHOLE", description="a wide one", submitted_at=AT, channel="phone")
    )
    assert isinstance(decision, Routed) and decision.rule_id == "wide"
    assert [t.rule_id for t in trace] == ["any-gas", "graffiti", "deep-hazard", "by-web", "deep-by-web", "wide"]
    assert trace[2].reasons == ("not flagged hazard",)  # the first condition that failed, cheapest first
    assert (trace[2].held, trace[2].conditions) == (None, 3), "not counted past the first failure"
    assert (trace[-1].matched, trace[-1].held, trace[-1].conditions) == (True, 2, 2)


def test_a_triage_after_rejections_shows_the_rule_that_was_skipped() -> None:
    facts = CaseFacts(service_code="POTHOLE", description="", submitted_at=AT, flags=frozenset({"hazard"}))
    decision, trace = RULES.explain(facts, exclude=frozenset({"streets"}))
    assert isinstance(decision, Triage)
    assert trace[0].rule_id == "pothole-hazard" and trace[0].skipped == "streets already turned it down"
    assert trace[0].held == trace[0].conditions == 2


# --- through gRPC and the command line ---------------------------------------------------------------


class _Context:
    async def abort(self, *args: object) -> None:
        raise AssertionError(f"aborted: {args}")


def explain_draft(book: RuleBook, draft: routing_pb2.DraftRequest) -> routing_pb2.ExplainRouteResponse:
    servicer = RoutingServicer(book, engine=None, store=None)  # type: ignore[arg-type]  # a draft reads nothing
    request = routing_pb2.ExplainRouteRequest(draft=draft)
    return asyncio.run(servicer.ExplainRoute(request, _Context()))  # type: ignore[arg-type]


def test_explain_route_of_a_triaged_draft_gives_the_closest_rules_with_what_held() -> None:
    draft = routing_pb2.DraftRequest(service_code="TREE_DOWN", description="fictional", channel="phone")
    draft.submitted_at.FromDatetime(AT)
    reply = explain_draft(RuleBook(FIXTURE), draft)
    assert not reply.routed and "need the place on the map" in reply.triage_reason
    assert [(e.rule_id, e.conditions_held, e.conditions) for e in reply.evaluations][:2] == [
        ("trees-in-the-park", 1, 2),
        ("trees-west", 1, 3),
    ]
    lines = explanation_lines(reply)
    assert lines[1] == "rules that came closest:"
    assert lines[2].split() == ["no", "trees-in-the-park", "1/2", "service", "TREE_DOWN;", "not", "inside", "park"]


def test_explain_route_of_a_rule_without_sla_leaves_the_due_date_unset(tmp_path: Path) -> None:
    raw = yaml.safe_load(FIXTURE.read_text())
    raw["areas"] = []
    raw["rules"] = [{"id": "potholes", "description": "d", "then": {"department": "streets", "sla": "none"}}]
    (tmp_path / "rules.yaml").write_text(dump_rule_set(parse_rule_set(raw, "test")))
    draft = routing_pb2.DraftRequest(service_code="POTHOLE", location=common_pb2.Location())
    reply = explain_draft(RuleBook(tmp_path / "rules.yaml"), draft)
    assert reply.routed and not reply.HasField("due_at") and reply.sla == "no SLA"
    assert explanation_lines(reply)[0] == "-> Streets (streets), priority normal, no SLA"


def test_explain_route_of_a_routed_draft_lists_every_rule_up_to_the_one_that_decided() -> None:
    draft = routing_pb2.DraftRequest(service_code="TREE_DOWN", description="fictional", channel="phone")
    draft.location.lat, draft.location.long = 41.87, -87.68  # west, outside the park
    draft.submitted_at.FromDatetime(AT)
    reply = explain_draft(RuleBook(FIXTURE), draft)
    assert reply.routed and reply.rule_id == "trees-west"
    lines = explanation_lines(reply)
    assert lines[0].startswith("-> Streets (streets), priority normal, due ") and lines[0].endswith(
        "(24 business hours)"
    )
    assert lines[2] == "rules looked at, in order:"
    assert lines[3].split() == ["no", "water-main-break", "not", "service", "WATER_LEAK"]
    assert lines[-1].split()[:3] == ["MATCH", "trees-west", "3/3"]
