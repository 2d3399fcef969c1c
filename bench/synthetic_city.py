"""A big synthetic city for `bench.routing`, built in memory from a seed: nothing here is written to disk.

300 rectangular districts (a 15 x 20 grid over the sample city's rectangle), 60 departments, 150 service
codes in 20 groups and 500 ordered rules mixing every kind of condition, ending with a catch-all. The
codes of the last group are named by no rule but the catch-all, so cases about them are the worst case:
every rule is evaluated before the last one decides.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.router.engine import CaseFacts

TIMEZONE = "America/Chicago"
ZONE = ZoneInfo(TIMEZONE)
WEST, EAST, SOUTH, NORTH = -87.70, -87.60, 41.85, 41.92
GRID_COLUMNS, GRID_ROWS = 15, 20
AREAS_FILE = "synthetic/districts.geojson"
DEPARTMENTS = 60  # including triage
SERVICES = 150
GROUPS = 20
UNROUTED_GROUP = f"g{GROUPS - 1:02d}"  # only the catch-all places its codes
RULES = 500
CATCH_ALL = "catch-all"

# Instants are spread over these two years (UTC bounds; local times follow America/Chicago).
SPAN_START = datetime(2026, 1, 1, 6, tzinfo=UTC)
SPAN_END = datetime(2028, 1, 1, 6, tzinfo=UTC)
HOLIDAYS = [
    date(2026, 1, 1),
    date(2026, 5, 25),
    date(2026, 7, 3),
    date(2026, 9, 7),
    date(2026, 11, 26),
    date(2026, 12, 25),
    date(2027, 1, 1),
    date(2027, 5, 31),
    date(2027, 7, 5),
    date(2027, 9, 6),
    date(2027, 11, 25),
    date(2027, 12, 24),
]
TRIGGER_WORDS = [
    "flooding",
    "gushing",
    "sinkhole",
    "collapsing",
    "sparking",
    "smoke",
    "downed",
    "chemical",
    "needles",
    "injured",
    "aggressive",
    "overflowing",
    "exposed",
    "leaning",
    "rats",
    "blocked",
    "burning",
    "cracked",
    "stuck",
    "odour",
]
NEUTRAL_PHRASES = [
    "reported by a neighbour",
    "has been like this for a week",
    "near the corner store",
    "outside number 1200",
    "second time this month",
    "please send someone",
    "by the bus stop",
    "across from the school",
    "in the alley behind the houses",
    "next to the parking lot",
]
FLAGS = ["hazard", "blocking_traffic", "accessibility", "repeat"]
CHANNELS = ["phone", "web", "app", "system"]
ATTRIBUTES = {"severity": ["minor", "moderate", "severe"], "surface": ["street", "sidewalk", "alley", "park"]}
WINDOWS = ["22:00-06:00", "18:00-07:00", "06:00-09:00", "16:00-19:00", "00:00-05:00"]
WEEKDAY_SETS = [["sat", "sun"], ["sun"], ["mon", "tue", "wed", "thu", "fri"], ["fri", "sat"]]


@dataclass(frozen=True)
class SyntheticCity:
    raw: dict[str, Any]  # the rule set as a city would write it, for parse_rule_set
    geojson: dict[str, Any]  # keyed by the areas file name, as compile_rule_set takes it
    routed_codes: list[str]  # codes that some rule before the catch-all names
    unrouted_codes: list[str]  # codes only the catch-all places

    @property
    def areas(self) -> list[str]:
        return [f["properties"]["id"] for f in self.geojson[AREAS_FILE]["features"]]


def district_id(row: int, column: int) -> str:
    return f"d-r{row:02d}-c{column:02d}"


def districts() -> dict[str, Any]:
    """A FeatureCollection of GRID_ROWS x GRID_COLUMNS rectangles tiling the rectangle."""
    width = (EAST - WEST) / GRID_COLUMNS
    height = (NORTH - SOUTH) / GRID_ROWS
    features = []
    for row in range(GRID_ROWS):
        for column in range(GRID_COLUMNS):
            x0, y0 = WEST + column * width, SOUTH + row * height
            x1, y1 = x0 + width, y0 + height
            ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
            features.append(
                {
                    "type": "Feature",
                    "properties": {"id": district_id(row, column)},
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                }
            )
    return {"type": "FeatureCollection", "name": "synthetic-districts", "features": features}


def _calendars() -> dict[str, Any]:
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    every_day = [*weekdays, "sat", "sun"]
    return {
        "office": {
            "timezone": TIMEZONE,
            "hours": {d: ["08:00-17:00"] for d in weekdays},
            "holidays": [d.isoformat() for d in HOLIDAYS],
        },
        "extended": {
            "timezone": TIMEZONE,
            "hours": {d: ["07:00-19:00"] for d in [*weekdays, "sat"]},
            "holidays": [d.isoformat() for d in HOLIDAYS[::2]],
        },
        "split": {
            "timezone": TIMEZONE,
            "hours": {d: ["07:00-11:30", "12:30-16:00"] for d in weekdays},
            "holidays": [d.isoformat() for d in HOLIDAYS],
        },
        "always": {"timezone": TIMEZONE, "hours": {d: ["00:00-24:00"] for d in every_day}},
    }


def build(seed: int = 311) -> SyntheticCity:
    """The synthetic rule set as a plain dict (validate it with parse_rule_set) and its districts."""
    rng = random.Random(seed)
    calendars = _calendars()
    calendar_names = list(calendars)
    departments: dict[str, Any] = {
        f"dept-{n:02d}": {"name": f"Department {n}", "calendar": calendar_names[n % len(calendar_names)]}
        for n in range(DEPARTMENTS - 1)
    }
    departments["triage"] = {"name": "311 Triage", "calendar": "always", "on_call_queue": "triage-urgent"}
    services = {f"S{n:03d}": {"name": f"Service {n}", "group": f"g{n % GROUPS:02d}"} for n in range(SERVICES)}
    routed = [code for code, s in services.items() if s["group"] != UNROUTED_GROUP]
    unrouted = [code for code, s in services.items() if s["group"] == UNROUTED_GROUP]
    routed_groups = sorted({services[c]["group"] for c in routed})
    areas = [district_id(r, c) for r in range(GRID_ROWS) for c in range(GRID_COLUMNS)]
    worker_departments = [d for d in departments if d != "triage"]

    def then() -> dict[str, Any]:
        sla = {"business_hours": rng.choice([2, 4, 8, 18, 27])} if rng.random() < 0.5 else {}
        return {
            "department": rng.choice(worker_departments),
            "queue": f"q-{rng.randrange(200):03d}",
            "priority": rng.choice(["low", "normal", "normal", "high", "urgent"]),
            "sla": sla or {"calendar_days": rng.choice([0.25, 1, 2, 5, 10])},
        }

    def codes() -> list[str]:
        return rng.sample(routed, rng.randint(1, 3))

    def nearby(count: int) -> list[str]:
        """1-5 districts around one, as a crew's patch would be."""
        row, column = rng.randrange(GRID_ROWS), rng.randrange(GRID_COLUMNS)
        patch = {district_id(row, column)}
        while len(patch) < count:
            row = min(GRID_ROWS - 1, max(0, row + rng.choice([-1, 0, 1])))
            column = min(GRID_COLUMNS - 1, max(0, column + rng.choice([-1, 0, 1])))
            patch.add(district_id(row, column))
        return sorted(patch)

    whens: list[tuple[str, dict[str, Any]]] = []
    for _ in range(25):  # hazards: words or flags, with or without a service group
        when: dict[str, Any] = {"words_any": rng.sample(TRIGGER_WORDS, rng.randint(2, 4))}
        if rng.random() < 0.6:
            when["service_groups"] = rng.sample(routed_groups, rng.randint(1, 2))
        if rng.random() < 0.3:
            when = {
                "service_groups": [rng.choice(routed_groups)],
                "flags_any": rng.sample(FLAGS[:2], rng.randint(1, 2)),
            }
        if rng.random() < 0.15:
            when["words_none"] = ["sprinkler", "hose"]
        whens.append(("hazard", when))
    for _ in range(40):  # time of day and week
        timing: dict[str, Any] = rng.choice(
            [
                {"between": rng.choice(WINDOWS)},
                {"days": rng.choice(WEEKDAY_SETS)},
                {"outside_business_hours_of": rng.choice(["office", "extended", "split"])},
                {"inside_business_hours_of": rng.choice(["office", "extended"])},
                {"days": rng.choice(WEEKDAY_SETS), "between": rng.choice(WINDOWS)},
            ]
        )
        whens.append(("time", {"service_codes": codes(), "time": timing}))
    for _ in range(300):  # places: a service (or group) inside a patch of districts
        when = {"inside": nearby(rng.randint(1, 5))}
        if rng.random() < 0.8:
            when["service_codes"] = codes()
        else:
            when["service_groups"] = [rng.choice(routed_groups)]
        if rng.random() < 0.1:
            when["words_any"] = rng.sample(TRIGGER_WORDS, 2)
        if rng.random() < 0.05:
            when["outside"] = nearby(2)
        whens.append(("place", when))
    for _ in range(40):  # answers and channels
        if rng.random() < 0.5:
            whens.append(("channel", {"service_codes": codes(), "channels": rng.sample(CHANNELS, rng.randint(1, 2))}))
        else:
            question = rng.choice(list(ATTRIBUTES))
            answers = rng.sample(ATTRIBUTES[question], rng.randint(1, 2))
            whens.append(("answer", {"service_codes": codes(), "attributes": {question: answers}}))
    for code in rng.sample(routed, 75):  # single services that differ from their group
        when = {"service_codes": [code]}
        if rng.random() < 0.2:
            when["flags_any"] = [rng.choice(FLAGS)]
        whens.append(("service", when))
    whens += [("group", {"service_groups": [group]}) for group in routed_groups]

    rules = [
        {"id": f"r{n:03d}-{kind}", "description": f"synthetic {kind} rule {n}", "when": when, "then": then()}
        for n, (kind, when) in enumerate(whens, start=1)
    ]
    rules.append(
        {
            "id": CATCH_ALL,
            "description": "anything no rule above places goes to triage",
            "then": {"department": "triage", "queue": "triage", "sla": {"calendar_days": 1}},
        }
    )
    assert len(rules) == RULES, len(rules)
    raw = {
        "version": f"synthetic-{seed}",
        "jurisdiction": "synthetic-big-city",
        "timezone": TIMEZONE,
        "triage": {"queue": "triage", "department": "triage"},
        "calendars": calendars,
        "departments": departments,
        "services": services,
        "areas": [{"file": AREAS_FILE, "id_property": "id", "kind": "district"}],
        "rules": rules,
    }
    assert len(areas) == GRID_ROWS * GRID_COLUMNS
    return SyntheticCity(raw, {AREAS_FILE: districts()}, routed, unrouted)


