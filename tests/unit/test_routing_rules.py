"""The routing engine, table-driven: every kind of condition, calendars, triage, explanations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from services.router.engine import CaseFacts, CompiledRuleSet, Routed, Triage, compile_rule_set
from services.router.rulebook import load_rules
from services.router.rules import RuleSetError, dump_rule_set, parse_rule_set, read_rule_set

FIXTURE = Path(__file__).parents[1] / "fixtures" / "city" / "rules.yaml"
CHICAGO = ZoneInfo("America/Chicago")
RULES = load_rules(FIXTURE)
PARK, WEST, EAST = (41.87, -87.65), (41.87, -87.68), (41.87, -87.62)


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=CHICAGO)


TUESDAY_10 = local("2026-11-24T10:00")


def facts(
    code: str, description: str = "", at: datetime = TUESDAY_10, where: tuple[float, float] | None = None, **kw: object
) -> CaseFacts:
    lat, long = where if where else (None, None)
    return CaseFacts(service_code=code, description=description, submitted_at=at, lat=lat, long=long, **kw)  # type: ignore[arg-type]


CASES = [
    # (name, facts, rule id or None for triage, due date in Chicago or None)
    (
        "words: a gushing leak is an emergency",
        facts("WATER_LEAK", "Water GUSHING out of the road"),
        "water-main-break",
        "2026-11-24T14:00",
    ),
    ("words: an ordinary leak", facts("WATER_LEAK", "small leak by the kerb"), "water", "2026-11-26T10:00"),
    (
        "flags: a hazardous pothole",
        facts("POTHOLE", "deep", flags=frozenset({"hazard"})),
        "pothole-hazard",
        "2026-11-25T09:00",
    ),
    ("group: an ordinary pothole", facts("POTHOLE", "deep"), "streets", None),
    (
        "attributes: an aggressive dog, any case",
        facts("STRAY_DOG", attributes={"dog_behaviour": "Aggressive"}),
        "aggressive-dog",
        "2026-11-24T16:00",
    ),
    ("attributes: a calm dog", facts("STRAY_DOG", attributes={"dog_behaviour": "calm"}), "dogs", None),
    (
        "time window across midnight",
        facts("NOISE", "party", at=local("2026-11-24T23:30")),
        "night-noise",
        "2026-11-25T23:30",
    ),
    ("time window: daytime", facts("NOISE", "drilling"), "noise-by-day", None),
    (
        "outside business hours: Saturday",
        facts("SIGNAL_OUT", at=local("2026-11-28T10:00")),
        "signal-after-hours",
        "2026-11-28T12:00",
    ),
    ("inside business hours", facts("SIGNAL_OUT"), "signals", None),
    ("inside an area", facts("TREE_DOWN", where=PARK), "trees-in-the-park", None),
    ("outside one area, inside another", facts("TREE_DOWN", where=WEST), "trees-west", None),
    ("no rule for the place: triage", facts("TREE_DOWN", where=EAST), None, None),
    ("no location: area rules cannot match", facts("TREE_DOWN"), None, None),
    ("channel and words_none", facts("GRAFFITI", "tag on a wall", channel="system"), "graffiti-from-systems", None),
    ("words_none excludes", facts("GRAFFITI", "a new mural", channel="system"), "streets", None),
    ("channel excludes", facts("GRAFFITI", "tag on a wall", channel="phone"), "streets", None),
    (
        "pattern, whatever the service",
        facts("TREE_DOWN", "tree fell and I smell a gas leak", where=EAST),
        "gas-smell",
        None,
    ),
    ("unknown service: triage", facts("UFO", "lights in the sky"), None, None),
    (
        "business hours skip a holiday",
        facts("POTHOLE", flags=frozenset({"hazard"}), at=local("2026-11-25T16:00")),
        "pothole-hazard",
        "2026-11-27T15:00",
    ),
    (
        "calendar days across the DST change",
        facts("NOISE", at=local("2026-11-01T00:30")),
        "night-noise",
        "2026-11-02T00:30",
    ),
]


@pytest.mark.parametrize(("name", "case", "rule_id", "due"), CASES, ids=[c[0] for c in CASES])
def test_routing_table(name: str, case: CaseFacts, rule_id: str | None, due: str | None) -> None:
    decision = RULES.route(case)
    if rule_id is None:
        assert isinstance(decision, Triage), decision
        assert decision.queue == "call-centre-triage" and case.service_code in decision.reason
        return
    assert isinstance(decision, Routed), decision
    assert decision.rule_id == rule_id
    assert decision.rule_set_version == "test-1"
    if due is not None:
        assert decision.due_at == local(due), decision.due_at.astimezone(CHICAGO)


def test_a_decision_says_which_conditions_matched() -> None:
    decision = RULES.route(facts("WATER_LEAK", "water gushing everywhere"))
    assert isinstance(decision, Routed)
    assert decision.explanation == ("service WATER_LEAK", "description mentions 'gushing'")
    assert (decision.queue, decision.priority, decision.tags, decision.sla) == (
        "water-emergency",
        "urgent",
        ("emergency",),
        "4 business hours",
    )
    assert decision.time_zone == "America/Chicago", "the due date is read on the department's calendar"


def test_explain_shows_why_each_earlier_rule_did_not_match() -> None:
    decision, trace = RULES.explain(facts("TREE_DOWN", where=WEST))
    assert isinstance(decision, Routed) and decision.rule_id == "trees-west"
    by_id = {t.rule_id: t for t in trace}
    assert by_id["water-main-break"].reasons == ("not service WATER_LEAK",)
    assert by_id["trees-in-the-park"].reasons == ("not inside park",)
    assert by_id["trees-west"].matched and "inside west" in by_id["trees-west"].reasons
    assert trace[-1].rule_id == "trees-west"


def test_excluded_departments_are_skipped_and_the_case_falls_to_the_next_rule_or_triage() -> None:
    decision = RULES.route(facts("WATER_LEAK", "gushing"), exclude=frozenset({"water"}))
    assert isinstance(decision, Triage) and "water excluded" in decision.reason
    decision, trace = RULES.explain(facts("POTHOLE", flags=frozenset({"hazard"})), exclude=frozenset({"streets"}))
    assert isinstance(decision, Triage)
    assert any(t.skipped for t in trace)


@given(
    code=st.sampled_from(["POTHOLE", "WATER_LEAK", "TREE_DOWN", "STRAY_DOG", "NOISE", "SIGNAL_OUT", "GRAFFITI", "X"]),
    words=st.text(max_size=40),
    minutes=st.integers(min_value=0, max_value=2 * 365 * 24 * 60),
    where=st.one_of(st.none(), st.tuples(st.floats(41.84, 41.91), st.floats(-87.71, -87.59))),
    flags=st.frozensets(st.sampled_from(["hazard", "blocking_traffic", "other"])),
    channel=st.sampled_from([None, "phone", "web", "app", "system"]),
)
@settings(max_examples=300, deadline=None)
def test_every_request_gets_exactly_one_outcome_and_a_sane_due_date(
    code: str, words: str, minutes: int, where: tuple[float, float] | None, flags: frozenset[str], channel: str | None
) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    decision = RULES.route(facts(code, words, at=at, where=where, flags=flags, channel=channel))
    assert isinstance(decision, Routed | Triage)
    if isinstance(decision, Routed):
        assert decision.due_at > at
        rule = next(r for r in RULES.rule_set.rules if r.id == decision.rule_id)
        if rule.then.sla.business_hours is not None:
            calendar = RULES.calendars[RULES.rule_set.departments[decision.department_id].calendar]
            just_before = decision.due_at - timedelta(seconds=1)
            assert calendar.is_open(decision.due_at) or calendar.is_open(just_before)


def test_a_rule_set_and_its_yaml_round_trip_to_an_equal_rule_set() -> None:
    rule_set, _ = read_rule_set(FIXTURE)
    assert parse_rule_set(yaml.safe_load(dump_rule_set(rule_set)), "round-trip") == rule_set


_words = st.lists(st.sampled_from(["flood", "gas", "tree", "noise", "smell"]), min_size=1, max_size=3, unique=True)
_rule = st.fixed_dictionaries(
    {
        "description": st.text(min_size=1, max_size=20),
        "when": st.fixed_dictionaries(
            {},
            optional={
                "service_codes": st.lists(st.sampled_from(["POTHOLE", "NOISE", "TREE_DOWN"]), min_size=1, unique=True),
                "words_any": _words,
                "flags_any": st.lists(st.sampled_from(["hazard", "blocking_traffic"]), min_size=1, unique=True),
                "channels": st.lists(st.sampled_from(["phone", "web", "system"]), min_size=1, unique=True),
                "attributes": st.dictionaries(
                    st.sampled_from(["size", "colour"]), st.sampled_from(["big", "red"]), min_size=1
                ),
                "time": st.fixed_dictionaries(
                    {},
                    optional={
                        "days": st.lists(st.sampled_from(["mon", "sat"]), min_size=1, unique=True),
                        "between": st.sampled_from(["22:00-06:00", "08:00-12:00"]),
                    },
                ),
                "inside": st.lists(st.sampled_from(["west", "park"]), min_size=1, unique=True),
            },
        ),
        "then": st.fixed_dictionaries(
            {
                "department": st.sampled_from(["streets", "parks", "police"]),
                "sla": st.one_of(
                    st.builds(lambda h: {"business_hours": h}, st.integers(1, 80)),
                    st.builds(lambda d: {"calendar_days": d}, st.integers(1, 30)),
                ),
            },
            optional={
                "priority": st.sampled_from(["low", "normal", "high", "urgent"]),
                "tags": st.lists(st.sampled_from(["a", "b"]), unique=True),
            },
        ),
    }
)


@given(st.lists(_rule, min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_any_valid_rule_set_round_trips_through_yaml(rules: list[dict[str, object]]) -> None:
    raw = yaml.safe_load(FIXTURE.read_text())
    raw["rules"] = [{"id": f"r{n}", **rule} for n, rule in enumerate(rules)]
    rule_set = parse_rule_set(raw, "generated")
    assert parse_rule_set(yaml.safe_load(dump_rule_set(rule_set)), "round-trip") == rule_set


def _broken(tmp_path: Path, change: str, old: str) -> Path:
    text = FIXTURE.read_text()
    assert old in text
    path = tmp_path / "rules.yaml"
    path.write_text(text.replace(old, change))
    (tmp_path / "areas.geojson").write_text((FIXTURE.parent / "areas.geojson").read_text())
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "then: {department: parks, sla: {business_hours: 16}}",
            "then: {department: forestry, sla: {business_hours: 16}}",
            "rule trees-in-the-park: then.department 'forestry' is not defined",
        ),
        (
            "then: {department: police, sla: {calendar_days: 1}}",
            "then: {department: police}",
            "rule night-noise, then.sla: required, and missing",
        ),
        (
            "sla: {business_hours: 24}",
            "sla: {business_hours: 24, calendar_days: 1}",
            "rule trees-west, then.sla: give exactly one of business_hours or calendar_days",
        ),
        (
            'when: {pattern: "\\\\bgas (leak|smell)\\\\b"}',
            'when: {pattern: "gas (leak"}',
            "rule gas-smell, when.pattern: not a valid regular expression",
        ),
        (
            "when: {service_codes: [NOISE]}",
            "when: {service_codes: [NOISES]}",
            "rule noise-by-day: when.service_codes 'NOISES' (NOISE?) is not in services",
        ),
        (
            "then: {department: police, sla: {calendar_days: 3}}",
            "then: {department: polise, sla: {calendar_days: 3}}",
            "rule noise-by-day: then.department 'polise' (police?) is not defined",
        ),
        (
            "then: {department: police, sla: {calendar_days: 3}}",
            "then: {department: zoning, sla: {calendar_days: 3}}",
            "rule noise-by-day: then.department 'zoning' is not defined",
        ),
        ("inside: [park]}", "inside: [downtown]}", "rule trees-in-the-park: when.inside names area 'downtown'"),
        ('between: "22:00-06:00"', 'between: "22:00-22:00"', "rule night-noise, when.time.between"),
        ("- id: dogs", "- id: noise-by-day", "rule noise-by-day: the id is used twice"),
        (
            "timezone: America/Chicago\ntriage",
            "timezone: America/Chicgo\ntriage",
            "timezone: unknown time zone 'America/Chicgo'",
        ),
        (
            "when: {service_codes: [STRAY_DOG]}",
            "when: {service_codes: []}",
            "rule dogs, when.service_codes: an empty list matches nothing",
        ),
    ],
)
def test_a_broken_rule_set_is_refused_with_where_and_what(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(RuleSetError) as refused:
        load_rules(_broken(tmp_path, new, old))
    assert message in str(refused.value)
    assert "rules.yaml" in str(refused.value) or "areas" in str(refused.value)


def test_routing_is_fast_enough_to_not_need_a_cache() -> None:
    """Not a timing assertion: a structural one. Areas are looked up once per decision, not once per rule."""
    calls = 0
    original = CompiledRuleSet.areas_containing

    def counting(self: CompiledRuleSet, lat: float | None, long: float | None) -> frozenset[str]:
        nonlocal calls
        calls += 1
        return original(self, lat, long)

    CompiledRuleSet.areas_containing = counting  # type: ignore[method-assign]
    try:
        RULES.route(facts("TREE_DOWN", where=EAST))
    finally:
        CompiledRuleSet.areas_containing = original  # type: ignore[method-assign]
    assert calls == 1


def test_a_rule_can_ask_about_two_calendars_at_once() -> None:
    raw = yaml.safe_load(FIXTURE.read_text())
    raw["rules"] = [
        {
            "id": "weekend-on-call",
            "description": "closed at the office, open around the clock",
            "when": {"time": {"outside_business_hours_of": "office", "inside_business_hours_of": "always"}},
            "then": {"department": "police", "sla": {"calendar_days": 1}},
        }
    ]
    rules = compile_rule_set(
        parse_rule_set(raw, "two calendars"),
        {"areas.geojson": json.loads((FIXTURE.parent / "areas.geojson").read_text())},
    )
    decision = rules.route(facts("NOISE", at=local("2026-11-28T10:00")))
    assert isinstance(decision, Routed)
    assert decision.explanation == ("outside office business hours", "within always business hours")
    assert isinstance(rules.route(facts("NOISE", at=TUESDAY_10)), Triage)
