"""How fast `civicflow import` brings an old system's export in, against issue 8's 1,000 rows/s: writes the
sample city's messy export of N rows, imports it into a scratch database on the embedded PostgreSQL, then
imports it again (everything already in). Beside each figure, floors measured in the same run: reading and
validating the rows with no database (the import's own CPU ceiling), and 500-row batched inserts.

.venv/bin/python -m bench.import_speed --rows 20000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.fernet import Fernet

from bench.floors import postgres_batched_inserts
from civicflow.address_file import read_address_file
from civicflow.address_points import AddressIndex, AddressPointGeocoder
from civicflow.city import load_city
from civicflow.db import make_engine
from civicflow.eventstore import PostgresEventStore
from civicflow.history import load_mapping
from civicflow.history_export import ExportReader, HistoricalRow
from civicflow.infra import provide
from civicflow.pii import ContactVault
from civicflow.sandbox import scratch_database
from civicflow.settings import SAMPLE_CITY
from samples.history.export import export_bytes
from services.intake.handlers import CaseWriter
from services.intake.importer import BATCH_SIZE, HistoryImport, ImportSummary, admit

ROOT = Path(__file__).resolve().parents[1]
MAPPING = ROOT / "samples" / "history" / "mapping.yaml"
TARGET_ROWS_PER_S = 1000


@dataclass(frozen=True)
class ImportSpeed:
    rows: int
    accepted: int
    refused: int
    seconds: float
    rows_per_s: float
    again_seconds: float
    again_rows_per_s: float
    validate_only_rows_per_s: float
    batched_insert_floor_rows_per_s: float
    target_rows_per_s: int = TARGET_ROWS_PER_S


def sample_geocoder() -> AddressPointGeocoder:
    """The sample city's address points, as intake and the import place addresses with them."""
    city = load_city(SAMPLE_CITY)
    assert city.address_points is not None
    found = read_address_file(Path(city.address_points).read_bytes(), city.service_area)
    return AddressPointGeocoder(AddressIndex(found.points))


def validate_only(data: bytes) -> float:
    """Rows/s of reading and admitting every row with no database: what the import can reach at best."""
    mapping, city = load_mapping(MAPPING), load_city(SAMPLE_CITY)
    geocoder = sample_geocoder()
    started = time.perf_counter()
    count = 0
    for row in ExportReader(io.BytesIO(data), mapping).rows():
        count += 1
        if isinstance(row, HistoricalRow):
            admit(row, mapping, city, geocoder)
    return count / (time.perf_counter() - started)


async def import_once(url: str, data: bytes, batch_size: int) -> tuple[ImportSummary, float]:
    mapping, city = load_mapping(MAPPING), load_city(SAMPLE_CITY)
    engine = make_engine(url)
    try:
        writer = CaseWriter(PostgresEventStore(), ContactVault(Fernet.generate_key()))
        run = HistoryImport(engine, writer, mapping, city, sample_geocoder(), batch_size)
        started = time.perf_counter()
        summary = await run.run(ExportReader(io.BytesIO(data), mapping).rows())
        return summary, time.perf_counter() - started
    finally:
        await engine.dispose()


async def measure(rows: int, batch_size: int) -> ImportSpeed:
    data = export_bytes(rows)
    ceiling = validate_only(data)
    with provide(ROOT / ".civicflow" / "import-speed") as infra:
        async with scratch_database(infra, "import") as url:
            floor = await postgres_batched_inserts(url)
            summary, seconds = await import_once(url, data, batch_size)
            again, again_seconds = await import_once(url, data, batch_size)
    assert again.accepted == 0, "a second run imported rows again"
    return ImportSpeed(
        rows=summary.read,
        accepted=summary.accepted,
        refused=summary.refused_rows,
        seconds=seconds,
        rows_per_s=summary.read / seconds,
        again_seconds=again_seconds,
        again_rows_per_s=again.read / again_seconds,
        validate_only_rows_per_s=ceiling,
        batched_insert_floor_rows_per_s=floor.rows_per_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--json", type=Path, default=Path("bench-results/import_speed.json"), help="results file")
    args = parser.parse_args()
    result = asyncio.run(measure(args.rows, args.batch_size))
    print(
        f"import: {result.rows:,} rows ({result.accepted:,} imported, {result.refused:,} refused) in"
        f" {result.seconds:.2f} s: {result.rows_per_s:,.0f} rows/s"
        f" ({result.rows_per_s / TARGET_ROWS_PER_S:.1f}x the {TARGET_ROWS_PER_S:,}/s target)"
    )
    print(f"  again (all already in): {result.again_seconds:.2f} s, {result.again_rows_per_s:,.0f} rows/s")
    print(
        f"  floors this run: reading and validating alone {result.validate_only_rows_per_s:,.0f} rows/s"
        f" (import at {result.rows_per_s / result.validate_only_rows_per_s:.0%} of it);"
        f" 500-row batched inserts {result.batched_insert_floor_rows_per_s:,.0f} rows/s"
        f" (import at {result.rows_per_s / result.batched_insert_floor_rows_per_s:.0%} of it)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")


if __name__ == "__main__":
    main()