# --- cases ---------------------------------------------------------------------------------------


def random_instant(rng: random.Random, holidays: list[date], holiday_share: float = 0.05) -> datetime:
    """A submission time in America/Chicago: uniform over 2026-2027 (so nights and weekends in their
    natural share), plus holiday_share of cases on one of the holidays at any time of day."""
    if holidays and rng.random() < holiday_share:
        day = rng.choice(holidays)
        minute = rng.randrange(24 * 60)
        return datetime.combine(day, time(minute // 60, minute % 60), ZONE)
    seconds = rng.randrange(int((SPAN_END - SPAN_START).total_seconds()))
    return (SPAN_START + timedelta(seconds=seconds)).astimezone(ZONE)


def random_point(rng: random.Random, located_share: float = 0.8) -> tuple[float | None, float | None]:
    if rng.random() >= located_share:
        return None, None
    return rng.uniform(SOUTH, NORTH), rng.uniform(WEST, EAST)


def cases(city: SyntheticCity, count: int, seed: int, worst_case: bool = False) -> list[CaseFacts]:
    """A seeded mix of cases for the synthetic city. worst_case: codes only the catch-all places, plain
    descriptions and a location, so every rule is evaluated (and the areas looked up) for each case."""
    rng = random.Random(seed)
    mix = []
    for _ in range(count):
        text = " ".join(rng.sample(NEUTRAL_PHRASES, rng.randint(1, 3)))
        if worst_case:
            code, lat, long = rng.choice(city.unrouted_codes), *random_point(rng, 1.0)
            flags: frozenset[str] = frozenset()
            attributes: dict[str, str] = {}
        else:
            code = rng.choice(city.routed_codes if rng.random() < 0.95 else city.unrouted_codes)
            if rng.random() < 0.3:
                text = f"{rng.choice(TRIGGER_WORDS)} {text}"
            lat, long = random_point(rng)
            flags = frozenset(rng.sample(FLAGS, 1)) if rng.random() < 0.15 else frozenset()
            attributes = {q: rng.choice(a) for q, a in ATTRIBUTES.items() if rng.random() < 0.3}
        mix.append(
            CaseFacts(
                service_code=code,
                description=text,
                submitted_at=random_instant(rng, HOLIDAYS),
                lat=lat,
                long=long,
                attributes=attributes,
                flags=flags,
                channel=rng.choices(CHANNELS, weights=[40, 35, 20, 5])[0],
            )
        )
    return mix
