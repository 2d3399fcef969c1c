"""Word and phrase conditions: whole words where a phrase edge is a word character, as written where it is
punctuation ("(B1)", "C++", "24/7", "no heat!")."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from services.router.engine import CaseFacts, CompiledRuleSet, Routed, compile_rule_set
from services.router.rules import parse_rule_set

FIXTURE = Path(__file__).parents[1] / "fixtures" / "city" / "rules.yaml"
GEOJSON = {"areas.geojson": {"type": "FeatureCollection", "features": []}}
AT = datetime(2026, 11, 24, 16, tzinfo=UTC)


def rules_with(when: dict[str, Any]) -> CompiledRuleSet:
    """The test city with one rule asking `when` of a pothole, before a catch-all."""
    raw = yaml.safe_load(FIXTURE.read_text())
    raw["areas"] = []
    raw["rules"] = [
        {
            "id": "asked",
            "description": "the condition under test",
            "when": {"service_codes": ["POTHOLE"], **when},
            "then": {"department": "streets", "sla": {"business_hours": 8}},
        },
        {
            "id": "other",
            "description": "everything else",
            "then": {"department": "triage", "sla": {"calendar_days": 1}},
        },
    ]
    return compile_rule_set(parse_rule_set(raw, "test"), GEOJSON)


def rule_for(rules: CompiledRuleSet, description: str) -> str:
    decision = rules.route(CaseFacts(service_code="POTHOLE", description=description, submitted_at=AT))
    assert isinstance(decision, Routed)
    return decision.rule_id


@pytest.mark.parametrize(
    ("phrase", "description", "matches"),
    [
        ("(B1)", "the lamp on pole (B1) is out", True),
        ("(B1)", "pole (B1).", True),
        ("(B1)", "pole B1 is out", False),
        ("C++", "a C++ sign", True),
        ("C++", "C++", True),
        ("C++", "a C+ sign", False),
        ("24/7", "it runs 24/7, all night", True),
        ("24/7", "open 124/7", False),
        ("24/7", "24/75", False),
        ("no heat!", "there is NO HEAT! since monday", True),
        ("no heat!", "no heater", False),
        ("no heat", "no   heat at all", True),  # any run of white space between the words
        ("heat", "no heating", False),  # whole words stay whole
        ("heat", "the heat.", True),
        ("café", "outside the CAFÉ door", True),  # Unicode words, case-insensitive
        ("café", "cafés", False),
        ("straße", "an der Straße 5", True),
        ("_x", "a_x", False),  # the underscore is a word character
    ],
)
def test_a_phrase_matches_with_punctuation_at_its_edges(phrase: str, description: str, matches: bool) -> None:
    assert (rule_for(rules_with({"words_any": [phrase]}), description) == "asked") is matches
    assert (rule_for(rules_with({"words_none": [phrase]}), description) == "asked") is not matches


def test_the_explanation_quotes_the_words_as_the_resident_wrote_them() -> None:
    decision = rules_with({"words_any": ["no heat!"]}).route(
        CaseFacts(service_code="POTHOLE", description="No Heat! again", submitted_at=AT)
    )
    assert isinstance(decision, Routed)
    assert "description mentions 'No Heat!'" in decision.explanation


def test_a_blank_phrase_is_ignored_rather_than_matching_everything() -> None:
    assert rule_for(rules_with({"words_any": ["  "]}), "anything at all") == "other"
    assert rule_for(rules_with({"words_any": ["", "deep"]}), "a deep one") == "asked"
    assert rule_for(rules_with({"words_none": [" "]}), "anything at all") == "asked"


_phrase = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12
).filter(lambda p: p.strip() != "")
_filler = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@given(phrases=st.lists(_phrase, min_size=1, max_size=4), pick=st.integers(0, 3), before=_filler, after=_filler)
@settings(max_examples=300, deadline=None)
def test_any_phrase_with_spaces_around_it_matches(phrases: list[str], pick: int, before: str, after: str) -> None:
    rules = rules_with({"words_any": phrases})
    assert rule_for(rules, f"{before} {phrases[pick % len(phrases)]} {after}") == "asked"
