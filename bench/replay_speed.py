"""How fast `replay` rebuilds the query read model, and how fast a rules dry run goes over past cases:
seeds a scratch database with N events (a case's life is 5 of them), times each.

.venv/bin/python -m bench.replay_speed --events 100000
.venv/bin/python -m bench.replay_speed --events 500000 --dry-run   # 100,000 cases
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from civicflow.db import libpq_url, make_engine
from civicflow.events import (
    CaseEvent,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    WorkOrderOpened,
    WorkOrderStatusChanged,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.infra import provide
from civicflow.sandbox import scratch_database
from civicflow.settings import SAMPLE_CITY
from services.query.readmodel import replay
from services.router.dryrun import dry_run
from services.router.rulebook import load_rules

ROOT = Path(__file__).resolve().parents[1]


def a_case_life(n: int, at: datetime) -> list[CaseEvent]:
    return [
        CaseSubmitted(
            tracking_number=f"R{n:07d}",
            service_code="POTHOLE",
            description="a deep one",
            location=Location(lat=41.88, long=-87.63, address="1234 W Madison St"),
            submitted_at=at,
        ),
        CaseRouted(
            department_id="streets",
            department_name="Streets",
            priority="normal",
            due_at=at + timedelta(days=5),
            rule_id="potholes",
            rule_set_version="1",
            explanation=["service POTHOLE"],
            time_zone="America/Chicago",
        ),
        WorkOrderOpened(department_id="streets", system="rest", external_id=f"WO-{n}"),
        WorkOrderStatusChanged(external_id=f"WO-{n}", status="in_progress", note="crew on the way"),
        CaseResolved(resolution="filled the hole", resolved_at=at + timedelta(days=1)),
    ]


async def seed(url: str, events: int) -> None:
    """Rows straight into the store (the store's append is not what is measured here)."""
    at = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    metadata = EventMetadata(correlation_id=uuid7(), actor="replay-speed").model_dump_json()
    rows = []
    for n in range(events // 5):
        case_id = uuid7()
        for version, event in enumerate(a_case_life(n, at), start=1):
            data = event.model_dump_json()
            rows.append((uuid7(), case_id, version, event.event_type, event.schema_version, data, metadata, at))
    conn = await asyncpg.connect(libpq_url(url))
    try:
        # COPY speaks binary: jsonb is a version byte (1) and the text
        await conn.set_type_codec(
            "jsonb",
            schema="pg_catalog",
            format="binary",
            encoder=lambda v: b"\x01" + v.encode(),
            decoder=lambda b: json.loads(b[1:]),
        )
        await conn.copy_records_to_table(
            "case_events",
            schema_name="events",
            columns=["event_id", "case_id", "version", "type", "schema_version", "data", "metadata", "occurred_at"],
            records=rows,
        )
    finally:
        await conn.close()


async def measure(events: int, batch_size: int, dry_run_too: bool) -> None:
    with provide(ROOT / ".civicflow" / "replay-speed") as infra:
        async with scratch_database(infra, "replay") as url:
            await seed(url, events)
            engine = make_engine(url)
            try:
                started = time.perf_counter()
                count = await replay(engine, PostgresEventStore(), batch_size=batch_size)
                seconds = time.perf_counter() - started
                print(
                    f"replayed {count} events in {seconds:.2f} s: {count / seconds:,.0f} events/s"
                    f" (batch_size {batch_size})"
                )
                if dry_run_too:
                    rules = load_rules(SAMPLE_CITY)
                    started = time.perf_counter()
                    report = await dry_run(engine, rules, datetime(2026, 11, 1, tzinfo=UTC))
                    seconds = time.perf_counter() - started
                    print(
                        f"dry run of the sample city over {report.cases:,} cases in {seconds:.2f} s:"
                        f" {report.cases / seconds:,.0f} cases/s"
                    )
            finally:
                await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--dry-run", action="store_true", help="also time `rules dry-run` of the sample city")
    args = parser.parse_args()
    asyncio.run(measure(args.events, args.batch_size, args.dry_run))


if __name__ == "__main__":
    main()
