"""`rules check` indexes rules to stay fast for a big city; on any small rule set it finds exactly what the
plain pairwise reading (every rule against every earlier one, every pair of area rules) finds, in the same
order. The compiled index of rules per service, likewise, decides as looking at every rule would."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from services.router.engine import CaseFacts, CompiledRuleSet, compile_rule_set
from services.router.lint import Finding, covers, lint
from services.router.rules import Conditions, parse_rule_set

FIXTURE = Path(__file__).parents[1] / "fixtures" / "city"
AREAS = {"areas.geojson": json.loads((FIXTURE / "areas.geojson").read_text())}
RAW = yaml.safe_load((FIXTURE / "rules.yaml").read_text())
CODES = ["POTHOLE", "WATER_LEAK", "TREE_DOWN", "NOISE", "GRAFFITI"]


def reference_lint(rules: CompiledRuleSet) -> list[Finding]:
    """Every rule against every earlier one, every service against every rule, every pair of rules with
    areas: slow for a big city, plainly right."""
    rule_set = rules.rule_set
    groups = {code: s.group for code, s in rule_set.services.items()}

    def admitted(when: Conditions) -> frozenset[str] | None:
        sets = []
        if when.service_codes:
            sets.append(frozenset(when.service_codes))
        if when.service_groups:
            sets.append(frozenset(c for c, g in groups.items() if g in when.service_groups))
        return frozenset.intersection(*sets) if sets else None

    findings: list[Finding] = []
    for i, later in enumerate(rule_set.rules):
        shadows = [earlier for earlier in rule_set.rules[:i] if covers(earlier, later, groups)]
        if not shadows:
            continue
        departments = {earlier.then.department for earlier in shadows}
        if later.then.department in departments:
            first = next(e for e in shadows if e.then.department == later.then.department)
            message = f"can never fire: rule {first.id} comes first and matches every case it would"
            findings.append(Finding("error", f"rule {later.id}", message))
        else:
            names = ", ".join(sorted(departments))
            message = (
                f"fires only after {names} turned a case down: rule {shadows[0].id} comes first and"
                " matches every case it would"
            )
            findings.append(Finding("warning", f"rule {later.id}", message))
    targeted = {r.then.department for r in rule_set.rules} | {rule_set.triage.department}
    for department in sorted(set(rule_set.departments) - targeted):
        findings.append(Finding("warning", f"department {department}", "no rule sends it any case"))
    catch_all = next((r for r in rule_set.rules if admitted(r.when) is None and r.when == Conditions()), None)
    for code in sorted(rule_set.services):
        if any((codes := admitted(r.when)) is not None and code in codes for r in rule_set.rules):
            continue
        if catch_all is None:
            message = "no rule routes it: every such case goes to the triage queue"
        else:
            message = f"no rule names it; only the catch-all rule {catch_all.id} places it"
        findings.append(Finding("warning", f"service {code}", message))
    reported: set[tuple[str, str]] = set()
    for r1, r2 in combinations(rule_set.rules, 2):
        if not (r1.when.inside and r2.when.inside) or r1.then.department == r2.then.department:
            continue
        codes1, codes2 = admitted(r1.when), admitted(r2.when)
        if codes1 is not None and codes2 is not None and not codes1 & codes2:
            continue
        for a1 in r1.when.inside:
            for a2 in r2.when.inside:
                pair = (min(a1, a2), max(a1, a2))
                if a1 == a2 or pair in reported:
                    continue
                if rules.area_geometries[a1].intersection(rules.area_geometries[a2]).area > 0:
                    reported.add(pair)
                    findings.append(
                        Finding(
                            "warning",
                            f"areas {pair[0]} and {pair[1]}",
                            f"overlap, yet rules {r1.id} ({r1.then.department}) and {r2.id} ({r2.then.department})"
                            f" treat them as different places; a case in the overlap goes to {r1.then.department}",
                        )
                    )
    return findings


def _some(values: list[str], most: int = 3) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=most)


_when = st.fixed_dictionaries(
    {},
    optional={
        "service_codes": _some(CODES),
        "service_groups": _some(["streets", "water", "trees", "police"], 2),
        "inside": _some(["west", "east", "park"]),
        "outside": _some(["park"], 1),
        "flags_any": _some(["hazard", "blocking_traffic"], 2),
        "channels": _some(["phone", "web"], 2),
        "words_any": _some(["flood", "gas"], 2),
        "attributes": st.dictionaries(st.sampled_from(["size"]), st.sampled_from(["big", "small"]), min_size=1),
    },
)
_rules = st.lists(st.tuples(_when, st.sampled_from(["streets", "parks", "police", "triage"])), min_size=1, max_size=12)


def _compiled(rules: list[tuple[dict[str, Any], str]]) -> CompiledRuleSet:
    raw = {**RAW, "rules": []}
    for n, (when, department) in enumerate(rules):
        raw["rules"].append(
            {
                "id": f"r{n}",
                "description": "generated",
                "when": when,
                "then": {"department": department, "sla": {"calendar_days": 1}},
            }
        )
    return compile_rule_set(parse_rule_set(raw, "generated"), AREAS)


@given(_rules)
@settings(max_examples=300, deadline=None)
def test_the_indexed_lint_finds_what_the_pairwise_reading_finds(rules: list[tuple[dict[str, Any], str]]) -> None:
    compiled = _compiled(rules)
    assert [str(f) for f in lint(compiled)] == [str(f) for f in reference_lint(compiled)]


@given(
    _rules,
    st.sampled_from([*CODES, "STRAY_DOG", "SIGNAL_OUT"]),
    st.sampled_from([None, (41.87, -87.65), (41.87, -87.68), (41.87, -87.62)]),
    st.sampled_from(["", "flood in the street"]),
)
@settings(max_examples=300, deadline=None)
def test_the_rules_indexed_per_service_decide_as_every_rule_in_order_would(
    rules: list[tuple[dict[str, Any], str]], code: str, where: tuple[float, float] | None, description: str
) -> None:
    compiled = _compiled(rules)
    lat, long = where or (None, None)
    facts = CaseFacts(code, description, datetime(2026, 11, 24, 16, tzinfo=UTC), lat, long, channel="phone")
    decision, _ = compiled.explain(facts)  # explain looks at every rule in order, without the index
    assert compiled.route(facts) == decision
