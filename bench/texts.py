"""`python -m bench.texts`: how fast the notifier writes a stage's text within two SMS segments.

    python -m bench.texts [--texts 4000] [--json bench-results/texts.json]

The texts are every stage in English and Spanish for departments and resolutions of every length (the same
every run, seeded): short ones fit as written; long ones are written with GSM-7 look-alikes and shortened by
bisection (services/notifier/sms.py). The figure is texts/s in one thread, beside the floor measured in the
same run on the same facts: the Jinja template rendered once, with no segment counting or fitting. It
measures; it never asserts.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4
from zoneinfo import ZoneInfo

from bench.report import machine, write_json
from services.notifier.domain import StageFacts
from services.notifier.sms import TextTemplates, segments

SEED = 311
STAGES = ("submitted", "routed", "rerouted", "resolved")
WORDS = "crew replaced the photocell ballast tested fixture at dusk cleared debris filled pothole asphalt".split()


def sample_facts(count: int) -> list[tuple[StageFacts, str]]:
    rng = random.Random(SEED)
    facts = []
    for n in range(count):
        department = " ".join(rng.choice(WORDS).capitalize() for _ in range(rng.randrange(1, 16)))
        resolution = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 90))) + "."
        stage = STAGES[n % len(STAGES)]
        facts.append(
            (
                StageFacts(
                    case_id=uuid4(),
                    stage=stage,  # type: ignore[arg-type]
                    tracking_number="4K7Q-M2D",
                    service_code="STREET_LIGHT_OUT",
                    submitted_at=datetime(2026, 11, 23, 15, tzinfo=UTC),
                    sealed_contact="sealed",
                    preferred_channel="sms",
                    department=department,
                    due_at=datetime(2026, 11, 30, 23, tzinfo=UTC) if rng.random() < 0.8 else None,
                    time_zone="America/Chicago",
                    resolution=resolution,
                ),
                rng.choice(("en", "es")),
            )
        )
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    templates = TextTemplates(ZoneInfo("America/Chicago"))
    facts = sample_facts(args.texts)
    environment = templates._env  # the floor: the same templates, rendered once, nothing fitted

    began = time.perf_counter()
    for fact, language in facts:
        environment.get_template(f"sms/{language}/{fact.stage}.txt.j2").render(
            tracking_number=fact.tracking_number,
            service="Street light out",
            department=fact.department,
            due_on="Mon 30 Nov 17:00",
            resolution=fact.resolution,
        )
    floor_s = time.perf_counter() - began

    began = time.perf_counter()
    bodies = [templates.render(fact, language).body for fact, language in facts]
    fitted_s = time.perf_counter() - began

    over = sum(1 for body in bodies if segments(body) > 2)
    two = sum(1 for body in bodies if segments(body) == 2)
    result = {
        "texts": len(bodies),
        "texts_per_s": len(bodies) / fitted_s,
        "floor_renders_per_s": len(bodies) / floor_s,
        "ratio_to_floor": floor_s / fitted_s,
        "in_one_segment": len(bodies) - two - over,
        "in_two_segments": two,
        "over_two_segments": over,
        "machine": machine(),
    }
    print(
        f"{result['texts_per_s']:.0f} texts/s fitted to two segments; floor (template alone) "
        f"{result['floor_renders_per_s']:.0f}/s; ratio {result['ratio_to_floor']:.2f}; "
        f"one segment {result['in_one_segment']}, two {two}, over two {over}"
    )
    if args.json:
        write_json(result, args.json)


if __name__ == "__main__":
    main()
