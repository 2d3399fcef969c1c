"""`python -m bench.geocode`: how fast and how well the address-point geocoder places addresses as people write them.

    python -m bench.geocode [--rounds 3] [--json bench-results/geocode.json]

Every street address of the sample city's file (samples/city/address_points.csv) is written seven ways, the
same every run (a seeded perturbation of each): as published; with other abbreviations and case ("110 north
example avenue"); without its direction; with a typo in the street name (two letters swapped, one dropped
or doubled); with a unit and the city after it; with the other street type (St for Ave); and all of these
but the missing direction at once. An address on a numbered street (N 4th Ave) is also written with its
ordinal spelt out (Fourth), and on a numbered street the city lacks (N 5th Ave, N 14th Ave: another number,
near or sharing a digit), where the only right answer is a refusal. Each is located once a pass (the parse
cache is emptied before each pass, so repeats do not flatter the speed); a placement is *right* when it is
the address's own point (within 1 m), *wrong* when it is another point (or any point, for a street the city
lacks), *refused* otherwise, by reason. Speed is matches/s over
all of them in one thread, beside the floor measured in the same run: usaddress's tagger alone on the same
texts (the maintained parser, what a geocoder that parses every address with it could reach at most). It
measures; it never asserts.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import usaddress

from bench.report import machine, write_json
from civicflow.address_file import read_address_file
from civicflow.address_points import AddressIndex, AddressPoint
from civicflow.addresses import DIRECTIONS, STREET_TYPES, parse_address
from civicflow.city import load_city
from civicflow.geocode import Placed
from civicflow.settings import SAMPLE_CITY

SEED = 311
RIGHT_WITHIN_M = 1.0
_LONG_FORMS = {"ave": "Avenue", "st": "Street", "n": "North", "s": "South", "e": "East", "w": "West"}
_SWAPPED_TYPE = {"ave": "St", "st": "Ave"}  # a caller sure it is "Example Street"
_OTHER_ABBREVIATIONS = {"ave": "Av.", "st": "St.", "n": "N.", "s": "S.", "e": "E.", "w": "W."}
_SPELT_OUT = {"1st": "First", "2nd": "Second", "3rd": "Third", "4th": "Fourth", "5th": "Fifth", "6th": "Sixth"}
LACKING = "a numbered street the city lacks"  # the right answer is a refusal
_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$", re.IGNORECASE)


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 3 or word[0].isdigit():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def ordinal(n: int) -> str:
    """4 -> "4th", 21 -> "21st", 12 -> "12th"."""
    ending = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{ending}"


def written_ways(address: str, rng: random.Random, numbered: set[int]) -> dict[str, str]:
    """The address as people write it: one deterministic variant of each kind. `numbered`: the numbers of the
    city's numbered streets (4 for N 4th Ave)."""
    words = address.split()
    number, rest = words[0], words[1:]
    lower = [w.lower() for w in rest]
    if rng.random() < 0.5:
        respelt = [_LONG_FORMS.get(w, w) for w in lower]
    else:
        respelt = [_OTHER_ABBREVIATIONS.get(w, w) for w in lower]
    undirected = [w for w in rest if w.lower() not in DIRECTIONS]
    name_at = next((i for i, w in enumerate(rest) if w.lower() not in DIRECTIONS and w.lower() not in STREET_TYPES), 0)
    typo = list(rest)
    typo[name_at] = _typo(typo[name_at], rng)
    unit = f"{number} {' '.join(rest)}, {rng.choice(['Apt', 'Unit', '#', 'Suite'])} {rng.randrange(1, 40)}, Sample City"
    ways = {
        "as published": address,
        "abbreviations and case": " ".join([number, *respelt]),
        "no direction": " ".join([number, *undirected]),
        "typo in the street": " ".join([number, *typo]),
        "unit and city": unit,
        "wrong street type": " ".join([number, *(_SWAPPED_TYPE.get(w.lower(), w) for w in rest)]),
        "all but the direction": f"{number} {' '.join(_LONG_FORMS.get(w, w) for w in typo).lower()} apt 2",
    }
    at = next((i for i, w in enumerate(rest) if _ORDINAL.match(w)), None)
    if at is not None:
        n = int(rest[at][:-2])
        if rest[at].lower() in _SPELT_OUT:
            ways["ordinal spelt out"] = " ".join([number, *rest[:at], _SPELT_OUT[rest[at].lower()], *rest[at + 1 :]])
        # the next number up, or one sharing a digit: what fuzz.ratio took for a typo
        other = rng.choice([k for k in (n + 1, n + 10, n + 20, 10 * n, 10 * n + n) if k not in numbered])
        ways[LACKING] = " ".join([number, *rest[:at], ordinal(other), *rest[at + 1 :]])
    return ways


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dy = (a[0] - b[0]) * 110_574.0
    dx = (a[1] - b[1]) * 111_320.0 * math.cos(math.radians(a[0]))
    return math.hypot(dx, dy)


