"""A city's rule set as typed data: departments, areas, calendars, service catalogue and ordered rules.

Written in YAML by the city, validated here into a model with precise errors (file, rule id, field,
what was expected). A bad file is refused whole; the rule set in force stays in force.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from civicflow.city import OnCallContact, PhoneRegion, ServiceAreaSpec, ServiceSpec, SurveyAfter
from civicflow.codes import Channel, CodeKind, code_problem
from civicflow.department_systems import ConnectorSpec, SecretRef, StatusMappings
from services.router.calendar import BusinessCalendar, CalendarSpec, Weekday, parse_window
from services.router.rulefile import found, load_city_yaml, problems_in_words, repeated_key_problems, shown

Priority = Literal["low", "normal", "high", "urgent"]


def _code(kind: CodeKind) -> BeforeValidator:
    """The one grammar intake also applies (civicflow.codes): what the city defines here, intake can take."""

    def check(value: object) -> object:
        problem = code_problem(kind, value)
        if problem is not None:
            raise ValueError(problem)
        return value

    return BeforeValidator(check)


ServiceCode = Annotated[str, _code("service code")]
DepartmentId = Annotated[str, _code("department id")]
CalendarId = Annotated[str, _code("calendar id")]
AreaId = Annotated[str, _code("area id")]
RuleId = Annotated[str, _code("rule id")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Department(_Strict):
    name: str
    calendar: str
    email: str | None = None
    phone: str | None = None
    on_call_queue: str | None = None
    # alerted at once about its urgent and hazard cases (the notifier reads them through civicflow/city.py)
    on_call: list[OnCallContact] = []
    # how the department's own system is reached (civicflow/department_systems.py); none: rest_webhook at the
    # city's work-order base URL
    connector: ConnectorSpec | None = None


class AreaSource(_Strict):
    """A GeoJSON file of areas; each feature's `properties.<id_property>` names the area."""

    file: str
    id_property: str = "id"
    kind: str = "area"


_MOST_CALENDAR_DAYS = 3653.0
_MOST_BUSINESS_HOURS = 24.0 * _MOST_CALENDAR_DAYS


class Sla(_Strict):
    """How long the department has: business hours on its calendar, or plain calendar days; 0 of either
    means due at once (at the moment the case is submitted, open or not); `sla: none` means no SLA at all
    (no due date, never overdue)."""

    business_hours: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    calendar_days: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    none: bool = False  # written `sla: none`

    @field_validator("business_hours", "calendar_days")
    @classmethod
    def _within_ten_years(cls, value: float | None, info: ValidationInfo) -> float | None:
        # A due date is counted hour by open hour on the calendar; ten years is already no deadline.
        limit = _MOST_BUSINESS_HOURS if info.field_name == "business_hours" else _MOST_CALENDAR_DAYS
        if value is not None and value > limit:
            raise ValueError(f"at most {limit:g} (about ten years); for no deadline write `sla: none`")
        return value

    @model_validator(mode="before")
    @classmethod
    def _none_as_a_word(cls, raw: Any) -> Any:
        if isinstance(raw, str) and raw.strip().lower() == "none":
            return {"none": True}
        if raw is None:
            raise ValueError(
                "the SLA is empty; give business_hours or calendar_days (0 for due at once), or write `sla: none`"
            )
        if isinstance(raw, str):
            raise ValueError(f"{raw[:40]!r} is not an SLA; give business_hours or calendar_days, or write `sla: none`")
        return raw

    @model_validator(mode="after")
    def _exactly_one(self) -> Sla:
        given = (self.business_hours is not None) + (self.calendar_days is not None) + self.none
        if given != 1:
            raise ValueError("give exactly one of business_hours or calendar_days, or write `sla: none`")
        return self

    @model_serializer(mode="wrap")
    def _none_written_as_a_word(self, serialise: SerializerFunctionWrapHandler) -> Any:
        return "none" if self.none else serialise(self)

    def due(self, submitted_at: datetime, calendar: BusinessCalendar) -> datetime | None:
        """When the department must have dealt with a case submitted at submitted_at."""
        if self.none:
            return None
        if self.business_hours == 0 or self.calendar_days == 0:
            return submitted_at
        if self.business_hours is not None:
            return calendar.add_business_hours(submitted_at, self.business_hours)
        return calendar.add_calendar_days(submitted_at, self.calendar_days or 0)

    def describe(self) -> str:
        if self.none:
            return "no SLA"
        if self.business_hours == 0 or self.calendar_days == 0:
            return "due at once"
        if self.business_hours is not None:
            return f"{self.business_hours:g} business hours"
        return f"{self.calendar_days:g} calendar days"


class TimeCondition(_Strict):
    days: list[Weekday] | None = None
    between: str | None = None  # local daily window, may wrap midnight: "18:00-06:00"
    outside_business_hours_of: str | None = None  # a calendar id
    inside_business_hours_of: str | None = None

    @field_validator("between")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value


