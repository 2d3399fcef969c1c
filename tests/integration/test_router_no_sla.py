"""A rule with no SLA: the case is routed with no due date and the router never flags it overdue (a
reroute to a no-SLA rule forgetting the earlier due date: tests/unit/test_router_sla.py)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import CaseOverdue, CaseRouted
from services.router.rulebook import RuleBook
from tests.integration.test_router_service import RouterUnderTest, stream, submit

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).parents[1] / "fixtures" / "city"


@pytest.fixture
def no_sla_rules(tmp_path: Path) -> Path:
    """The test city where ordinary streets cases have no SLA."""
    shutil.copy(FIXTURE / "areas.geojson", tmp_path / "areas.geojson")
    rules = (FIXTURE / "rules.yaml").read_text()
    old = "then: {department: streets, sla: {business_hours: 40}}"
    assert old in rules
    (tmp_path / "rules.yaml").write_text(rules.replace(old, "then: {department: streets, sla: none}"))
    return tmp_path / "rules.yaml"


async def watched(engine: AsyncEngine, case_id: UUID) -> bool:
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT 1 FROM router.open_cases WHERE case_id = :c"), {"c": case_id})).first()
    return row is not None


async def test_a_case_with_no_sla_is_never_flagged_overdue(engine: AsyncEngine, no_sla_rules: Path) -> None:
    router = RouterUnderTest(engine, RuleBook(no_sla_rules))
    submitted = await submit(engine, "POTHOLE", "fictional and deep")
    await router.on_submitted(submitted)
    [_, routed] = [e.data for e in await stream(engine, submitted.case_id)]
    assert isinstance(routed, CaseRouted) and routed.due_at is None and routed.sla == "no SLA"
    assert not await watched(engine, submitted.case_id)
    await router.mark_overdue(datetime.now(UTC) + timedelta(days=3650))
    assert not [e for e in await stream(engine, submitted.case_id) if isinstance(e.data, CaseOverdue)]
