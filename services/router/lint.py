"""`civicflow rules check`: what in a valid rule set is probably a mistake. Pure: no I/O."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shapely import STRtree

from services.router.engine import CompiledRuleSet
from services.router.rules import Conditions, Rule


@dataclass(frozen=True)
class Finding:
    level: str  # "error" (certainly wrong) or "warning" (probably wrong)
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def _codes_admitted(when: Conditions, members: dict[str, frozenset[str]]) -> frozenset[str] | None:
    """The service codes a rule can match, or None for any. members: the codes of each group."""
    sets = []
    if when.service_codes:
        sets.append(frozenset(when.service_codes))
    if when.service_groups:
        sets.append(frozenset().union(*(members.get(g, frozenset()) for g in when.service_groups)))
    if not sets:
        return None
    result = sets[0]
    for s in sets[1:]:
        result &= s
    return result


def _members(groups: dict[str, str]) -> dict[str, frozenset[str]]:
    codes: dict[str, set[str]] = {}
    for code, group in groups.items():
        codes.setdefault(group, set()).add(code)
    return {group: frozenset(c) for group, c in codes.items()}


def _subset(narrow: Sequence[str] | None, broad: Sequence[str] | None) -> bool:
    """Whether every case passing `narrow` (a list condition, OR inside) also passes `broad`."""
    if broad is None:
        return True
    return narrow is not None and {x.lower() for x in narrow} <= {x.lower() for x in broad}


def covers(earlier: Rule, later: Rule, groups: dict[str, str]) -> bool:
    """True when every case `later` could match is matched by `earlier` first (so `later` never fires).
    Conservative: it says True only when that is certain from the conditions alone."""
    members = _members(groups)
    return _covers(
        earlier.when, later.when, _codes_admitted(earlier.when, members), _codes_admitted(later.when, members)
    )


def _covers(a: Conditions, b: Conditions, codes_a: frozenset[str] | None, codes_b: frozenset[str] | None) -> bool:
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
    members = _members(groups)
    admitted = [_codes_admitted(r.when, members) for r in rule_set.rules]
    findings = _shadowed(rule_set.rules, admitted)

    targeted = {r.then.department for r in rule_set.rules} | {rule_set.triage.department}
    for department in sorted(set(rule_set.departments) - targeted):
        findings.append(Finding("warning", f"department {department}", "no rule sends it any case"))

    catch_all = next(
        (r for r, codes in zip(rule_set.rules, admitted, strict=True) if codes is None and r.when == Conditions()), None
    )
    named = frozenset().union(*(codes for codes in admitted if codes is not None))
    for code in sorted(set(rule_set.services) - named):
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
    findings += _overlapping_areas(rules, admitted)
    return findings


def _shadowed(rules: Sequence[Rule], admitted: Sequence[frozenset[str] | None]) -> list[Finding]:
    """Rules that an earlier rule matches first for every case. Only earlier rules that admit every code the
    later one admits can cover it, so each rule is compared with those (found through one of its codes)
    rather than with every rule before it."""
    by_code: dict[str, list[int]] = {}  # rules admitting a code by naming it (or its group), in order
    any_code: list[int] = []  # rules that name no service
    findings: list[Finding] = []
    for i, later in enumerate(rules):
        codes = admitted[i]
        if codes is None:
            candidates: Iterable[int] = any_code
        elif not codes:  # admits no code at all: every earlier rule covers it vacuously
            candidates = range(i)
        else:
            # the code the fewest earlier rules admit: any rule covering this one admits it too
            fewest = min(codes, key=lambda code: len(by_code.get(code, ())))
            candidates = heapq.merge(by_code.get(fewest, []), any_code)
        shadows = [rules[j] for j in candidates if _covers(rules[j].when, later.when, admitted[j], codes)]
        if codes is None:
            any_code.append(i)
        else:
            for code in codes:
                by_code.setdefault(code, []).append(i)
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
    return findings


def _overlapping_areas(rules: CompiledRuleSet, admitted: Sequence[frozenset[str] | None]) -> list[Finding]:
    """Areas that two rules treat as alternatives (same services, different departments) must not overlap,
    or a point in both goes to whichever rule comes first. Each overlapping pair is reported once, for the
    first two rules (in order) that treat it so. Only pairs of areas that do overlap are looked at, and for
    each only the rules naming them, rather than every pair of rules."""
    listed = rules.rule_set.rules
    holders: dict[str, list[int]] = {}  # the rules whose `inside` names an area, in order
    for i, rule in enumerate(listed):
        for area in dict.fromkeys(rule.when.inside or []):
            holders.setdefault(area, []).append(i)
    named = sorted(holders)
    if not named:
        return []
    geometries = [rules.area_geometries[a] for a in named]
    tree = STRtree(geometries)
    firsts: list[tuple[tuple[int, int, int, int], str, str]] = []
    for left, right in zip(*tree.query(geometries, predicate="intersects"), strict=True):
        a, b = named[left], named[right]
        if a >= b or geometries[left].intersection(geometries[right]).area <= 0:
            continue
        first = _first_alternatives(listed, admitted, holders, a, b)
        if first is not None:
            firsts.append((first, a, b))
    findings = []
    for (i, j, _, _), a, b in sorted(firsts):
        r1, r2 = listed[i], listed[j]
        findings.append(
            Finding(
                "warning",
                f"areas {a} and {b}",
                f"overlap, yet rules {r1.id} ({r1.then.department}) and {r2.id} ({r2.then.department})"
                f" treat them as different places; a case in the overlap goes to {r1.then.department}",
            )
        )
    return findings


def _first_alternatives(
    listed: Sequence[Rule],
    admitted: Sequence[frozenset[str] | None],
    holders: dict[str, list[int]],
    a: str,
    b: str,
) -> tuple[int, int, int, int] | None:
    """The first (rule, later rule, place of one area in the first's inside, of the other in the later's)
    where one rule names a and a later one b, or the other way round, for different departments and
    services they share; None when no two rules do."""
    best: tuple[int, int, int, int] | None = None
    for one, other in ((a, b), (b, a)):
        for i in holders[one]:
            if best is not None and i > best[0]:
                break
            r1, codes1 = listed[i], admitted[i]
            for j in holders[other]:
                if j <= i:
                    continue
                r2, codes2 = listed[j], admitted[j]
                if r1.then.department == r2.then.department:
                    continue
                if codes1 is not None and codes2 is not None and not codes1 & codes2:
                    continue
                place = (i, j, (r1.when.inside or []).index(one), (r2.when.inside or []).index(other))
                if best is None or place < best:
                    best = place
                break
    return best
