"""Status updates for work orders the bridge has not recorded yet, against real PostgreSQL and the sample department
system in process: the department answered, then the bridge lost the answer before it committed the work order.
The updates are held (never refused, so the department's system does not give up), applied once the work order is
recorded, exactly once and in order; a resend while held is held once; holds expire and are bounded per department.
Also: an update's own id names it within its work order, and a time far ahead is refused."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.backoff import Backoff
from civicflow.events import CaseEvent, CaseResolved, WorkOrderOpened, WorkOrderStatusChanged
from samples.department_workorders.app import SampleDepartmentSettings, create_app
from samples.department_workorders.store import WorkOrder
from services.workorder_bridge.connector import ExternalUpdate, Outcome
from services.workorder_bridge.connectors import DepartmentSystems
from services.workorder_bridge.opener import WorkOrderOpener
from services.workorder_bridge.updates import UpdateRecorder
from services.workorder_bridge.webhook import WebhookSecrets, create_webhook_app
from tests.integration import test_workorder_bridge_store as bridge_store
from tests.integration.test_workorder_bridge_store import (
    NOW,
    STORE,
    CountingConnector,
    Department,
    OpenerUnderTest,
    later,
    opened_case,
    routed_case,
    stream,
)

pytestmark = pytest.mark.integration
# the bridge-store tests' fixtures: the session's database, the sample department in process, the opener
engine, department = bridge_store.engine, bridge_store.department
connector, opener = bridge_store.connector, bridge_store.opener


def recorder(engine: AsyncEngine, *, at: datetime = NOW, hold_max: int = 10_000) -> UpdateRecorder:
    """The real recorder, its clock at `at` (when updates are received and held)."""
    return UpdateRecorder(engine, STORE, clock=lambda: at, hold_max=hold_max)


def opened_at(department: Department, case_id: UUID) -> list[WorkOrder]:
    """The work orders their system opened for the case (whether the bridge heard back or not)."""
    return [w for w in department.app.state.store.of_department("streets") if w.request.case_id == str(case_id)]


def update(external_id: str, status: str, changed_at: datetime, **fields: str) -> ExternalUpdate:
    return ExternalUpdate(external_id, status, changed_at, **fields)


async def held_rows(engine: AsyncEngine, department_id: str, external_id: str | None = None) -> int:
    query = "SELECT count(*) FROM workorder_bridge.held_updates WHERE department_id = :d"
    if external_id is not None:
        query += " AND external_id = :x"
    async with engine.connect() as conn:
        return int(await conn.scalar(text(query), {"d": department_id, "x": external_id}) or 0)


async def after_opening(engine: AsyncEngine, case_id: UUID) -> list[CaseEvent]:
    events = [e.data for e in await stream(engine, case_id)]
    opened = next(i for i, e in enumerate(events) if isinstance(e, WorkOrderOpened))
    return events[opened + 1 :]


async def test_updates_for_a_work_order_not_recorded_yet_are_held_then_applied_once_in_order(
    engine: AsyncEngine, opener: OpenerUnderTest, connector: CountingConnector, department: Department
) -> None:
    case = await routed_case(engine, "streets")
    connector.lose_next_answer = True  # their system opens it; the answer never reaches the bridge
    await opener(case)
    [theirs] = [
        w for w in department.app.state.store.of_department("streets") if w.request.case_id == str(case.case_id)
    ]
    record = recorder(engine)

    outcomes = [
        await record("streets", update(theirs.id, "resolved", later(3), note="Filled by crew 4")),
        await record("streets", update(theirs.id, "in_progress", later(1), note="Crew 4 on site")),
        await record("streets", update(theirs.id, "in_progress", later(1), note="Crew 4 on site")),  # a resend
    ]

    assert outcomes == [Outcome.HELD] * 3
    assert await held_rows(engine, "streets", theirs.id) == 2, "a resend while held is held once"
    await record.apply_held(later(1))
    assert await held_rows(engine, "streets", theirs.id) == 2, "nothing applies before the work order is recorded"

    await opener.retry_due(later(1))  # the parked decision finds the same work order (its key) and records it
    await record.apply_held(later(1))
    await record.apply_held(later(1))  # a second pass finds nothing of this work order

    applied = await after_opening(engine, case.case_id)
    assert [(type(e).__name__, getattr(e, "status", None)) for e in applied] == [
        ("WorkOrderStatusChanged", "in_progress"),
        ("WorkOrderStatusChanged", "resolved"),
        ("CaseResolved", None),
    ], "in order of changed_at, whatever order they arrived in, each once"
    assert isinstance(applied[-1], CaseResolved) and "Filled by crew 4" in applied[-1].resolution
    assert await held_rows(engine, "streets", theirs.id) == 0
    late_resend = await record("streets", update(theirs.id, "resolved", later(3), note="Filled by crew 4"))
    assert late_resend is Outcome.DUPLICATE and len(await after_opening(engine, case.case_id)) == 3


async def test_a_held_update_applied_before_a_crash_lost_its_deletion_is_a_duplicate_next_time(
    engine: AsyncEngine, opener: OpenerUnderTest, connector: CountingConnector, department: Department
) -> None:
    case = await routed_case(engine, "streets")
    connector.lose_next_answer = True
    await opener(case)
    [theirs] = [
        w for w in department.app.state.store.of_department("streets") if w.request.case_id == str(case.case_id)
    ]
    record = recorder(engine)
    done = update(theirs.id, "resolved", later(2), note="Filled", update_id=f"{theirs.id}.2")
    assert await record("streets", done) is Outcome.HELD
    await opener.retry_due(later(1))
    # applied, as a pass would, and then the process stopped before the pass deleted the row
    assert await record("streets", done) is Outcome.RECORDED
    assert await held_rows(engine, "streets", theirs.id) == 1

    await record.apply_held(later(1))

    assert await held_rows(engine, "streets", theirs.id) == 0
    resolved = [e for e in await after_opening(engine, case.case_id) if isinstance(e, CaseResolved)]
    assert len(resolved) == 1


async def test_holds_no_work_order_claims_expire_and_are_counted_not_shown(engine: AsyncEngine) -> None:
    department_id = f"held-{uuid4().hex[:8]}"
    received_long_ago = recorder(engine, at=NOW - timedelta(days=8))
    received_lately = recorder(engine, at=NOW - timedelta(days=6))
    junk = update("JUNK-1", "done", NOW - timedelta(days=8), note="a misconfigured system's id")
    assert await received_long_ago(department_id, junk) is Outcome.HELD
    assert await received_lately(department_id, update("LATE-1", "done", NOW - timedelta(days=6))) is Outcome.HELD

    await recorder(engine).apply_held(NOW)

    assert await held_rows(engine, department_id, "JUNK-1") == 0, "held longer than the week: dropped"
    assert await held_rows(engine, department_id, "LATE-1") == 1, "still inside the week: kept"


async def test_a_department_may_have_only_so_many_held_and_a_resend_of_one_held_is_not_refused(
    engine: AsyncEngine,
) -> None:
    department_id = f"held-{uuid4().hex[:8]}"
    record = recorder(engine, hold_max=3)

    outcomes = [await record(department_id, update(f"WO-{n}", "in_progress", later(n))) for n in range(4)]
    resend = await record(department_id, update("WO-0", "in_progress", later(0)))

    assert outcomes == [Outcome.HELD, Outcome.HELD, Outcome.HELD, Outcome.HOLD_FULL]
    assert resend is Outcome.HELD
    assert await held_rows(engine, department_id) == 3


async def test_an_update_more_than_a_day_ahead_is_refused_and_changes_nothing(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    case_id, external_id = await opened_case(engine, opener)
    record = recorder(engine)

    far = await record("streets", update(external_id, "resolved", NOW + timedelta(days=1, minutes=1)))
    not_yet_recorded = await record("streets", update("WO-NOT-YET", "resolved", NOW + timedelta(days=400)))
    near = await record("streets", update(external_id, "in_progress", NOW + timedelta(hours=23)))

    assert (far, not_yet_recorded, near) == (Outcome.TOO_FAR_AHEAD, Outcome.TOO_FAR_AHEAD, Outcome.RECORDED)
    assert await held_rows(engine, "streets", "WO-NOT-YET") == 0
    assert [type(e) for e in await after_opening(engine, case_id)] == [WorkOrderStatusChanged]


async def test_an_update_id_names_an_update_within_its_work_order(engine: AsyncEngine, opener: OpenerUnderTest) -> None:
    """Servers that number updates per request: two work orders' update 1 are two updates."""
    first_case, first = await opened_case(engine, opener)
    second_case, second = await opened_case(engine, opener)
    record = recorder(engine)

    outcomes = [
        await record("streets", update(first, "in_progress", later(1), update_id="1")),
        await record("streets", update(second, "in_progress", later(1), update_id="1")),
        await record("streets", update(second, "resolved", later(2), update_id="1")),  # a replay of its update 1
    ]

    assert outcomes == [Outcome.RECORDED, Outcome.RECORDED, Outcome.DUPLICATE]
    assert len(await after_opening(engine, first_case)) == len(await after_opening(engine, second_case)) == 1