def measure(points: list[AddressPoint], rounds: int) -> dict[str, Any]:
    index = AddressIndex(points)
    rng = random.Random(SEED)
    numbered = {int(m.group(1)) for p in points if p.street and (m := _ORDINAL.match(p.street.name))}
    cases = [
        (kind, text, (p.lat, p.long))
        for p in points
        if p.number is not None
        for kind, text in written_ways(p.address, rng, numbered).items()
    ]
    texts = [text for _, text, _ in cases]
    outcomes: dict[str, Counter[str]] = {}
    best_rate = best_cpu_rate = 0.0
    for _ in range(rounds):
        parse_address.cache_clear()
        index = AddressIndex(points)  # a fresh intersection cache too
        start, cpu_start = time.perf_counter(), time.process_time()
        results = [index.locate(text) for text in texts]
        best_rate = max(best_rate, len(texts) / (time.perf_counter() - start))
        best_cpu_rate = max(best_cpu_rate, len(texts) / (time.process_time() - cpu_start))
    for (kind, _, truth), found in zip(cases, results, strict=True):
        tally = outcomes.setdefault(kind, Counter())
        if kind == LACKING:
            tally["wrong" if isinstance(found, Placed) else "right"] += 1
        elif isinstance(found, Placed):
            tally["right" if _metres((found.lat, found.long), truth) <= RIGHT_WITHIN_M else "wrong"] += 1
        else:
            tally["refused: " + found.reason.split(":")[0].split(";")[0]] += 1
    floor = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for text in texts:
            usaddress.tag(text)
        floor = max(floor, len(texts) / (time.perf_counter() - start))
    by_kind: dict[str, dict[str, Any]] = {
        kind: {
            "addresses": sum(tally.values()),
            "right_share": tally["right"] / sum(tally.values()),
            "wrong": tally["wrong"],
            "outcomes": dict(tally.most_common()),
        }
        for kind, tally in outcomes.items()
    }
    total = sum(sum(tally.values()) for tally in outcomes.values())
    undirected = sum(outcomes["no direction"].values())
    right = sum(outcomes[k]["right"] for k in outcomes)
    return {
        "addresses_in_file": len(points),
        "located": total,
        "matches_per_s": best_rate,
        # the process's own CPU time: steadier than the clock when other work shares the cores
        "matches_per_cpu_s": best_cpu_rate,
        "floor_usaddress_tags_per_s": floor,
        "ratio_to_floor": best_rate / floor if floor else None,
        "right_share": right / total,
        "right_share_without_no_direction": (right - outcomes["no direction"]["right"]) / (total - undirected),
        "wrong": sum(outcomes[k]["wrong"] for k in outcomes),
        "by_kind": by_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="best of this many passes over all the texts")
    parser.add_argument("--json", type=Path, default=Path("bench-results/geocode.json"))
    args = parser.parse_args()
    city = load_city(SAMPLE_CITY)
    assert city.address_points is not None
    points = read_address_file(city.address_points.read_bytes(), city.service_area).points
    result = measure(points, args.rounds)
    print(
        f"geocoding the sample city's {result['addresses_in_file']} address points, each written 7 ways and a"
        f" numbered street's 2 more ({result['located']} texts):"
    )
    print(
        f"  {result['matches_per_s']:,.0f} matches/s (one thread; {result['matches_per_cpu_s']:,.0f} per CPU second);"
        " usaddress alone"
        f" {result['floor_usaddress_tags_per_s']:,.0f} tags/s on the same texts: {result['ratio_to_floor']:.1f}x"
    )
    print(
        f"  placed right {result['right_share']:.1%} overall, {result['right_share_without_no_direction']:.1%} leaving"
        f" out the undirected ones (every number here exists both N and S, E and W: refusing them is right);"
        f" placed wrong: {result['wrong']}"
    )
    for kind, tally in result["by_kind"].items():
        print(f"  {kind:<32} right {tally['right_share']:6.1%}  {tally['outcomes']}")
    write_json({"geocode": result, "machine": machine(), "seed": SEED}, args.json)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
