"""`make bench-routing`: routing decisions per second of the compiled rule set, in process, no infrastructure.

    python -m bench.routing [--seconds 3] [--cases 5000] [--seed 311] [--json bench-results/routing.json]

Three mixes, each measured for `route` and `explain`: the sample city's rules over a seeded mix of realistic
cases; a synthetic big city (500 rules, 300 districts, built in memory) over a realistic mix; and the same
big city over its worst case (cases only the catch-all places, so every rule is evaluated). Throughput loops
over the mix for --seconds; p50/p99 latency times single calls (perf_counter_ns) on a sample of the mix.
It measures; it never asserts.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench import synthetic_city
from bench.report import machine, percentile, write_json
from services.router.engine import CaseFacts, CompiledRuleSet, Routed, compile_rule_set
from services.router.rulebook import load_rules
from services.router.rules import parse_rule_set

SAMPLE_CITY = Path(__file__).parents[1] / "samples" / "city" / "sample_city.yaml"
NOTE = (
    "Absolute figures are noisy on a small shared machine (2 cores here, other work may be running); one "
    "Python thread, GC on. tracemalloc counts Python allocations only: the GEOS polygons and STRtree are "
    "allocated in C++ and are not in the memory figures."
)
CHUNK = 100  # calls between clock reads in the throughput loop

# Sample-city descriptions: phrases that trigger its hazard / words rules, and ordinary ones.
TRIGGERS = {
    "WATER_LEAK": ["water gushing out of the street", "looks like a water main break, flooding the road"],
    "HYDRANT": ["hydrant flooding the corner", "hydrant leaking from the hose connection"],
    "NO_WATER": ["no water since the flooding on the street"],
    "UNSAFE_STRUCTURE": ["porch is collapsing", "falling bricks from the facade"],
    "VACANT_BUILDING": ["roof collapsed at the back"],
    "TREE_DOWN": ["branch resting on the power lines", "limb down on the wires"],
    "TREE_TRIM": ["branches touching the electric line"],
    "GRAFFITI": ["a swastika sprayed on the garage", "racist words on the wall"],
    "ILLEGAL_DUMPING": ["chemical drums dumped in the alley", "bag of needles by the fence"],
}
ANY_SERVICE_TRIGGERS = ["I smell gas near the meter", "strong gas odor in the basement"]
ORDINARY = [
    "been like this for two weeks",
    "outside 1200 W Lake St",
    "near the bus stop",
    "my neighbour reported it too",
    "in the alley behind the houses",
    "please send someone soon",
    "across from the school",
    "second time this month",
]
FLAGS = ["hazard", "blocking_traffic"]
CHANNELS = ["phone", "web", "app", "system"]
ANSWERS = {
    "STRAY_DOG": ("dog_behaviour", ["aggressive", "attacking", "friendly", "scared"]),
    "MISSED_PICKUP": ("bin_type", ["recycling", "garbage", "yard waste"]),
}


@dataclass(frozen=True)
class Options:
    seconds: float
    cases: int
    latency_samples: int
    seed: int
    json_path: Path


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput loop (default 3)")
    parser.add_argument("--cases", type=int, default=5000, help="cases in each mix (default 5000)")
    parser.add_argument("--latency-samples", type=int, default=2000, help="timed single calls (default 2000)")
    parser.add_argument("--seed", type=int, default=311, help="seed of the mixes and the synthetic city")
    parser.add_argument("--json", type=Path, default=Path("bench-results/routing.json"), help="results file")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.cases < 1 or args.latency_samples < 1:
        parser.error("--seconds, --cases and --latency-samples must be positive")
    return Options(args.seconds, args.cases, args.latency_samples, args.seed, args.json)


# --- the sample city's mix -------------------------------------------------------------------------


def sample_city_cases(rules: CompiledRuleSet, count: int, seed: int) -> list[CaseFacts]:
    """Service codes from the file; trigger words in some descriptions; 80% located in the city's rectangle;
    some flags, answers and channels; times over 2026-2027 in America/Chicago including holidays."""
    rng = random.Random(seed)
    codes = list(rules.rule_set.services)
    holidays = list(rules.rule_set.calendars["city-hours"].holidays)
    mix = []
    for _ in range(count):
        code = rng.choice(codes)
        text = " ".join(rng.sample(ORDINARY, rng.randint(1, 2)))
        roll = rng.random()
        if code in TRIGGERS and roll < 0.35:
            text = f"{rng.choice(TRIGGERS[code])}, {text}"
        elif roll > 0.98:
            text = f"{rng.choice(ANY_SERVICE_TRIGGERS)}, {text}"
        attributes = {}
        if code in ANSWERS and rng.random() < 0.8:
            question, answers = ANSWERS[code]
            attributes[question] = rng.choice(answers)
        lat, long = synthetic_city.random_point(rng)
        mix.append(
            CaseFacts(
                service_code=code,
                description=text,
                submitted_at=synthetic_city.random_instant(rng, holidays),
                lat=lat,
                long=long,
                attributes=attributes,
                flags=frozenset(rng.sample(FLAGS, 1)) if rng.random() < 0.12 else frozenset(),
                channel=rng.choices(CHANNELS, weights=[40, 35, 20, 5])[0],
            )
        )
    return mix


def describe_mix(mix: Sequence[CaseFacts], zone_holidays: set[date]) -> dict[str, Any]:
    local = [f.submitted_at for f in mix]
    return {
        "cases": len(mix),
        "service_codes": len({f.service_code for f in mix}),
        "located_share": sum(f.lat is not None for f in mix) / len(mix),
        "night_share_22_to_06": sum(t.hour >= 22 or t.hour < 6 for t in local) / len(mix),
        "weekend_share": sum(t.weekday() >= 5 for t in local) / len(mix),
        "holiday_share": sum(t.date() in zone_holidays for t in local) / len(mix),
        "flagged_share": sum(bool(f.flags) for f in mix) / len(mix),
    }


# --- measuring -------------------------------------------------------------------------------------


def throughput(call: Callable[[CaseFacts], object], mix: Sequence[CaseFacts], seconds: float) -> dict[str, Any]:
    """Calls per second, looping over the mix (in its order, round and round) for about `seconds`."""
    chunks = [mix[i : i + CHUNK] for i in range(0, len(mix), CHUNK)]
    calls = 0
    gc.collect()
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for chunk in chunks:
            for facts in chunk:
                call(facts)
            calls += len(chunk)
            now = time.perf_counter()
            if now >= deadline:
                return {"calls": calls, "seconds": now - started, "per_s": calls / (now - started)}


def latencies_us(
    call: Callable[[CaseFacts], object], sample: Sequence[CaseFacts], seconds: float
) -> tuple[list[float], list[object]]:
    """Per-call latency in µs (perf_counter_ns around each call), and the results; stops after `seconds`."""
    clock = time.perf_counter_ns
    stop = clock() + int(seconds * 1e9)
    timings: list[float] = []
    results: list[object] = []
    gc.collect()
    for facts in sample:
        t0 = clock()
        result = call(facts)
        t1 = clock()
        timings.append((t1 - t0) / 1000)
        results.append(result)
        if t1 >= stop:
            break
    return timings, results


def measure(rules: CompiledRuleSet, mix: Sequence[CaseFacts], options: Options) -> dict[str, Any]:
    """route and explain on this mix: throughput, p50/p99 latency, and what the explain traces show."""
    warm = time.perf_counter() + min(1.0, options.seconds / 3)
    for facts in mix:  # fill the calendars' day caches and the interpreter's caches first
        rules.route(facts)
        if time.perf_counter() > warm:
            break
    sample = mix[: options.latency_samples]
    figures: dict[str, Any] = {}
    for name, call in (("route", rules.route), ("explain", rules.explain)):
        rate = throughput(call, mix, options.seconds)
        timings, results = latencies_us(call, sample, options.seconds)
        figures[name] = {
            **rate,
            "latency_samples": len(timings),
            "p50_us": percentile(timings, 50),
            "p99_us": percentile(timings, 99),
            "mean_us": statistics.fmean(timings),
            "max_us": max(timings),
        }
        if name == "explain":
            figures["decisions"] = _traces(results, rules)
    return figures


def _traces(results: list[Any], rules: CompiledRuleSet) -> dict[str, Any]:
    """Rules evaluated per decision (the length of the explain trace) and how the sample was decided."""
    lengths = [len(trace) for _, trace in results]
    last_rule = rules.rule_set.rules[-1].id
    routed = [decision for decision, _ in results if isinstance(decision, Routed)]
    return {
        "sample": len(results),
        "rules_in_set": len(rules.rule_set.rules),
        "rules_evaluated_mean": statistics.fmean(lengths),
        "rules_evaluated_p50": percentile([float(n) for n in lengths], 50),
        "rules_evaluated_max": max(lengths),
        "decided_by_last_rule_share": sum(d.rule_id == last_rule for d in routed) / len(results),
        "triage_share": (len(results) - len(routed)) / len(results),
        "distinct_rules_deciding": len({d.rule_id for d in routed}),
    }


def build_cost(what: str, build: Callable[[], CompiledRuleSet], repeats: int = 3) -> dict[str, Any]:
    """Wall time to build the compiled rule set (best and all of `repeats`), then tracemalloc's peak and
    retained bytes of one more build."""
    timings = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        build()
        timings.append(time.perf_counter() - started)
    gc.collect()
    tracemalloc.start()
    try:
        compiled = build()
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del compiled
    return {
        "what": what,
        "load_compile_best_s": min(timings),
        "load_compile_s": timings,
        "py_peak_bytes": peak,
        "py_retained_bytes": retained,
    }


# --- the run ---------------------------------------------------------------------------------------


def run(options: Options) -> dict[str, Any]:
    print("sample city: loading and generating the mix …", flush=True)
    sample_rules = load_rules(SAMPLE_CITY)
    sample_mix = sample_city_cases(sample_rules, options.cases, options.seed)
    sample_holidays = set(sample_rules.rule_set.calendars["city-hours"].holidays)
    scenarios: dict[str, Any] = {}
    scenarios["sample_city"] = {
        "rules": len(sample_rules.rule_set.rules),
        "areas": len(sample_rules.area_geometries),
        "mix": describe_mix(sample_mix, sample_holidays),
        "build": build_cost("load_rules: read YAML and GeoJSON, validate, compile", lambda: load_rules(SAMPLE_CITY)),
    }
    print("sample city: measuring route and explain …", flush=True)
    scenarios["sample_city"].update(measure(sample_rules, sample_mix, options))

    print("synthetic city: building 500 rules over 300 districts …", flush=True)
    city = synthetic_city.build(options.seed)

    def build_synthetic() -> CompiledRuleSet:
        return compile_rule_set(parse_rule_set(city.raw, "synthetic"), city.geojson)

    big = build_synthetic()
    build = build_cost("parse_rule_set of the in-memory dict, then compile_rule_set", build_synthetic)
    holidays = set(synthetic_city.HOLIDAYS)
    for key, worst in (("synthetic_city", False), ("synthetic_worst_case", True)):
        mix = synthetic_city.cases(city, options.cases, options.seed + 1, worst_case=worst)
        print(f"{key.replace('_', ' ')}: measuring route and explain …", flush=True)
        scenarios[key] = {
            "rules": len(big.rule_set.rules),
            "areas": len(big.area_geometries),
            "departments": len(big.rule_set.departments),
            "services": len(big.rule_set.services),
            "mix": describe_mix(mix, holidays),
            "build": build,
            **measure(big, mix, options),
        }
    return {
        "benchmark": "routing",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "seconds": options.seconds,
            "cases": options.cases,
            "latency_samples": options.latency_samples,
            "seed": options.seed,
        },
        "scenarios": scenarios,
        "note": NOTE,
    }


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


TITLES = {
    "sample_city": "sample city",
    "synthetic_city": "synthetic 500 rules / 300 areas",
    "synthetic_worst_case": "synthetic, catch-all only",
}


def table(doc: dict[str, Any]) -> str:
    """One row per mix: route and explain throughput and latency, rules evaluated; then build cost."""
    m = doc["machine"]
    header = (
        f"civicflow routing  cases={doc['parameters']['cases']}  seconds={doc['parameters']['seconds']:g}  "
        f"cpus={m['cpu_count']}  python={m['python']}  {doc['timestamp']}"
    )
    columns = ("mix", "route/s", "p50 µs", "p99 µs", "explain/s", "p50 µs", "p99 µs", "rules eval.")
    rows = []
    for key, s in doc["scenarios"].items():
        route, explain, decisions = s["route"], s["explain"], s["decisions"]
        rows.append(
            (
                TITLES.get(key, key),
                _num(route["per_s"]),
                _num(route["p50_us"], 1),
                _num(route["p99_us"], 1),
                _num(explain["per_s"]),
                _num(explain["p50_us"], 1),
                _num(explain["p99_us"], 1),
                f"{decisions['rules_evaluated_mean']:.1f} of {decisions['rules_in_set']}",
            )
        )
    widths = [max(len(str(r[i])) for r in [columns, *rows]) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        return "  ".join([first, *(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))])

    lines = [header, "-" * len(header), line(columns), *(line(r) for r in rows), ""]
    for key in ("sample_city", "synthetic_city"):
        b = doc["scenarios"][key]["build"]
        step = "read+validate+compile" if key == "sample_city" else "validate+compile"
        lines.append(
            f"{step} {TITLES[key]}: {b['load_compile_best_s'] * 1000:.1f} ms (best of "
            f"{len(b['load_compile_s'])}), Python memory peak {_mib(b['py_peak_bytes'])}, "
            f"retained {_mib(b['py_retained_bytes'])}"
        )
    lines += ["", f"note: {NOTE}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        doc = run(options)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    write_json(doc, options.json_path)
    print()
    print(table(doc))
    print(f"\nresults written to {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