async def test_the_chaos_case_callbacks_before_the_bridge_recorded_the_work_order_resolve_it_in_the_end(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """As seen under chaos: the department's system opened the work order, the bridge lost the answer, and the
    crew's "in progress" and "done" callbacks came at once. They are held (202, so the department's system does not
    give up after its five tries), and the case is resolved once the parked decision records the work order."""
    secret = "integration-bridge-secret-p3Lk"
    record = UpdateRecorder(engine, STORE)
    hook = create_webhook_app(record, WebhookSecrets(secret))
    answers: list[int] = []

    async def deliver(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hook), base_url="http://bridge.test") as bridge:
            answers.append((await bridge.post(url, content=body, headers=dict(headers))).status_code)
        return answers[-1]

    settings = SampleDepartmentSettings(
        state_dir=tmp_path, webhook_secret=secret, sample_dept_step_seconds=0.01, sample_dept_callback_attempts=5
    )
    system = create_app(settings, send=deliver)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=system), base_url="http://dept.test")
    counting = CountingConnector(client, Counter(), lose_next_answer=True)
    systems = DepartmentSystems(lambda department_id, spec: counting.for_department(department_id), {})
    opener = OpenerUnderTest(
        engine, WorkOrderOpener(engine, STORE, systems, "http://bridge.test/webhooks/work-orders", Backoff(5.0, 300.0))
    )
    try:
        case = await routed_case(engine, "streets")
        await opener(case)  # their system opens it and starts its crew; the bridge never hears back: parked
        await asyncio.wait_for(system.state.crews.idle(), timeout=30)
        assert answers == [202, 202], "both callbacks held at the first try: nothing for their system to give up on"

        await opener.retry_due(datetime.now(UTC) + timedelta(hours=1))  # the same key finds the same work order
        await record.apply_held()
    finally:
        await system.state.crews.stop()
        await client.aclose()

    applied = await after_opening(engine, case.case_id)
    assert [type(e).__name__ for e in applied] == ["WorkOrderStatusChanged", "WorkOrderStatusChanged", "CaseResolved"]
    assert [getattr(e, "status", None) for e in applied[:2]] == ["in_progress", "resolved"]


async def test_an_update_for_another_departments_work_order_is_not_held(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    """One system shared by two departments (one Open311 server for the city) shows each the other's work orders:
    what is already another department's is not held for this one."""
    case = await routed_case(engine, "streets")
    await opener(case)
    async with engine.connect() as conn:
        external_id = await conn.scalar(
            text("SELECT external_id FROM workorder_bridge.work_orders WHERE case_id = :c"), {"c": case.case_id}
        )
    outcome = await recorder(engine)("sanitation", update(external_id, "resolved", later(1)))
    assert outcome is Outcome.UNKNOWN_WORK_ORDER
    assert await held_rows(engine, "sanitation", external_id) == 0
