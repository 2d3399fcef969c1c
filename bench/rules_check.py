"""How long `civicflow rules check` takes for a big city's catalogue: parse, validate, compile and lint.

The synthetic city is written from a seed into a temporary folder as a city would keep it (one YAML file
and a GeoJSON file of areas), then checked in process the way the command does, a few times. The target
is 5 s for 2,000 services in 100 groups, 2,000 rules and 300 areas. Run: `python -m bench.rules_check`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from services.router.lint import lint
from services.router.rulebook import load_rules

TARGET_SECONDS = 5.0
TIMEZONE = "America/Chicago"
WEST, SOUTH, CELL = -87.70, 41.85, 0.005
WORDS = ["flooding", "sinkhole", "sparking", "smoke", "downed", "needles", "rats", "blocked", "odour", "leaning"]
WINDOWS = ["22:00-06:00", "18:00-07:00", "06:00-09:00"]


def _square(x0: float, y0: float, cells: int) -> list[list[list[float]]]:
    x1, y1 = x0 + cells * CELL, y0 + cells * CELL
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


def areas(count: int) -> dict[str, Any]:
    """count areas: districts tiling a grid, and one ward over 3 x 3 districts for every 15 of them, so
    that some areas overlap as real wards and districts do."""
    wards = count // 15
    districts = count - wards
    columns = max(1, int(districts**0.5))
    features = []
    for n in range(districts):
        row, column = divmod(n, columns)
        geometry = _square(WEST + column * CELL, SOUTH + row * CELL, 1)
        features.append({"type": "Feature", "properties": {"id": f"district-{n:03d}"}, "geometry": geometry})
    for n in range(wards):
        row, column = divmod(n * 3, columns)
        geometry = _square(WEST + column * CELL, SOUTH + row * 3 * CELL, 3)
        features.append({"type": "Feature", "properties": {"id": f"ward-{n:02d}"}, "geometry": geometry})
    for feature in features:
        feature["geometry"] = {"type": "Polygon", "coordinates": feature["geometry"]}
    return {"type": "FeatureCollection", "features": features}


def city(
    services: int, groups: int, rules: int, area_count: int, seed: int = 311
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A rule set as a city would write it (a plain dict for YAML) and its areas as GeoJSON."""
    rng = random.Random(seed)
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    calendars = {
        "office": {"timezone": TIMEZONE, "hours": {d: ["08:00-17:00"] for d in weekdays}},
        "always": {"timezone": TIMEZONE, "hours": {d: ["00:00-24:00"] for d in [*weekdays, "sat", "sun"]}},
    }
    departments: dict[str, Any] = {
        f"dept-{n:02d}": {"name": f"Department {n}", "calendar": "office" if n % 3 else "always"} for n in range(40)
    }
    departments["triage"] = {"name": "311 Triage", "calendar": "always"}
    catalogue = {
        f"SERVICE_{n:04d}": {"name": f"Request type {n}", "group": f"group-{n % groups:03d}"} for n in range(services)
    }
    codes, group_names = list(catalogue), sorted({s["group"] for s in catalogue.values()})
    area_ids = [f["properties"]["id"] for f in areas(area_count)["features"]]
    workers = [d for d in departments if d != "triage"]

    def when(kind: int) -> dict[str, Any]:
        condition: dict[str, Any] = (
            {"service_codes": rng.sample(codes, rng.randint(1, 3))}
            if rng.random() < 0.7
            else {"service_groups": rng.sample(group_names, rng.randint(1, 2))}
        )
        if kind == 0:
            condition["inside"] = rng.sample(area_ids, rng.randint(1, 4))
        elif kind == 1:
            condition["words_any"] = rng.sample(WORDS, 2)
        elif kind == 2:
            condition["attributes"] = {"severity": rng.sample(["minor", "severe"], 1)}
        elif kind == 3:
            condition["time"] = {"between": rng.choice(WINDOWS)}
        return condition  # kind 4: the services alone

    listed = [
        {
            "id": f"rule-{n:04d}",
            "description": f"synthetic rule {n}",
            "when": when(n % 5),
            "then": {"department": rng.choice(workers), "sla": {"calendar_days": rng.choice([1, 2, 5])}},
        }
        for n in range(rules - 1)
    ]
    listed.append(
        {"id": "catch-all", "description": "the rest", "then": {"department": "triage", "sla": {"calendar_days": 1}}}
    )
    raw = {
        "version": f"bench-{seed}",
        "jurisdiction": "bench-city",
        "timezone": TIMEZONE,
        "calendars": calendars,
        "departments": departments,
        "services": catalogue,
        "areas": [{"file": "areas.geojson"}],
        "rules": listed,
    }
    return raw, areas(area_count)


def write_city(folder: Path, services: int, groups: int, rules: int, area_count: int) -> Path:
    raw, geojson = city(services, groups, rules, area_count)
    (folder / "areas.geojson").write_text(json.dumps(geojson))
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def check(path: Path) -> tuple[float, float, int]:
    """Seconds for what `civicflow rules check` does: loading (read, validate, compile), then linting; and
    how many findings it had."""
    started = time.perf_counter()
    rules = load_rules(path)
    loaded = time.perf_counter()
    findings = lint(rules)
    return loaded - started, time.perf_counter() - loaded, len(findings)


def yaml_floor(path: Path) -> float:
    """Seconds to merely read the file as YAML: no check can be faster than that."""
    started = time.perf_counter()
    yaml.safe_load(path.read_text())
    return time.perf_counter() - started


def measure(services: int, groups: int, rules: int, area_count: int, runs: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = write_city(Path(folder), services, groups, rules, area_count)
        results = [check(path) for _ in range(runs)]
        floor = statistics.median(yaml_floor(path) for _ in range(runs))
    totals = [load + linting for load, linting, _ in results]
    median = statistics.median(totals)
    load, linting = statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)
    return (
        f"rules check, {services} services in {groups} groups, {rules} rules, {area_count} areas"
        f" ({results[0][2]} findings), {runs} runs: median {median:.2f} s (load {load:.2f} s, lint {linting:.2f} s),"
        f" best {min(totals):.2f} s; {median / floor:.1f}x the time to read the file as YAML ({floor:.2f} s);"
        f" target {TARGET_SECONDS:g} s: {'met' if median < TARGET_SECONDS else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--rules", type=int, default=2000)
    parser.add_argument("--areas", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(measure(args.services, args.groups, args.rules, args.areas, args.runs))


if __name__ == "__main__":
    main()
