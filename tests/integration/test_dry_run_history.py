"""A dry run over history imported from an old system: `--since` picks cases by their first event's
occurred_at, which an import stamps with the time the case was first submitted there, and the CSV
carries that time."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from civicflow.cli import app
from civicflow.events import CaseRouted, CaseSubmitted, EventMetadata, Location
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.settings import KernelSettings
from services.router.dryrun import dry_run
from services.router.dryrun_report import changed_cases_csv
from services.router.rulebook import load_rules

pytestmark = pytest.mark.integration
RULES = load_rules(Path(__file__).parents[1] / "fixtures" / "city" / "rules.yaml")
STORE = PostgresEventStore()


async def import_case(engine: AsyncEngine, submitted_at: datetime) -> str:
    """A case as an import records it: both events stamped with the old system's submitted time."""
    case_id = uuid7()
    number = f"T-{case_id.hex[-8:]}"
    submitted = CaseSubmitted(
        tracking_number=number,
        service_code="NOISE",
        description="fictional drilling",
        location=Location(lat=41.87, long=-87.68),
        submitted_at=submitted_at,
    )
    routed = CaseRouted(
        department_id="parks",
        department_name="Parks",
        priority="normal",
        due_at=None,
        rule_id="old-system",
        rule_set_version="imported",
    )
    async with engine.begin() as tx:
        await STORE.append(
            tx,
            case_id,
            0,
            [submitted, routed],
            EventMetadata(correlation_id=uuid7(), actor="import", channel="phone"),
            occurred_at=submitted_at,
        )
    return number


async def test_since_picks_imported_cases_by_their_original_time_and_the_csv_carries_it(engine: AsyncEngine) -> None:
    # A unique moment far in the past, so no other test's cases sit at it.
    moment = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(minutes=uuid7().int % 10_000_000)
    earlier = await import_case(engine, moment - timedelta(days=1))
    later = await import_case(engine, moment + timedelta(hours=1))

    report = await dry_run(engine, RULES, moment)
    numbers = {c.tracking_number for c in report.changed}
    assert later in numbers, "a case first submitted after --since is compared"
    assert earlier not in numbers, "a case first submitted before --since is not, whenever it was imported"

    rows = {r["tracking_number"]: r for r in csv.DictReader(io.StringIO(changed_cases_csv(report)))}
    assert rows[later]["submitted_at"] == (moment + timedelta(hours=1)).isoformat()
    assert (rows[later]["old_department"], rows[later]["new_department"]) == ("parks", "police")


async def test_the_command_lists_changed_services_or_all_and_writes_the_csv(
    engine: AsyncEngine, settings: KernelSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moment = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(days=uuid7().int % 5000)
    number = await import_case(engine, moment + timedelta(hours=1))
    monkeypatch.setenv("CIVICFLOW_DATABASE_URL", settings.database_url)
    out = tmp_path / "changed.csv"
    rules = Path(__file__).parents[1] / "fixtures" / "city" / "rules.yaml"
    command = ["rules", "dry-run", str(rules), "--since", moment.date().isoformat(), "--csv", str(out)]

    result = await asyncio.to_thread(CliRunner().invoke, app, command)
    assert result.exit_code == 0, result.output
    assert "service types whose cases change (changed / cases):" in result.output
    assert "parks -> police" in result.output
    assert any(row["tracking_number"] == number for row in csv.DictReader(out.open()))

    every = await asyncio.to_thread(CliRunner().invoke, app, [*command, "--all"])
    assert every.exit_code == 0, every.output
    assert "by service type (changed / cases):" in every.output