class Conditions(_Strict):
    """All given conditions must hold (AND); a list inside one condition means any of its items (OR)."""

    service_codes: list[ServiceCode] | None = None
    service_groups: list[str] | None = None
    words_any: list[str] | None = None  # whole words, case-insensitive, in the description
    words_none: list[str] | None = None
    pattern: str | None = None  # a regular expression searched in the description, case-insensitive
    attributes: dict[str, str | list[str]] | None = None  # answer (or any of the answers) per question
    inside: list[AreaId] | None = None  # area ids: the location lies inside any of them
    outside: list[AreaId] | None = None  # area ids: the location lies inside none of them
    time: TimeCondition | None = None
    channels: list[Channel] | None = None
    flags_any: list[str] | None = None  # priority flags the caller ticked, e.g. hazard, blocking_traffic

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("service_codes", "service_groups", "words_any", "words_none", "inside", "outside", "flags_any")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list matches nothing; remove the condition instead")
        return value


class Action(_Strict):
    department: str
    queue: str | None = None
    crew: str | None = None
    priority: Priority = "normal"
    sla: Sla
    tags: list[str] = []


class Rule(_Strict):
    id: RuleId
    description: str
    when: Conditions = Conditions()
    then: Action


class TriageSettings(_Strict):
    queue: str = "call-centre-triage"
    department: str = "triage"
    max_rejections: int = Field(default=2, ge=1)


class RuleSet(_Strict):
    version: Annotated[str, Field(min_length=1)]
    jurisdiction: str
    name: str | None = None  # as residents know it ("Sample City"); the jurisdiction id titled when absent
    service_area: ServiceAreaSpec | None = None
    address_points: str | None = None  # the city's address-point CSV, relative to the file (civicflow/city.py)
    phone_region: PhoneRegion | None = None  # residents' numbers without +country code (civicflow/city.py)
    timezone: str
    survey_after_hours: SurveyAfter = "none"  # the satisfaction survey's default delay (civicflow/city.py)
    triage: TriageSettings = TriageSettings()
    calendars: dict[CalendarId, CalendarSpec]
    departments: dict[DepartmentId, Department]
    services: dict[ServiceCode, ServiceSpec]
    areas: list[AreaSource] = []
    rules: list[Rule]

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like America/Chicago") from exc
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> RuleSet:
        problems: list[str] = []
        unknown = _Unknown()  # one per validation: its guesses are counted
        first: dict[str, int] = {}
        for n, rule in enumerate(self.rules, start=1):
            if rule.id in first:
                problems.append(f"rule {rule.id}: the id is used twice (rules #{first[rule.id]} and #{n})")
            first.setdefault(rule.id, n)
        for dept_id, dept in self.departments.items():
            if dept.calendar not in self.calendars:
                named = unknown(dept.calendar, self.calendars)
                problems.append(f"department {dept_id}: calendar {named} is not defined")
            for code in dept.connector.services if dept.connector else ():
                if code not in self.services:
                    problems.append(
                        f"department {dept_id}: connector.services {unknown(code, self.services)} is not in services"
                    )
        if self.triage.department not in self.departments:
            problems.append(f"triage: department {unknown(self.triage.department, self.departments)} is not defined")
        groups = {s.group for s in self.services.values()}
        for rule in self.rules:
            where = f"rule {rule.id}"
            if rule.then.department not in self.departments:
                department = unknown(rule.then.department, self.departments)
                problems.append(f"{where}: then.department {department} is not defined")
            when = rule.when
            for code in when.service_codes or []:
                if code not in self.services:
                    problems.append(f"{where}: when.service_codes {unknown(code, self.services)} is not in services")
            for group in when.service_groups or []:
                if group not in groups:
                    problems.append(
                        f"{where}: when.service_groups {unknown(group, groups)} is not a group of any service"
                    )
            for field in ("outside_business_hours_of", "inside_business_hours_of"):
                calendar = getattr(when.time, field, None) if when.time else None
                if calendar is not None and calendar not in self.calendars:
                    problems.append(
                        f"{where}: when.time.{field} {unknown(calendar, self.calendars)} is not a defined calendar"
                    )
        if problems:
            raise ValueError("\n".join(problems))  # one problem a line: parse_rule_set keeps them apart
        return self


class _Unknown:
    """An unknown name quoted, with the known one it is probably a typo of: "'sanitaton' (sanitation?)".
    Only the first few names get a guess: against 2,000 service codes a guess costs some 20 ms, and a
    catalogue renamed under 2,000 rules would otherwise take a minute to refuse; the first guesses show the
    pattern."""

    GUESSES = 25

    def __init__(self) -> None:
        self._guessed: dict[str, str | None] = {}

    def __call__(self, name: str, known: Iterable[str]) -> str:
        if name not in self._guessed and len(self._guessed) < self.GUESSES:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
            self._guessed[name] = close[0] if close else None
        guess = self._guessed.get(name)
        quoted = repr(name) if len(name) <= 64 and name.isprintable() else shown(name)
        return f"{quoted} ({guess}?)" if guess else quoted


