"""Routing decisions: the first rule whose conditions all hold decides the department and due date.

Pure: no framework, no I/O. A RuleSet is compiled once (regexes, prepared polygons, calendars) so that
a decision takes microseconds; `route` answers, `explain` answers with the reasons: for a routed case
every rule up to the one that decided, for a triaged one the rules that came closest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import shapely
from shapely import STRtree

from services.router.calendar import BusinessCalendar, within_daily_window
from services.router.rules import Conditions, Rule, RuleSet, RuleSetError
from services.router.words import phrase_search

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class CaseFacts:
    """What routing looks at; the resident's contact details are not among them."""

    service_code: str
    description: str
    submitted_at: datetime
    lat: float | None = None
    long: float | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    channel: str | None = None
    unplaced: str | None = None  # why the address could not be put on the map (Location.unplaced)


@dataclass(frozen=True)
class Routed:
    department_id: str
    department_name: str
    queue: str | None
    crew: str | None
    priority: str
    due_at: datetime | None  # None: the rule gives no SLA
    sla: str
    rule_id: str
    rule_set_version: str
    explanation: tuple[str, ...]
    tags: tuple[str, ...]
    time_zone: str  # the department calendar's: where due_at is a wall-clock time


@dataclass(frozen=True)
class Triage:
    queue: str
    reason: str
    rule_set_version: str


@dataclass(frozen=True)
class RuleTrace:
    rule_id: str
    matched: bool
    # Why it matched; else, for a routed case, the first condition that did not hold, and for a triaged
    # one the conditions that held followed by the first that did not.
    reasons: tuple[str, ...]
    skipped: str | None = None  # e.g. the department already rejected the case
    held: int | None = None  # how many of its conditions hold; not counted past the first failure of a routed case
    conditions: int = 0  # how many conditions the rule has


Decision = Routed | Triage


@dataclass
class _Context:
    """Per-decision facts computed at most once (the areas containing the point, local time)."""

    facts: CaseFacts
    router: CompiledRuleSet
    _areas: frozenset[str] | None = None
    _local: datetime | None = None

    @property
    def areas(self) -> frozenset[str]:
        if self._areas is None:
            self._areas = self.router.areas_containing(self.facts.lat, self.facts.long)
        return self._areas

    @property
    def local(self) -> datetime:
        if self._local is None:
            self._local = self.facts.submitted_at.astimezone(self.router.zone)
        return self._local


Check = Callable[[_Context], str | None]  # a reason when the condition holds, else None
FailReason = str


