"""The router's handlers against real PostgreSQL: rule replacement, rerouting to triage, overdue, dry run."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import (
    CaseNeedsTriage,
    CaseOverdue,
    CaseRerouted,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    RecordedEvent,
    WorkOrderRejected,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import UnitOfWork, in_order
from services.router.dryrun import dry_run
from services.router.handlers import Router
from services.router.rulebook import RuleBook, load_rules
from services.router.rules import RuleSetError

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).parents[1] / "fixtures" / "city"
STORE = PostgresEventStore()


class RouterUnderTest:
    """The router's policies run as its consumer runs them, each event in a unit of work of its own."""

    def __init__(self, engine: AsyncEngine, rules: RuleBook) -> None:
        self.router = Router(engine, STORE, rules)
        self._unit = UnitOfWork(engine, "router", STORE)
        self._policy = in_order(self.router.policies())

    async def on_submitted(self, event: RecordedEvent) -> None:
        await self._unit.run([event], self._policy)

    on_reroute_trigger = on_submitted

    async def mark_overdue(self, now: datetime) -> int:
        return await self.router.mark_overdue(now)


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    shutil.copy(FIXTURE / "areas.geojson", tmp_path / "areas.geojson")
    shutil.copy(FIXTURE / "rules.yaml", tmp_path / "rules.yaml")
    return tmp_path / "rules.yaml"


def last_noon_in_chicago() -> datetime:
    """A daytime submission time, whenever the tests run: the fixture city sends night-time noise elsewhere."""
    now = datetime.now(ZoneInfo("America/Chicago"))
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    return noon if noon <= now else noon - timedelta(days=1)


async def submit(
    engine: AsyncEngine, code: str, description: str, lat: float = 41.87, long: float = -87.68
) -> RecordedEvent:
    case_id = uuid7()
    event = CaseSubmitted(
        tracking_number=f"T-{case_id.hex[-8:]}",
        service_code=code,
        description=description,
        location=Location(lat=lat, long=long),
        submitted_at=last_noon_in_chicago(),
    )
    async with engine.begin() as tx:
        [recorded] = await STORE.append(
            tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="test", channel="phone")
        )
    return recorded


async def stream(engine: AsyncEngine, case_id: UUID) -> list[RecordedEvent]:
    async with engine.connect() as conn:
        return await STORE.read_stream(conn, case_id)


async def test_a_replaced_rule_set_decides_new_cases_only(engine: AsyncEngine, rules_file: Path) -> None:
    book = RuleBook(rules_file)
    router = RouterUnderTest(engine, book)
    before = await submit(engine, "NOISE", "drilling")
    await router.on_submitted(before)

    rules_file.write_text(
        rules_file.read_text()
        .replace('version: "test-1"', 'version: "test-2"')
        .replace(
            "then: {department: police, sla: {calendar_days: 3}}", "then: {department: triage, sla: {calendar_days: 3}}"
        )
    )
    with pytest.raises(RuleSetError):
        book.replace(FIXTURE / "no-such-file.yaml")
    assert book.current.version == "test-1", "a refused rule set must leave the old one in force"
    assert book.replace() == ("test-1", "test-2")

    after = await submit(engine, "NOISE", "drilling")
    await router.on_submitted(after)
    old_case, new_case = (await stream(engine, before.case_id))[-1].data, (await stream(engine, after.case_id))[-1].data
    assert isinstance(old_case, CaseRouted) and isinstance(new_case, CaseRouted)
    assert (old_case.department_id, old_case.rule_set_version) == ("police", "test-1")
    assert (new_case.department_id, new_case.rule_set_version) == ("triage", "test-2")


