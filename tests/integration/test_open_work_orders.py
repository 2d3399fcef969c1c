"""What a polled department without an updates feed is asked about: its work orders the bridge holds open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.department_systems import ConnectorSpec
from services.workorder_bridge.poller import open_work_orders_of

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


async def a_work_order(engine: AsyncEngine, department_id: str, external_id: str, *statuses: str) -> None:
    async with engine.begin() as tx:
        await tx.execute(
            text(
                "INSERT INTO workorder_bridge.work_orders"
                " (department_id, external_id, case_id, system, opened_by_event, correlation_id)"
                " VALUES (:d, :x, :c, 'open311', :e, :r)"
            ),
            {"d": department_id, "x": external_id, "c": uuid4(), "e": uuid4(), "r": uuid4()},
        )
        for n, status in enumerate(statuses):
            await tx.execute(
                text(
                    "INSERT INTO workorder_bridge.status_updates (department_id, external_id, status, changed_at)"
                    " VALUES (:d, :x, :s, :t)"
                ),
                {"d": department_id, "x": external_id, "s": status, "t": T0 + timedelta(minutes=n)},
            )


async def test_only_work_orders_not_finished_or_cancelled_are_read_back(engine: AsyncEngine) -> None:
    department = f"roads-{uuid4().hex[:8]}"  # this test's own department: other tests' rows do not count
    spec = ConnectorSpec(kind="open311", endpoint="https://their.example/open311/v2")
    await a_work_order(engine, department, "new")
    await a_work_order(engine, department, "working", "open", "investigating")
    await a_work_order(engine, department, "fixed", "investigating", "fixed")
    await a_work_order(engine, department, "closed", "Not Councils-Responsibility")  # theirs, as they write it
    await a_work_order(engine, department, "reopened", "fixed", "reopen")
    await a_work_order(engine, department, "theirs-unknown", "awaiting parts")
    await a_work_order(engine, department, "cancelled", "open")
    async with engine.begin() as tx:
        await tx.execute(
            text(
                "INSERT INTO workorder_bridge.cancelled_work_orders"
                " (department_id, external_id, case_id, cancelled_by_event, how)"
                " VALUES (:d, 'cancelled', :c, :e, 'cancelled')"
            ),
            {"d": department, "c": uuid4(), "e": uuid4()},
        )
    await a_work_order(engine, f"other-{department}", "someone-elses", "open")

    read = open_work_orders_of(engine, department, spec)

    assert sorted(await read()) == ["new", "reopened", "theirs-unknown", "working"]
