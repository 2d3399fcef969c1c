"""`civicflow rules check`: what in a valid rule set is probably a mistake. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from services.router.engine import CompiledRuleSet
from services.router.rules import Conditions, Rule


@dataclass(frozen=True)
class Finding:
    level: str  # "error" (certainly wrong) or "warning" (probably wrong)
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def _codes_admitted(when: Conditions, groups: dict[str, str]) -> frozenset[str] | None:
    """The service codes a rule can match, or None for any."""
    sets = []
    if when.service_codes:
        sets.append(frozenset(when.service_codes))
    if when.service_groups:
        sets.append(frozenset(c for c, g in groups.items() if g in when.service_groups))
    if not sets:
        return None
    result = sets[0]
    for s in sets[1:]:
        result &= s
    return result


def _subset(narrow: Sequence[str] | None, broad: Sequence[str] | None) -> bool:
    """Whether every case passing `narrow` (a list condition, OR inside) also passes `broad`."""
    if broad is None:
        return True
    return narrow is not None and {x.lower() for x in narrow} <= {x.lower() for x in broad}


def covers(earlier: Rule, later: Rule, groups: dict[str, str]) -> bool:
    """True when every case `later` could match is matched by `earlier` first (so `later` never fires).
    Conservative: it says True only when that is certain from the conditions alone."""
    a, b = earlier.when, later.when
    codes_a, codes_b = _codes_admitted(a, groups), _codes_admitted(b, groups)
    if codes_a is not None and (codes_b is None or not codes_b <= codes_a):
        return False
    if not (_subset(b.channels, a.channels) and _subset(b.flags_any, a.flags_any) and _subset(b.inside, a.inside)):
        return False
    if not _subset(b.words_any, a.words_any):
        return False
    for optional in ("words_none", "pattern", "outside", "time"):
        if getattr(a, optional) is not None and getattr(a, optional) != getattr(b, optional):
            return False
    for question, answer in (a.attributes or {}).items():
        wanted = [answer] if isinstance(answer, str) else answer
        given = (b.attributes or {}).get(question)
        if given is None or not _subset([given] if isinstance(given, str) else given, wanted):
            return False
    return True


def lint(rules: CompiledRuleSet) -> list[Finding]:
    rule_set = rules.rule_set
    groups = {code: s.group for code, s in rule_set.services.items()}
    findings: list[Finding] = []

    for i, later in enumerate(rule_set.rules):
        shadows = [earlier for earlier in rule_set.rules[:i] if covers(earlier, later, groups)]
        if not shadows:
            continue
        departments = {earlier.then.department for earlier in shadows}
        if later.then.department in departments:
            # even with the earlier rules' departments turning the case down, this one is skipped too
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

    catch_all = next(
        (r for r in rule_set.rules if _codes_admitted(r.when, groups) is None and r.when == Conditions()), None
    )
    for code in sorted(rule_set.services):
        specific = [r for r in rule_set.rules if (adm := _codes_admitted(r.when, groups)) is not None and code in adm]
        if specific:
            continue
        if catch_all is None:
            findings.append(
                Finding("warning", f"service {code}", "no rule routes it: every such case goes to the triage queue")
            )
        else:
            findings.append(
                Finding(
                    "warning", f"service {code}", f"no rule names it; only the catch-all rule {catch_all.id} places it"
                )
            )

    # Areas that two rules treat as alternatives (same services, different departments) must not overlap,
    # or a point in both goes to whichever rule comes first.
    geometries = rules.area_geometries
    reported: set[tuple[str, str]] = set()
    for r1, r2 in combinations(rule_set.rules, 2):
        if not (r1.when.inside and r2.when.inside) or r1.then.department == r2.then.department:
            continue
        codes1, codes2 = _codes_admitted(r1.when, groups), _codes_admitted(r2.when, groups)
        if codes1 is not None and codes2 is not None and not codes1 & codes2:
            continue
        for a1 in r1.when.inside:
            for a2 in r2.when.inside:
                pair = (min(a1, a2), max(a1, a2))
                if a1 == a2 or pair in reported:
                    continue
                shared = geometries[a1].intersection(geometries[a2]).area
                if shared > 0:
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
