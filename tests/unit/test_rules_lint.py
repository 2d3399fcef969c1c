"""`rules check`: the mistakes a city is likely to make in its rules are pointed out, and sound ones are not."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from services.router.engine import compile_rule_set
from services.router.lint import lint
from services.router.rules import parse_rule_set

FIXTURE = Path(__file__).parents[1] / "fixtures" / "city"
AREAS = {"areas.geojson": json.loads((FIXTURE / "areas.geojson").read_text())}


def findings(change: dict[str, object] | None = None, rules: list[dict[str, object]] | None = None) -> list[str]:
    raw = yaml.safe_load((FIXTURE / "rules.yaml").read_text())
    raw.update(change or {})
    if rules is not None:
        raw["rules"] = rules
    return [str(f) for f in lint(compile_rule_set(parse_rule_set(raw, "test"), AREAS))]


def rule(rule_id: str, when: dict[str, object], department: str = "streets") -> dict[str, object]:
    return {
        "id": rule_id,
        "description": rule_id,
        "when": when,
        "then": {"department": department, "sla": {"calendar_days": 1}},
    }


def test_the_test_city_has_only_the_warnings_it_deserves() -> None:
    found = findings()
    assert not [f for f in found if f.startswith("error")]
    assert "warning: department triage: no rule sends it any case" not in found  # triage is the fallback
    assert any("service TREE_DOWN" not in f for f in found)


def test_a_rule_after_a_broader_one_is_unreachable() -> None:
    found = findings(
        rules=[
            rule("all-potholes", {"service_codes": ["POTHOLE"]}),
            rule("hazard-potholes", {"service_codes": ["POTHOLE"], "flags_any": ["hazard"]}),
        ]
    )
    assert (
        "error: rule hazard-potholes: can never fire: rule all-potholes comes first and matches every case it would"
        in found
    )


def test_a_shadowed_rule_for_another_department_is_a_fallback_after_a_rejection() -> None:
    found = findings(
        rules=[
            rule("potholes", {"service_codes": ["POTHOLE"]}, "streets"),
            rule("potholes-fallback", {"service_codes": ["POTHOLE"]}, "triage"),
        ]
    )
    assert not [f for f in found if f.startswith("error")]
    assert any(
        f.startswith("warning: rule potholes-fallback: fires only after streets turned a case down") for f in found
    )


def test_a_group_rule_shadows_a_code_rule_in_that_group_and_a_catch_all_shadows_everything() -> None:
    found = findings(
        rules=[rule("streets", {"service_groups": ["streets"]}), rule("graffiti", {"service_codes": ["GRAFFITI"]})]
    )
    assert any(f.startswith("error: rule graffiti: can never fire: rule streets") for f in found)
    found = findings(rules=[rule("default", {}, "police"), rule("noise", {"service_codes": ["NOISE"]}, "police")])
    assert any(f.startswith("error: rule noise: can never fire: rule default") for f in found)
    found = findings(rules=[rule("default", {}, "triage"), rule("noise", {"service_codes": ["NOISE"]}, "police")])
    assert any(f.startswith("warning: rule noise: fires only after triage turned a case down") for f in found)


def test_narrower_rules_first_are_fine() -> None:
    found = findings(
        rules=[
            rule("hazard", {"service_codes": ["POTHOLE"], "flags_any": ["hazard"]}),
            rule("night", {"service_codes": ["POTHOLE"], "time": {"between": "22:00-06:00"}}),
            rule("words", {"service_codes": ["POTHOLE"], "words_any": ["sinkhole"]}),
            rule("all", {"service_codes": ["POTHOLE"]}),
        ]
    )
    assert not [f for f in found if f.startswith("error")]


def test_idle_departments_and_unrouted_services_are_named() -> None:
    found = findings(rules=[rule("potholes", {"service_codes": ["POTHOLE"]})])
    assert "warning: department parks: no rule sends it any case" in found
    assert "warning: service NOISE: no rule routes it: every such case goes to the triage queue" in found
    found = findings(rules=[rule("potholes", {"service_codes": ["POTHOLE"]}), rule("default", {}, "triage")])
    assert "warning: service NOISE: no rule names it; only the catch-all rule default places it" in found


def test_overlapping_areas_that_rules_treat_as_different_places() -> None:
    found = findings(
        rules=[
            rule("trees-park", {"service_codes": ["TREE_DOWN"], "inside": ["park"]}, "parks"),
            rule("trees-east", {"service_codes": ["TREE_DOWN"], "inside": ["east"]}, "streets"),
        ]
    )
    assert any(f.startswith("warning: areas east and park: overlap") and "goes to parks" in f for f in found)
    # the same department on both sides is no conflict
    found = findings(
        rules=[
            rule("trees-park", {"service_codes": ["TREE_DOWN"], "inside": ["park"]}, "parks"),
            rule("trees-east", {"service_codes": ["TREE_DOWN"], "inside": ["east"]}, "parks"),
        ]
    )
    assert not any("overlap" in f for f in found)
