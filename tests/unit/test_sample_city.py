"""The sample city's rules route its example requests as samples/city/README.md says they do."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.router.engine import CaseFacts, Routed
from services.router.lint import lint
from services.router.main import DEFAULT_CITY
from services.router.rulebook import load_rules

CITY = load_rules(DEFAULT_CITY)
CHICAGO = ZoneInfo("America/Chicago")
MON_10, MON_2330 = datetime(2026, 11, 23, 10, 0, tzinfo=CHICAGO), datetime(2026, 11, 23, 23, 30, tzinfo=CHICAGO)
SAT_11, DAY_AFTER_THANKSGIVING = (
    datetime(2026, 11, 28, 11, 0, tzinfo=CHICAGO),
    datetime(2026, 11, 27, 10, 0, tzinfo=CHICAGO),
)
DOWNTOWN, PARK, INDUSTRIAL = (41.885, -87.640), (41.880, -87.685), (41.855, -87.610)
WARD_1, WARD_3, WARD_5 = (41.910, -87.690), (41.910, -87.610), (41.860, -87.650)

EXAMPLES = [
    (
        "WATER_LEAK",
        "Water gushing out of the street, flooding the corner",
        MON_2330,
        None,
        {},
        "water-main-break",
        "water",
    ),
    ("WATER_LEAK", "My neighbour's sprinkler is gushing onto the sidewalk", MON_10, None, {}, "water", "water"),
    ("POTHOLE", "I smell gas near the big pothole", MON_10, WARD_1, {}, "gas-smell", "triage"),
    (
        "POTHOLE",
        "Deep pothole, cars swerving",
        MON_10,
        WARD_3,
        {"flags": frozenset({"blocking_traffic"})},
        "street-hazard-flagged",
        "streets",
    ),
    ("POTHOLE", "Deep pothole in the eastbound lane", MON_10, WARD_1, {}, "pothole-west-crew", "streets"),
    ("POTHOLE", "Deep pothole in the eastbound lane", MON_10, None, {}, "streets", "streets"),
    ("SIGNAL_OUT", "Signal dark at Main and 3rd", MON_2330, DOWNTOWN, {}, "signal-out-after-hours", "signals"),
    (
        "SIGNAL_OUT",
        "Signal dark at Main and 3rd",
        DAY_AFTER_THANKSGIVING,
        DOWNTOWN,
        {},
        "signal-out-after-hours",
        "signals",
    ),
    ("SIGNAL_OUT", "Signal dark at Main and 3rd", MON_10, DOWNTOWN, {}, "signal-out", "signals"),
    ("STRAY_DOG", "", MON_10, None, {"attributes": {"dog_behaviour": "Aggressive"}}, "aggressive-dog", "animals"),
    ("ANIMAL_BITE", "Bitten by a neighbour's dog", SAT_11, None, {}, "animal-bite-after-hours", "animals"),
    ("ANIMAL_BITE", "Bitten by a neighbour's dog", MON_10, None, {}, "animal-bite-office-hours", "animals"),
    ("NOISE_COMPLAINT", "Loud party next door", MON_2330, WARD_5, {}, "noise-at-night", "police"),
    ("NOISE_COMPLAINT", "Jackhammer since 7am", MON_10, WARD_5, {}, "code", "code"),
    ("TREE_TRIM", "Branches over the path", MON_10, PARK, {}, "trees-riverfront-park", "parks"),
    ("TREE_TRIM", "Branches over the sidewalk", MON_10, WARD_3, {}, "trees-street", "forestry"),
    ("GRAFFITI", "Tags on the bank wall", MON_10, DOWNTOWN, {}, "graffiti-downtown", "code"),
    (
        "ILLEGAL_DUMPING",
        "Pallets and tyres dumped behind the warehouse",
        MON_10,
        INDUSTRIAL,
        {},
        "dumping-industrial",
        "environment",
    ),
    ("ILLEGAL_DUMPING", "Three drums of oil in the alley", MON_10, WARD_3, {}, "dumping-hazardous", "environment"),
    ("MISSED_PICKUP", "", MON_10, WARD_1, {"attributes": {"bin_type": "recycling"}}, "missed-recycling", "sanitation"),
    (
        "METER_READING",
        "AMI read failed 3 days",
        MON_10,
        None,
        {"channel": "system"},
        "meter-alert-automated",
        "billing",
    ),
    ("PARK_RESTROOM", "Restroom locked", SAT_11, PARK, {}, "parks-weekend", "parks"),
    ("INFO_QUESTION", "When is leaf pickup?", MON_10, None, {}, "info", "triage"),
    ("UFO_SIGHTING", "", MON_10, None, {}, "default", "triage"),
]


@pytest.mark.parametrize(("code", "description", "at", "where", "extra", "rule_id", "department"), EXAMPLES)
def test_the_sample_city_routes_its_examples(
    code: str,
    description: str,
    at: datetime,
    where: tuple[float, float] | None,
    extra: dict[str, object],
    rule_id: str,
    department: str,
) -> None:
    lat, long = where or (None, None)
    decision = CITY.route(
        CaseFacts(service_code=code, description=description, submitted_at=at, lat=lat, long=long, **extra)
    )  # type: ignore[arg-type]
    assert isinstance(decision, Routed), decision
    assert (decision.rule_id, decision.department_id) == (rule_id, department)
    assert decision.due_at > at


def test_the_sample_city_is_big_enough_and_clean() -> None:
    rule_set = CITY.rule_set
    assert len(rule_set.services) >= 40 and len(rule_set.departments) >= 10
    assert not [f for f in lint(CITY) if f.level == "error"]
