"""SLAs of 0 ("due at once") and no SLA at all (`sla: none`), and every reader of a due date coping with none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
import yaml

from civicflow.events import CaseRerouted, CaseRouted, CaseSubmitted, Location, RoutingDecision, decode_payload
from services.notifier.domain import MessageTemplates, stage_facts
from services.query.projection import apply
from services.router.decide import route_new_case
from services.router.engine import CaseFacts, CompiledRuleSet, Routed, compile_rule_set
from services.router.handlers import track_open_case
from services.router.rules import RuleSetError, dump_rule_set, parse_rule_set
from services.workorder_bridge.domain import work_order_request
from tests.factories import recorded

FIXTURE = Path(__file__).parents[1] / "fixtures" / "city" / "rules.yaml"
GEOJSON = {"areas.geojson": {"type": "FeatureCollection", "features": []}}
SATURDAY_NIGHT = datetime(2026, 11, 28, 23, 30, tzinfo=ZoneInfo("America/Chicago"))  # the office is shut


def raw_with(sla: Any) -> dict[str, Any]:
    raw = yaml.safe_load(FIXTURE.read_text())
    raw["areas"] = []
    raw["rules"] = [{"id": "potholes", "description": "all potholes", "then": {"department": "streets", "sla": sla}}]
    return raw


def rules_with(sla: Any) -> CompiledRuleSet:
    return compile_rule_set(parse_rule_set(raw_with(sla), "test"), GEOJSON)


def routed(sla: Any) -> Routed:
    decision = rules_with(sla).route(CaseFacts(service_code="POTHOLE", description="", submitted_at=SATURDAY_NIGHT))
    assert isinstance(decision, Routed)
    return decision


@pytest.mark.parametrize("sla", [{"business_hours": 0}, {"calendar_days": 0}, {"business_hours": 0.0}])
def test_an_sla_of_0_is_due_at_the_moment_of_submission_even_when_the_office_is_shut(sla: dict[str, float]) -> None:
    decision = routed(sla)
    assert decision.due_at == SATURDAY_NIGHT
    assert decision.sla == "due at once"


@pytest.mark.parametrize("sla", ["none", "None", {"none": True}])
def test_no_sla_means_no_due_date(sla: Any) -> None:
    decision = routed(sla)
    assert decision.due_at is None
    assert decision.sla == "no SLA"


@pytest.mark.parametrize("sla", ["none", {"business_hours": 0}, {"calendar_days": 0}, {"calendar_days": 2.5}])
def test_an_sla_reads_back_from_the_yaml_it_is_written_as(sla: Any) -> None:
    rule_set = parse_rule_set(raw_with(sla), "test")
    written = dump_rule_set(rule_set)
    assert parse_rule_set(yaml.safe_load(written), "round-trip") == rule_set
    if sla == "none":
        assert "sla: none" in written


@pytest.mark.parametrize(
    ("sla", "message"),
    [
        (None, "the SLA is empty; give business_hours or calendar_days (0 for due at once), or write `sla: none`"),
        ("never", "'never' is not an SLA"),
        ("x" * 10_000, "is not an SLA"),
        ({}, "give exactly one of business_hours or calendar_days, or write `sla: none`"),
        ({"none": False}, "give exactly one"),
        ({"none": True, "business_hours": 4}, "give exactly one"),
        ({"business_hours": 4, "calendar_days": 1}, "give exactly one"),
        ({"business_hours": -1}, "expected a number at least 0, found -1"),
        ({"calendar_days": float("nan")}, "finite number"),
        ({"business_hours": float("inf")}, "finite number"),
        ({"business_hours": "\x00"}, "expected a number, found text"),
        ({"calendar_days": 1e9}, "at most 3653 (about ten years); for no deadline write `sla: none`"),
        ({"business_hours": 1e300}, "at most 87672 (about ten years)"),
    ],
)
def test_a_wrong_sla_is_refused_naming_the_rule_and_field(sla: Any, message: str) -> None:
    with pytest.raises(RuleSetError) as refused:
        parse_rule_set(raw_with(sla), "rules.yaml")
    assert "rules.yaml: rule potholes, then.sla" in str(refused.value)
    assert message in str(refused.value)


def test_a_due_at_once_nan_or_none_written_in_yaml_is_read_as_intended() -> None:
    text = FIXTURE.read_text().split("rules:\n")[0].replace("areas:\n  - {file: areas.geojson, kind: zone}\n", "")
    for written, due in (("sla: none", None), ("sla: {calendar_days: 0}", SATURDAY_NIGHT)):
        raw = yaml.safe_load(
            text + f"rules:\n  - id: potholes\n    description: all\n    then: {{department: streets, {written}}}\n"
        )
        rules = compile_rule_set(parse_rule_set(raw, "test"), GEOJSON)
        decision = rules.route(CaseFacts(service_code="POTHOLE", description="", submitted_at=SATURDAY_NIGHT))
        assert isinstance(decision, Routed) and decision.due_at == due
    with pytest.raises(RuleSetError, match="finite number"):
        parse_rule_set(
            yaml.safe_load(
                text + "rules: [{id: p, description: d, then: {department: streets, sla: {business_hours: .nan}}}]"
            ),
            "t",
        )


# --- every reader of a routing decision -----------------------------------------------------------


def no_sla_decision() -> RoutingDecision:
    submitted = CaseSubmitted(
        tracking_number="7KQ2-M9X",
        service_code="POTHOLE",
        description="a fictional pothole",
        location=Location(lat=41.88, long=-87.65),
        submitted_at=SATURDAY_NIGHT,
    )
    event = route_new_case(rules_with("none"), submitted, "web")
    assert isinstance(event, CaseRouted)
    return event


def test_a_decision_without_sla_is_recorded_with_a_null_due_date_and_reads_back() -> None:
    event = no_sla_decision()
    assert event.due_at is None and event.sla == "no SLA"
    assert decode_payload("CaseRouted", event.schema_version, event.model_dump(mode="json")) == event


def test_an_older_decision_with_a_due_date_still_loads() -> None:
    stored = {
        "department_id": "streets",
        "department_name": "Streets",
        "priority": "normal",
        "due_at": "2026-11-30T15:00:00Z",
        "rule_id": "r",
        "rule_set_version": "1",
    }
    event = decode_payload("CaseRouted", 1, stored)
    assert isinstance(event, CaseRouted) and event.due_at == datetime(2026, 11, 30, 15, tzinfo=UTC)


def test_a_case_without_sla_is_not_watched_for_being_overdue() -> None:
    case_id = uuid4()
    with_sla = no_sla_decision().model_copy(update={"due_at": SATURDAY_NIGHT + timedelta(days=1)})
    [track] = track_open_case(case_id, with_sla)
    assert "INSERT INTO router.open_cases" in str(track.sql)
    for decision in (no_sla_decision(), CaseRerouted(**no_sla_decision().model_dump(), reason="recategorised")):
        [forget] = track_open_case(case_id, decision)
        assert str(forget.sql).startswith("DELETE FROM router.open_cases"), "a no-SLA reroute forgets the old due date"


def test_the_case_view_says_there_is_no_expected_date() -> None:
    record, entry = apply(None, recorded(no_sla_decision(), case_id=uuid4(), version=2, at=SATURDAY_NIGHT))
    assert record.due_at is None
    assert entry is not None and "routed to Streets, no expected date (rule potholes)" in entry.detail


@pytest.mark.parametrize("rerouted", [False, True])
def test_the_residents_message_says_no_expected_date(rerouted: bool) -> None:
    case_id = uuid4()
    submitted = CaseSubmitted(
        tracking_number="7KQ2-M9X", service_code="POTHOLE", description="fictional", submitted_at=SATURDAY_NIGHT
    )
    decision: RoutingDecision = no_sla_decision()
    if rerouted:
        decision = CaseRerouted(**decision.model_dump(), reason="recategorised")
    story = [
        recorded(submitted, case_id=case_id, version=1, at=SATURDAY_NIGHT),
        recorded(decision, case_id=case_id, version=2, at=SATURDAY_NIGHT),
    ]
    body = " ".join(MessageTemplates(ZoneInfo("America/Chicago")).render(stage_facts(story[1], story)).body.split())
    assert "with no expected date for it." in body
    assert "expected by" not in body


def test_a_work_order_for_a_case_without_sla_carries_no_due_date() -> None:

    submitted = CaseSubmitted(
        tracking_number="7KQ2-M9X", service_code="POTHOLE", description="fictional", submitted_at=SATURDAY_NIGHT
    )
    request = work_order_request(uuid4(), submitted, no_sla_decision(), "https://example.test/callback")
    assert request.due_at is None


def test_the_longest_slas_allowed_still_give_a_due_date() -> None:
    assert routed({"calendar_days": 3653}).due_at == SATURDAY_NIGHT + timedelta(days=3653)
    due = routed({"business_hours": 24 * 3653}).due_at
    assert due is not None and due > SATURDAY_NIGHT + timedelta(days=3653)