async def test_a_rejected_case_is_rerouted_then_triaged_and_its_history_shows_each_step(
    engine: AsyncEngine, rules_file: Path
) -> None:
    router = RouterUnderTest(engine, RuleBook(rules_file))
    submitted = await submit(engine, "TREE_DOWN", "branch down, and a gas smell")
    await router.on_submitted(submitted)
    await router.on_submitted(submitted)  # redelivered: decided once

    for department in ("streets", "water"):
        async with engine.begin() as tx:
            [rejected] = await STORE.append(
                tx,
                submitted.case_id,
                None,
                [WorkOrderRejected(department_id=department, reason="not ours")],
                submitted.caused("test"),
            )
        await router.on_reroute_trigger(rejected)
        await router.on_reroute_trigger(rejected)  # redelivered: no second reroute

    history = [e.data for e in await stream(engine, submitted.case_id)]
    assert [type(e).__name__ for e in history] == [
        "CaseSubmitted",
        "CaseRouted",
        "WorkOrderRejected",
        "CaseRerouted",
        "WorkOrderRejected",
        "CaseNeedsTriage",
    ]
    rerouted, triaged = history[3], history[5]
    assert (
        isinstance(rerouted, CaseRerouted)
        and rerouted.department_id == "water"
        and rerouted.previous_department_id == "streets"
    )
    assert isinstance(triaged, CaseNeedsTriage) and "turned down 2 times" in triaged.reason
    async with engine.connect() as conn:
        open_case = (
            await conn.execute(text("SELECT 1 FROM router.open_cases WHERE case_id = :c"), {"c": submitted.case_id})
        ).first()
    assert open_case is None, "a triaged case has no department due date to watch"


async def test_an_overdue_case_is_flagged_once(engine: AsyncEngine, rules_file: Path) -> None:
    router = RouterUnderTest(engine, RuleBook(rules_file))
    submitted = await submit(engine, "POTHOLE", "deep")
    await router.on_submitted(submitted)
    later = datetime.now(UTC) + timedelta(days=60)
    assert await router.mark_overdue(later) >= 1
    await router.mark_overdue(later)
    overdue = [e.data for e in await stream(engine, submitted.case_id) if isinstance(e.data, CaseOverdue)]
    assert len(overdue) == 1 and overdue[0].department_id == "streets"


async def test_a_dry_run_reports_what_would_change_and_writes_nothing(engine: AsyncEngine, rules_file: Path) -> None:
    router = RouterUnderTest(engine, RuleBook(rules_file))
    since = datetime.now(UTC) - timedelta(seconds=1)
    submitted = [await submit(engine, "NOISE", d) for d in ("drilling", "hammering")]
    submitted.append(await submit(engine, "POTHOLE", "deep"))
    for event in submitted:
        await router.on_submitted(event)

    candidate_file = rules_file.with_name("candidate.yaml")
    candidate_file.write_text(
        rules_file.read_text()
        .replace('version: "test-1"', 'version: "candidate"')
        .replace(
            "then: {department: police, sla: {calendar_days: 3}}", "then: {department: triage, sla: {calendar_days: 3}}"
        )
    )
    # this test's own cases only: other tests append to the same store while it runs
    before = [await stream(engine, event.case_id) for event in submitted]
    report = await dry_run(engine, load_rules(candidate_file), since)
    assert [await stream(engine, event.case_id) for event in submitted] == before
    ours = [c for c in report.changed if c.service_code == "NOISE"]
    assert len(ours) >= 2 and all((c.old_department, c.new_department) == ("police", "triage") for c in ours)
    assert report.rules_fired["noise-by-day"] >= 2
    assert not [c for c in report.changed if c.service_code == "POTHOLE"]


async def test_the_dry_run_command_prints_the_summary_and_writes_the_csv(
    engine: AsyncEngine, rules_file: Path, settings: KernelSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from typer.testing import CliRunner

    from civicflow.cli import app

    router = RouterUnderTest(engine, RuleBook(rules_file))
    await router.on_submitted(await submit(engine, "NOISE", "drilling"))
    candidate = rules_file.with_name("candidate.yaml")
    candidate.write_text(
        rules_file.read_text().replace(
            "then: {department: police, sla: {calendar_days: 3}}", "then: {department: triage, sla: {calendar_days: 3}}"
        )
    )
    monkeypatch.setenv("CIVICFLOW_DATABASE_URL", settings.database_url)
    out = tmp_path / "changed.csv"
    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["rules", "dry-run", str(candidate), "--since", since, "--csv", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "would go to a different department" in result.output
    assert "police -> (triage)" not in result.output and "police -> triage" in result.output
    rows = out.read_text().splitlines()
    assert rows[0].startswith("tracking_number,service_code") and any(",NOISE," in r for r in rows[1:])