class RuleSetError(ValueError):
    """A rule set that cannot be used, with every problem found, each with where it is."""


# Every field name a rule set has, to suggest what a misspelt one meant ("rulez" -> rules).
_FIELDS = (
    frozenset(
        name
        for model in (RuleSet, Department, AreaSource, Sla, TimeCondition, Conditions, Action, Rule, TriageSettings)
        for name in model.model_fields
    )
    | frozenset(ServiceSpec.model_fields)
    | frozenset(ServiceAreaSpec.model_fields)
    | frozenset(OnCallContact.model_fields)
    | frozenset(ConnectorSpec.model_fields)
    | frozenset(SecretRef.model_fields)
    | frozenset(StatusMappings.model_fields)
    | frozenset(CalendarSpec.model_fields)
)


def parse_rule_set(raw: Any, source: str, repeated: list[str] | None = None) -> RuleSet:
    """The rule set in raw (as read from YAML); RuleSetError lists every problem, each with where it is.
    repeated: keys the file gave twice (read_rule_set finds them), refused along with the rest."""
    problems = [f"{source}: {problem}" for problem in repeated or []]
    if not isinstance(raw, dict):
        problems.append(f"{source}: expected a mapping with version, rules, departments…; found {found(raw)}")
        raise RuleSetError("\n".join(problems))
    try:
        # on-call numbers are read in the file's own phone_region (OnCallContact)
        region = raw.get("phone_region")
        rule_set = RuleSet.model_validate(raw, context={"phone_region": region if isinstance(region, str) else None})
    except ValidationError as exc:
        problems += [
            f"{source}: {problem}" for problem in problems_in_words(exc.errors(include_url=False), raw, _FIELDS)
        ]
        raise RuleSetError("\n".join(problems)) from exc
    if problems:
        raise RuleSetError("\n".join(problems))
    return rule_set


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's quote of the offending lines: a reload request can name a file
    that is not a rule set, and its lines would go back to whoever asked."""
    if isinstance(error, yaml.reader.ReaderError):
        code = error.character if isinstance(error.character, int) else ord(error.character)
        return f"character {error.position + 1}: U+{code:04X} is not allowed in YAML"
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "cannot be parsed"
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else str(problem)


def read_rule_set(path: Path) -> tuple[RuleSet, dict[str, Any]]:
    """The rule set in path and the GeoJSON of its areas (read relative to the file)."""
    try:
        raw, repeated = load_city_yaml(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise RuleSetError(f"{path}: cannot read the rule set: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise RuleSetError(f"{path}: not a rule set: not UTF-8 text (byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise RuleSetError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    except RecursionError as exc:
        raise RuleSetError(f"{path}: not a rule set: nested too deeply") from exc
    rule_set = parse_rule_set(raw, str(path), repeated_key_problems(repeated, raw))
    geojson: dict[str, Any] = {}
    for source in rule_set.areas:
        area_path = (path.parent / source.file).resolve()
        try:
            geojson[source.file] = json.loads(area_path.read_text())
        except OSError as exc:  # its strerror, not str(exc): that names the file's absolute path
            raise RuleSetError(f"{path}: areas file {source.file}: cannot read it: {exc.strerror}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RuleSetError(f"{path}: areas file {source.file}: cannot read it as GeoJSON: {exc}") from exc
    problems = area_id_problems(rule_set.areas, geojson)
    if problems:
        raise RuleSetError("\n".join(f"{path}: {problem}" for problem in problems))
    return rule_set, geojson


def area_id_problems(sources: Iterable[AreaSource], geojson: dict[str, Any]) -> list[str]:
    """Area ids that break the one grammar or are defined twice, across all the areas files. The shape of
    the files (a FeatureCollection, valid geometries) is the engine's to check when it compiles them."""
    problems: list[str] = []
    first: dict[str, str] = {}
    for source in sources:
        collection = geojson.get(source.file)
        features = collection.get("features") if isinstance(collection, dict) else None
        for n, feature in enumerate(features if isinstance(features, list) else [], start=1):
            properties = feature.get("properties") if isinstance(feature, dict) else None
            area_id = properties.get(source.id_property) if isinstance(properties, dict) else None
            if area_id is None:
                continue
            where = f"areas file {source.file}, feature #{n}, properties.{source.id_property}"
            problem = code_problem("area id", area_id)
            if problem is not None:
                problems.append(f"{where}: {problem}")
            elif area_id in first:
                problems.append(f"{where}: area {area_id} is defined twice (first as {first[area_id]})")
            else:
                first[area_id] = f"{source.file} feature #{n}"
    return problems


def dump_rule_set(rule_set: RuleSet) -> str:
    """YAML that reads back as an equal rule set. Non-ASCII text is escaped: PyYAML would otherwise write
    characters such as U+0085 raw and read them back as line breaks (found by a property test)."""
    return yaml.safe_dump(rule_set.model_dump(mode="json", exclude_defaults=True), sort_keys=False, allow_unicode=False)