@dataclass(frozen=True)
class _CompiledRule:
    rule: Rule
    checks: tuple[tuple[Check, str], ...]  # (check, what it asks) in a cheap-first order

    def evaluate(self, ctx: _Context) -> tuple[bool, tuple[str, ...]]:
        reasons = []
        for check, asks in self.checks:
            reason = check(ctx)
            if reason is None:
                return False, (f"not {asks}",)
            reasons.append(reason)
        return True, tuple(reasons) or ("the rule has no conditions: it catches every case",)

    def assess(self, ctx: _Context) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Every condition, not just up to the first that fails: (why those that hold do, what those that
        do not asked). How close a rule came is how many held."""
        held: list[str] = []
        failed: list[str] = []
        for check, asks in self.checks:
            reason = check(ctx)
            if reason is None:
                failed.append(f"not {asks}")
            else:
                held.append(reason)
        return tuple(held), tuple(failed)


CLOSEST_SHOWN = 5  # rules a triaged case's explanation shows
_PLACE_RULES_NAMED = 5  # rules a triage reason names as needing the place
_UNPLACED_CHARS = 200


class CompiledRuleSet:
    def __init__(self, rule_set: RuleSet, geojson: Mapping[str, Any]) -> None:
        self.rule_set = rule_set
        self.version = rule_set.version
        self.zone = ZoneInfo(rule_set.timezone)
        self.calendars = {name: BusinessCalendar.from_spec(spec) for name, spec in rule_set.calendars.items()}
        self._area_ids, geometries = _load_areas(rule_set, geojson)
        self.area_geometries = dict(zip(self._area_ids, geometries, strict=True))
        for geometry in geometries:
            shapely.prepare(geometry)
        self._tree = STRtree(geometries) if geometries else None
        known = set(self._area_ids)
        missing = [
            f"rule {rule.id}: when.{kind} names area {area!r}, which no areas file defines"
            for rule in rule_set.rules
            for kind, areas in (("inside", rule.when.inside), ("outside", rule.when.outside))
            for area in areas or []
            if area not in known
        ]
        if missing:
            raise RuleSetError("\n".join(missing))
        self._groups = {code: s.group for code, s in rule_set.services.items()}
        self._rules = tuple(_CompiledRule(rule, tuple(self._checks(rule.when))) for rule in rule_set.rules)
        # Most rules name services; index them so a decision only looks at rules that could match its
        # service (in their original order), not at every rule of a big city.
        self._any_service = tuple(
            r for r in self._rules if not (r.rule.when.service_codes or r.rule.when.service_groups)
        )
        self._by_service = self._index_by_service()

    def _index_by_service(self) -> dict[str, tuple[_CompiledRule, ...]]:
        """For each service code, the rules that could match it, in order: each rule is added to the codes it
        admits (named, or in a named group), rather than each code tested against every rule."""
        members: dict[str, list[str]] = {}
        for code, group in self._groups.items():
            members.setdefault(group, []).append(code)
        by_service: dict[str, list[_CompiledRule]] = {code: [] for code in self._groups}
        for compiled in self._rules:
            when = compiled.rule.when
            if when.service_codes:
                groups = set(when.service_groups or ())
                codes: Iterable[str] = (
                    c
                    for c in dict.fromkeys(when.service_codes)
                    if c in self._groups and (not groups or self._groups[c] in groups)
                )
            elif when.service_groups:
                codes = (c for g in dict.fromkeys(when.service_groups) for c in members.get(g, ()))
            else:
                codes = by_service
            for code in codes:
                by_service[code].append(compiled)
        return {code: tuple(rules) for code, rules in by_service.items()}

    def _candidates(self, code: str) -> tuple[_CompiledRule, ...]:
        return self._by_service.get(code, self._any_service)

    def areas_containing(self, lat: float | None, long: float | None) -> frozenset[str]:
        if self._tree is None or lat is None or long is None:
            return frozenset()
        hits = self._tree.query(shapely.Point(long, lat), predicate="intersects")
        return frozenset(self._area_ids[i] for i in hits)

    def route(self, facts: CaseFacts, exclude: frozenset[str] = frozenset()) -> Decision:
        ctx = _Context(facts, self)
        for compiled in self._candidates(facts.service_code):
            if compiled.rule.then.department in exclude:
                continue
            matched, reasons = compiled.evaluate(ctx)
            if matched:
                return self._routed(compiled.rule, facts, reasons)
        return self._triage(facts, exclude)

    def explain(
        self, facts: CaseFacts, exclude: frozenset[str] = frozenset(), closest: int = CLOSEST_SHOWN
    ) -> tuple[Decision, list[RuleTrace]]:
        """The decision and its reasons. Routed: every rule up to the one that decided, why it did or did
        not match. Triaged: the `closest` rules that came nearest (see `_closest`)."""
        ctx = _Context(facts, self)
        trace: list[RuleTrace] = []
        for compiled in self._rules:
            rule, conditions = compiled.rule, len(compiled.checks)
            if rule.then.department in exclude:
                skipped = f"{rule.then.department} already turned it down"
                trace.append(RuleTrace(rule.id, False, (), skipped=skipped, conditions=conditions))
                continue
            matched, reasons = compiled.evaluate(ctx)
            trace.append(
                RuleTrace(rule.id, matched, reasons, held=conditions if matched else None, conditions=conditions)
            )
            if matched:
                return self._routed(rule, facts, reasons), trace
        return self._triage(facts, exclude), self._closest(ctx, exclude, closest)

    def _closest(self, ctx: _Context, exclude: frozenset[str], closest: int) -> list[RuleTrace]:
        """The rules that came nearest to placing a triaged case: those for its service first, then by how
        many of their conditions held, then in order; each with what held and what first failed. Every
        condition of every rule is assessed here, which a decision never needs."""
        assessed = []
        for compiled in self._rules:
            rule = compiled.rule
            held, failed = compiled.assess(ctx)
            skipped = f"{rule.then.department} already turned it down" if rule.then.department in exclude else None
            assessed.append(RuleTrace(rule.id, False, (*held, *failed[:1]), skipped, len(held), len(compiled.checks)))
        for_service = {c.rule.id for c in self._candidates(ctx.facts.service_code)}
        assessed.sort(key=lambda t: (t.rule_id not in for_service, -(t.held or 0)))  # stable: then in order
        return assessed[:closest]

    def _routed(self, rule: Rule, facts: CaseFacts, reasons: tuple[str, ...]) -> Routed:
        then = rule.then
        department = self.rule_set.departments[then.department]
        calendar = self.calendars[department.calendar]
        due = then.sla.due(facts.submitted_at, calendar)
        return Routed(
            department_id=then.department,
            department_name=department.name,
            queue=then.queue,
            crew=then.crew,
            priority=then.priority,
            due_at=due,
            sla=then.sla.describe(),
            rule_id=rule.id,
            rule_set_version=self.version,
            explanation=reasons,
            tags=tuple(then.tags),
            time_zone=calendar.spec.timezone,
        )

    def _triage(self, facts: CaseFacts, exclude: frozenset[str]) -> Triage:
        reason = f"no rule places service {facts.service_code!r}"
        if exclude:
            reason += f" with {', '.join(sorted(exclude))} excluded"
        if needing_place := self._rules_needing_place(facts, exclude):
            named = ", ".join(needing_place[:_PLACE_RULES_NAMED])
            if len(needing_place) > _PLACE_RULES_NAMED:
                named += f" and {len(needing_place) - _PLACE_RULES_NAMED} more"
            why = (
                f"the address could not be placed: {facts.unplaced[:_UNPLACED_CHARS]}"
                if facts.unplaced
                else "the request has no place on the map"
            )
            need = "rule {} needs" if len(needing_place) == 1 else "rules {} need"
            reason += f"; {need.format(named)} the place on the map; {why}"
        return Triage(queue=self.rule_set.triage.queue, reason=reason, rule_set_version=self.version)

    def _rules_needing_place(self, facts: CaseFacts, exclude: frozenset[str]) -> list[str]:
        """The rules for the case's service that ask where it is, when the case has no point: the call
        centre fixes the address and those rules can place it."""
        if facts.lat is not None and facts.long is not None:
            return []
        return [
            c.rule.id
            for c in self._candidates(facts.service_code)
            if (c.rule.when.inside or c.rule.when.outside) and c.rule.then.department not in exclude
        ]

    # --- compiling conditions -------------------------------------------------------------------

    def _checks(self, when: Conditions) -> list[tuple[Check, str]]:
        checks: list[tuple[Check, str]] = []
        if when.service_codes:
            codes = frozenset(when.service_codes)
            checks.append(
                (
                    lambda c: _said(c.facts.service_code in codes, f"service {c.facts.service_code}"),
                    f"service {'/'.join(sorted(codes))}",
                )
            )
        if when.service_groups:
            groups = frozenset(when.service_groups)
            checks.append(
                (
                    lambda c: _said(
                        self._groups.get(c.facts.service_code) in groups,
                        f"service {c.facts.service_code} is in group {self._groups.get(c.facts.service_code)}",
                    ),
                    f"a service in group {'/'.join(sorted(groups))}",
                )
            )
        if when.channels:
            channels = frozenset(when.channels)
            checks.append(
                (
                    lambda c: _said(c.facts.channel in channels, f"came by {c.facts.channel}"),
                    f"by {'/'.join(sorted(channels))}",
                )
            )
        if when.flags_any:
            flags = frozenset(f.lower() for f in when.flags_any)
            checks.append(
                (
                    lambda c: _first(flags & {f.lower() for f in c.facts.flags}, "flagged {}"),
                    f"flagged {'/'.join(sorted(flags))}",
                )
            )
        if when.attributes:
            for question, answer in when.attributes.items():
                wanted = frozenset(a.lower() for a in ([answer] if isinstance(answer, str) else answer))
                checks.append((_attribute_check(question, wanted), f"{question} = {'/'.join(sorted(wanted))}"))
        if when.time:
            checks.extend(self._time_checks(when))
        if when.inside:
            inside = frozenset(when.inside)
            checks.append((lambda c: _first(inside & c.areas, "inside {}"), f"inside {'/'.join(sorted(inside))}"))
        if when.outside:
            outside = frozenset(when.outside)
            checks.append(
                (
                    lambda c: _said(
                        c.facts.lat is not None and not (outside & c.areas), f"outside {'/'.join(sorted(outside))}"
                    ),
                    f"outside {'/'.join(sorted(outside))}",
                )
            )
        if when.words_any:
            words = phrase_search(when.words_any)
            checks.append(
                (
                    lambda c: _found(words, c.facts.description, "description mentions '{}'"),
                    f"mentioning {'/'.join(when.words_any)}",
                )
            )
        if when.words_none:
            banned = phrase_search(when.words_none)
            checks.append(
                (
                    lambda c: _said(
                        banned.search(c.facts.description) is None,
                        f"description avoids {'/'.join(when.words_none or [])}",
                    ),
                    f"without {'/'.join(when.words_none)}",
                )
            )
        if when.pattern:
            pattern = re.compile(when.pattern, re.IGNORECASE)
            checks.append(
                (
                    lambda c: _found(pattern, c.facts.description, "description matches '{}'"),
                    f"matching /{when.pattern}/",
                )
            )
        return checks

    def _business_hours_check(self, name: str, want_open: bool) -> tuple[Check, str]:
        calendar = self.calendars[name]
        asks = f"{'within' if want_open else 'outside'} {name} business hours"
        return (lambda c: _said(calendar.is_open(c.facts.submitted_at) == want_open, asks), asks)

    def _time_checks(self, when: Conditions) -> list[tuple[Check, str]]:
        time = when.time
        assert time is not None
        checks: list[tuple[Check, str]] = []
        if time.days:
            days = frozenset(time.days)
            checks.append(
                (
                    lambda c: _said(
                        WEEKDAYS[c.local.weekday()] in days, f"submitted on a {WEEKDAYS[c.local.weekday()]}"
                    ),
                    f"on {'/'.join(time.days)}",
                )
            )
        if time.between:
            window = time.between
            checks.append(
                (
                    lambda c: _said(
                        within_daily_window(c.local.time(), window), f"submitted at {c.local:%H:%M}, within {window}"
                    ),
                    f"between {window}",
                )
            )
        if time.outside_business_hours_of:
            checks.append(self._business_hours_check(time.outside_business_hours_of, want_open=False))
        if time.inside_business_hours_of:
            checks.append(self._business_hours_check(time.inside_business_hours_of, want_open=True))
        return checks


def _said(holds: bool, reason: str) -> str | None:
    return reason if holds else None


def _first(found: frozenset[str] | set[str], template: str) -> str | None:
    return template.format(sorted(found)[0]) if found else None


def _found(pattern: re.Pattern[str], text: str, template: str) -> str | None:
    match = pattern.search(text)
    return template.format(match.group(0)) if match else None


def _attribute_check(question: str, wanted: frozenset[str]) -> Check:
    def check(c: _Context) -> str | None:
        answer = c.facts.attributes.get(question)
        return _said(answer is not None and answer.lower() in wanted, f"{question} answered {answer!r}")

    return check


def _load_areas(rule_set: RuleSet, geojson: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    ids: list[str] = []
    geometries: list[Any] = []
    for source in rule_set.areas:
        collection = geojson.get(source.file)
        if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
            raise RuleSetError(f"areas file {source.file}: expected a GeoJSON FeatureCollection")
        for n, feature in enumerate(collection.get("features", []), start=1):
            area_id = (feature.get("properties") or {}).get(source.id_property)
            if not area_id:
                raise RuleSetError(f"areas file {source.file}: feature #{n} has no properties.{source.id_property}")
            if area_id in ids:
                raise RuleSetError(f"areas file {source.file}: area id {area_id!r} is defined twice")
            try:
                geometry = shapely.geometry.shape(feature["geometry"])
            except (KeyError, TypeError, ValueError, shapely.errors.GEOSException) as exc:
                raise RuleSetError(f"areas file {source.file}: area {area_id}: not a valid geometry: {exc}") from exc
            if not geometry.is_valid:
                raise RuleSetError(f"areas file {source.file}: area {area_id}: {shapely.is_valid_reason(geometry)}")
            ids.append(area_id)
            geometries.append(geometry)
    return ids, geometries


def compile_rule_set(rule_set: RuleSet, geojson: Mapping[str, Any]) -> CompiledRuleSet:
    return CompiledRuleSet(rule_set, geojson)
