"""The bridge's bookkeeping of departments' own systems, against real PostgreSQL: each department's work order
goes through its own connector; a case that moves on has its earlier work orders cancelled exactly once
(redelivered, crashed before commit, parked while the system is down, told where the system cannot cancel);
health rows; the poller's cursor; `civicflow departments status`.

The department systems here are in-process doubles registered as connector kinds for these tests only: what is
under test is the bridge's bookkeeping; each real kind passes the connector contract (tests/connector_contract.py)
against its sample system."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.backoff import Backoff
from civicflow.db import make_engine
from civicflow.department_systems import ConnectorSpec
from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    RecordedEvent,
    WorkOrderCancelled,
    WorkOrderOpened,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import Decision, Reads, UnitOfWork, in_order, together
from services.workorder_bridge.cancellation import WorkOrderCanceller
from services.workorder_bridge.connector import (
    CannotCancel,
    ConnectorContext,
    DepartmentUnavailable,
    ExternalUpdate,
    Health,
    OpenedWorkOrder,
    Outcome,
    UpdatesPage,
)
from services.workorder_bridge.connectors import DepartmentSystems, builder_from
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.health import HealthBook, refresh_gauges
from services.workorder_bridge.main import BridgeSettings
from services.workorder_bridge.opener import WorkOrderOpener
from services.workorder_bridge.poller import Poller
from services.workorder_bridge.updates import UpdateRecorder
from tests.conftest import eventually

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def later(hours: float) -> datetime:
    return NOW + timedelta(hours=hours)


@dataclass
class SystemDouble:
    """A department's own system in process: opens by key, cancels by key, keeps an update log whose cursor is
    its length. `down`: it answers nothing; `can_cancel`: False as an inbox-only department's;
    `lose_next_cancel_answer`: the next cancellation happens there, and its answer never reaches the bridge."""

    can_cancel: bool = True
    down: bool = False
    lose_next_cancel_answer: bool = False
    opened: dict[str, str] = field(default_factory=dict)  # key -> their work order id
    cancellations: dict[str, set[str]] = field(default_factory=dict)  # their id -> the keys it was cancelled by
    cancel_calls: list[tuple[str, str, str]] = field(default_factory=list)  # (their id, reason, key)
    log: list[ExternalUpdate] = field(default_factory=list)
    gate: asyncio.Event | None = None  # set: opening a work order waits until the gate opens
    opening: asyncio.Event = field(default_factory=asyncio.Event)  # set once an opening reached the system

    def cancelled(self, external_id: str) -> set[str]:
        return self.cancellations.get(external_id, set())


class DoubleConnector:
    """One department's connector onto its SystemDouble."""

    def __init__(self, department_id: str, kind: str, system: SystemDouble) -> None:
        self.department_id = department_id
        self.kind = kind
        self.system = system

    def _answering(self) -> None:
        if self.system.down:
            raise DepartmentUnavailable(f"{self.department_id}: did not answer (ConnectTimeout)")

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder:
        self._answering()
        self.system.opening.set()
        if self.system.gate is not None:
            await self.system.gate.wait()
        found = self.system.opened.setdefault(idempotency_key, f"{self.department_id}-{len(self.system.opened) + 1}")
        return OpenedWorkOrder(external_id=found, status="open")

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None:
        self._answering()
        self.system.cancel_calls.append((external_id, reason, idempotency_key))
        if not self.system.can_cancel:
            raise CannotCancel(f"{self.department_id}: an inbox cannot cancel")
        self.system.cancellations.setdefault(external_id, set()).add(idempotency_key)
        if self.system.lose_next_cancel_answer:
            self.system.lose_next_cancel_answer = False
            raise DepartmentUnavailable(f"{self.department_id}: the answer was lost (ReadTimeout)")

    async def updates_since(self, cursor: str | None) -> UpdatesPage:
        self._answering()
        start = int(cursor or 0)
        return UpdatesPage(list(self.system.log[start:]), str(len(self.system.log)))

    async def health(self) -> Health:
        return Health(up=not self.system.down, detail="down" if self.system.down else "answers")

    async def aclose(self) -> None:
        return None


@dataclass
class Told:
    """A recording TellDepartment; `failing` makes the channel fail."""

    messages: list[tuple[str, str, str]] = field(default_factory=list)
    failing: bool = False

    async def __call__(self, department_id: str, subject: str, body: str) -> None:
        if self.failing:
            raise ConnectionError("the mail server did not answer")
        self.messages.append((department_id, subject, body))


class City:
    """Three departments of this test alone: streets on open311, water on rest_webhook (the default, named by
    no connector), code on email (which cannot cancel)."""

    def __init__(self) -> None:
        suffix = uuid4().hex[:8]
        self.streets, self.water, self.code = f"streets-{suffix}", f"water-{suffix}", f"code-{suffix}"
        self.specs = {
            self.streets: ConnectorSpec(kind="open311", endpoint="http://open311.test", poll_seconds=0.05),
            self.water: ConnectorSpec(kind="rest_webhook"),
            self.code: ConnectorSpec(kind="email", inbox="code@sample-city.example"),
        }
        self.systems = {d: SystemDouble(can_cancel=d != self.code) for d in self.specs}
        settings = BridgeSettings()

        def context_of(department_id: str, spec: ConnectorSpec) -> ConnectorContext:
            return ConnectorContext(
                department_id, spec, settings, None, "http://bridge.test/hook", "http://bridge.test"
            )

        def double_of(kind: str) -> Any:
            return lambda context: DoubleConnector(
                context.department_id, kind, self.systems.setdefault(context.department_id, SystemDouble())
            )

        builders = {kind: double_of(kind) for kind in ("rest_webhook", "open311", "email")}
        self.departments = DepartmentSystems(builder_from(builders, context_of, settings), self.specs)


class Bridge:
    """The bridge's policies as its consumer runs them, each event in a unit of work of its own."""

    def __init__(self, engine: AsyncEngine, city: City) -> None:
        self.engine = engine
        self.city = city
        self.told = Told()
        self.health = HealthBook(clock=lambda: NOW)
        backoff = Backoff(5.0, 300.0)
        self.opener = WorkOrderOpener(
            engine, STORE, city.departments, "http://bridge.test/hook", backoff, lambda: NOW, self.health
        )
        self.canceller = WorkOrderCanceller(
            engine, STORE, city.departments, self.told, backoff, lambda: NOW, self.health
        )
        self.policies = {
            "CaseRouted": self.opener,
            "CaseRerouted": together(self.opener, self.canceller),
            "CaseNeedsTriage": self.canceller,
            "CaseResolved": self.canceller,
        }
        self.unit = UnitOfWork(engine, "workorder_bridge", STORE)

    async def __call__(self, *events: RecordedEvent) -> None:
        await self.unit.run(list(events), in_order(self.policies))


@pytest.fixture
async def engine(settings: KernelSettings) -> AsyncIterator[AsyncEngine]:
    """The session's database, with nothing parked by an earlier test (the retry passes take every due row)."""
    engine = make_engine(settings.database_url)
    async with engine.begin() as tx:
        await tx.execute(text("DELETE FROM workorder_bridge.pending_work_orders"))
        await tx.execute(text("DELETE FROM workorder_bridge.pending_cancellations"))
    yield engine
    await engine.dispose()


@pytest.fixture
def city() -> City:
    return City()


@pytest.fixture
def bridge(engine: AsyncEngine, city: City) -> Bridge:
    return Bridge(engine, city)


def routing(department_id: str) -> dict[str, Any]:
    return {
        "department_id": department_id,
        "department_name": department_id.split("-")[0].title(),
        "priority": "normal",
        "due_at": NOW + timedelta(days=2),
        "rule_id": "r",
        "rule_set_version": "v1",
    }


def rerouted_to(department_id: str, reason: str = "recategorised by a call-taker") -> CaseRerouted:
    return CaseRerouted(**routing(department_id), reason=reason)


async def routed_case(engine: AsyncEngine, department_id: str) -> RecordedEvent:
    case_id = uuid7()
    submitted = CaseSubmitted(
        tracking_number=f"T-{case_id.hex[-6:]}",
        service_code="POTHOLE",
        description="a hole",
        location=Location(address="1 Main St"),
        submitted_at=NOW,
    )
    meta = EventMetadata(correlation_id=uuid7(), actor="test")
    async with engine.begin() as tx:
        return (await STORE.append(tx, case_id, 0, [submitted, CaseRouted(**routing(department_id))], meta))[-1]


async def append(engine: AsyncEngine, case_id: UUID, event: CaseEvent, actor: str = "test") -> RecordedEvent:
    async with engine.begin() as tx:
        [recorded] = await STORE.append(tx, case_id, None, [event], EventMetadata(correlation_id=uuid7(), actor=actor))
    return recorded


async def stream(engine: AsyncEngine, case_id: UUID) -> list[RecordedEvent]:
    async with engine.connect() as conn:
        return await STORE.read_stream(conn, case_id)


async def cancellations(engine: AsyncEngine, case_id: UUID) -> list[WorkOrderCancelled]:
    return [e.data for e in await stream(engine, case_id) if isinstance(e.data, WorkOrderCancelled)]


async def opened_in(engine: AsyncEngine, case_id: UUID) -> dict[str, str]:
    """The case's work orders: department -> their id."""
    return {
        e.data.department_id: e.data.external_id
        for e in await stream(engine, case_id)
        if isinstance(e.data, WorkOrderOpened)
    }


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def test_each_department_s_work_order_goes_through_its_own_connector_and_names_its_kind(
    engine: AsyncEngine, bridge: Bridge, city: City
) -> None:
    pothole, leak, noise = [await routed_case(engine, d) for d in (city.streets, city.water, city.code)]
    for case in (pothole, leak, noise):
        await bridge(case)

    for case, department, kind in (
        (pothole, city.streets, "open311"),
        (leak, city.water, "rest_webhook"),
        (noise, city.code, "email"),
    ):
        assert city.systems[department].opened == {str(case.event_id): f"{department}-1"}
        [opened] = [e.data for e in await stream(engine, case.case_id) if isinstance(e.data, WorkOrderOpened)]
        assert (opened.department_id, opened.system) == (department, kind)
        row_kind = await scalar(
            engine, "SELECT system FROM workorder_bridge.work_orders WHERE case_id = :c", c=case.case_id
        )
        assert row_kind == kind


async def test_a_department_the_city_file_does_not_name_gets_the_default_connector(city: City) -> None:
    elsewhere = f"parks-{uuid4().hex[:8]}"
    assert city.departments.for_department(elsewhere).kind == "rest_webhook"
    assert elsewhere in city.departments.departments()
    assert [c.department_id for c, every in city.departments.polled()] == [city.streets]


async def test_a_department_whose_connector_cannot_be_built_parks_its_work_orders_and_says_why(
    engine: AsyncEngine,
) -> None:
    department = f"broken-{uuid4().hex[:8]}"
    spec = ConnectorSpec(kind="grpc", key_id="k1")  # a kind this bridge was built without
    no_context: Any = None
    systems = DepartmentSystems(builder_from({}, no_context, BridgeSettings()), {department: spec})
    connector = systems.for_department(department)
    health = await connector.health()
    assert not health.up and "no grpc connector kind" in health.detail
    opener = WorkOrderOpener(engine, STORE, systems, "http://bridge.test/hook", clock=lambda: NOW)
    case = await routed_case(engine, department)
    await UnitOfWork(engine, "workorder_bridge", STORE).run([case], in_order({"CaseRouted": opener}))
    assert [e.type for e in await stream(engine, case.case_id)][-1] == "WorkOrderSyncFailed"
    waiting = await scalar(
        engine, "SELECT last_error FROM workorder_bridge.pending_work_orders WHERE case_id = :c", c=case.case_id
    )
    assert "misconfigured" in waiting


async def test_a_reroute_cancels_the_first_department_s_work_order_once_however_often_it_arrives(
    engine: AsyncEngine, bridge: Bridge, city: City
) -> None:
    case = await routed_case(engine, city.streets)
    await bridge(case)
    first = (await opened_in(engine, case.case_id))[city.streets]
    moved = await append(engine, case.case_id, rerouted_to(city.water))

    await bridge(moved)
    await bridge(moved)  # a redelivery

    streets = city.systems[city.streets]
    assert streets.cancel_calls == [
        (first, "the case was sent to Water: recategorised by a call-taker", f"{moved.event_id}:{first}")
    ]
    [cancelled] = await cancellations(engine, case.case_id)
    assert (cancelled.department_id, cancelled.external_id, cancelled.how) == (city.streets, first, "cancelled")
    assert city.water in await opened_in(engine, case.case_id), "and the second department's opened"
    how = await scalar(
        engine,
        "SELECT how FROM workorder_bridge.cancelled_work_orders WHERE department_id = :d AND external_id = :x",
        d=city.streets,
        x=first,
    )
    assert how == "cancelled"
    counted = {"department": city.streets, "how": "cancelled"}
    assert REGISTRY.get_sample_value("civicflow_workorders_cancelled_total", counted) == 1

    # Later the case goes to triage: only the standing work order (water's) is cancelled now, streets' not again.
    triaged = await append(
        engine, case.case_id, CaseNeedsTriage(queue="call-centre", reason="turned down twice", rule_set_version="v1")
    )
    await bridge(triaged)
    assert len(streets.cancel_calls) == 1
    water_order = (await opened_in(engine, case.case_id))[city.water]
    assert city.systems[city.water].cancel_calls == [
        (
            water_order,
            "the case was sent to the call centre's triage queue: turned down twice",
            f"{triaged.event_id}:{water_order}",
        )
    ]
    assert [(c.department_id, c.how) for c in await cancellations(engine, case.case_id)] == [
        (city.streets, "cancelled"),
        (city.water, "cancelled"),
    ]


async def test_a_crash_between_the_department_s_answer_and_the_commit_sends_the_same_key_again(
    engine: AsyncEngine, bridge: Bridge, city: City
) -> None:
    case = await routed_case(engine, city.streets)
    await bridge(case)
    first = (await opened_in(engine, case.case_id))[city.streets]
    moved = await append(engine, case.case_id, rerouted_to(city.water))

    async def crash_before_commit(event: RecordedEvent, reads: Reads) -> Decision:
        await bridge.policies["CaseRerouted"](event, reads)
        raise RuntimeError("the bridge died before its commit")

    with pytest.raises(RuntimeError):
        await bridge.unit.run([moved], in_order({"CaseRerouted": crash_before_commit}))
    assert await cancellations(engine, case.case_id) == []
    await bridge(moved)  # the consumer gets the event again

    streets = city.systems[city.streets]
    assert [key for _, _, key in streets.cancel_calls] == [f"{moved.event_id}:{first}"] * 2
    assert streets.cancelled(first) == {f"{moved.event_id}:{first}"}, "one cancellation there, by one key"
    assert len(await cancellations(engine, case.case_id)) == 1


async def test_a_department_that_is_down_gets_its_cancellation_later_and_only_once(
    engine: AsyncEngine, bridge: Bridge, city: City
) -> None:
    case = await routed_case(engine, city.streets)
    await bridge(case)
    first = (await opened_in(engine, case.case_id))[city.streets]
    streets = city.systems[city.streets]
    streets.down = True
    moved = await append(engine, case.case_id, rerouted_to(city.water))
    await bridge(moved)

    parked = await scalar(
        engine,
        "SELECT attempts FROM workorder_bridge.pending_cancellations WHERE department_id = :d AND external_id = :x",
        d=city.streets,
        x=first,
    )
    assert parked == 1 and await cancellations(engine, case.case_id) == []
    assert city.water in await opened_in(engine, case.case_id), "the new department is not held up"

    assert await bridge.canceller.retry_due(NOW + timedelta(seconds=4)) == 0  # not due yet
    assert await bridge.canceller.retry_due(later(1)) == 0  # due, still down: postponed
    assert (
        await scalar(
            engine, "SELECT attempts FROM workorder_bridge.pending_cancellations WHERE external_id = :x", x=first
        )
        == 2
    )

    streets.down = False
    streets.lose_next_cancel_answer = True  # it cancels, and the answer is lost on the way back
    assert await bridge.canceller.retry_due(later(2)) == 0
    assert await bridge.canceller.retry_due(later(3)) == 1
    assert await bridge.canceller.retry_due(later(4)) == 0

    assert streets.cancelled(first) == {f"{moved.event_id}:{first}"}
    [cancelled] = await cancellations(engine, case.case_id)
    assert cancelled.how == "cancelled"
    assert (
        await scalar(
            engine, "SELECT count(*) FROM workorder_bridge.pending_cancellations WHERE external_id = :x", x=first
        )
        == 0
    )


async def test_a_department_whose_system_cannot_cancel_is_told_once(
    engine: AsyncEngine, bridge: Bridge, city: City
) -> None:
    case = await routed_case(engine, city.code)
    await bridge(case)
    first = (await opened_in(engine, case.case_id))[city.code]
    bridge.told.failing = True  # the mail server is down first
    moved = await append(engine, case.case_id, rerouted_to(city.water))
    await bridge(moved)
    assert await cancellations(engine, case.case_id) == []
    assert (
        await scalar(
            engine, "SELECT last_error FROM workorder_bridge.pending_cancellations WHERE external_id = :x", x=first
        )
        == "telling the department failed (ConnectionError: the mail server did not answer)"
    )

    bridge.told.failing = False
    assert await bridge.canceller.retry_due(later(1)) == 1
    await bridge(moved)  # a redelivery
    assert await bridge.canceller.retry_due(later(2)) == 0

    [(department, subject, body)] = bridge.told.messages
    tracking = (await stream(engine, case.case_id))[0].data
    assert isinstance(tracking, CaseSubmitted)
    assert department == city.code and first in subject and tracking.tracking_number in subject
    assert "the case was sent to Water: recategorised by a call-taker" in body
    assert f"Reference: {moved.event_id}:{first}" in body
    [cancelled] = await cancellations(engine, case.case_id)
    assert (cancelled.department_id, cancelled.how) == (city.code, "told")


@pytest.mark.parametrize("consumer_first", [True, False], ids=["consumer-first", "retry-first"])
async def test_a_parked_work_order_their_system_opens_as_the_case_moves_on_is_cancelled_once(
    engine: AsyncEngine, bridge: Bridge, city: City, consumer_first: bool
) -> None:
    case = await routed_case(engine, city.streets)
    streets = city.systems[city.streets]
    streets.down = True
    await bridge(case)  # parked
    streets.down, streets.gate = False, asyncio.Event()
    retrying = asyncio.create_task(bridge.opener.retry_due(later(1)))  # holds the parked row while it asks
    await asyncio.wait_for(streets.opening.wait(), timeout=10)
    moved = await append(engine, case.case_id, rerouted_to(city.water))  # the router decides meanwhile
    if consumer_first:  # the bridge's consumer reaches the reroute while the retry still waits for streets
        handling = asyncio.create_task(bridge(moved))

        async def waiting_for_the_retry() -> bool:
            # only a wait on a parked row counts (another test's lock waits do not): a backend that holds the
            # tuple lock of a pending_work_orders row and waits for the transaction holding that row, or queues
            # behind one that does
            return bool(
                await scalar(
                    engine,
                    "SELECT count(*) FROM pg_locks w WHERE NOT w.granted AND ("
                    " w.relation = 'workorder_bridge.pending_work_orders'::regclass"
                    " OR (w.locktype = 'transactionid' AND EXISTS (SELECT 1 FROM pg_locks t WHERE t.pid = w.pid"
                    "   AND t.locktype = 'tuple' AND t.relation = 'workorder_bridge.pending_work_orders'::regclass)))",
                )
            )

        await eventually(waiting_for_the_retry, timeout=10, what="the canceller to wait for the parked opening")
    streets.gate.set()
    assert await asyncio.wait_for(retrying, timeout=10) == 0, "the case changed under the retry: nothing recorded"
    [their_id] = streets.opened.values()
    if consumer_first:
        await asyncio.wait_for(handling, timeout=10)
    else:
        assert await bridge.opener.retry_due(later(2)) == 0  # records it, and parks its cancellation
        assert await bridge.canceller.retry_due(later(2)) == 1
        await bridge(moved)
    assert await bridge.opener.retry_due(later(3)) == 0 and await bridge.canceller.retry_due(later(3)) == 0

    assert streets.cancel_calls == [
        (their_id, "the case was sent to Water: recategorised by a call-taker", f"{moved.event_id}:{their_id}")
    ], "the work order the retry opened is not left open at the first department, and is cancelled once"
    assert [c.department_id for c in await cancellations(engine, case.case_id)] == [city.streets]
    assert city.water in await opened_in(engine, case.case_id)
    assert (
        await scalar(
            engine, "SELECT count(*) FROM workorder_bridge.pending_work_orders WHERE case_id = :c", c=case.case_id
        )
        == 0
    )


async def test_a_work_order_never_opened_needs_no_cancelling_and_a_plain_resolution_cancels_nothing(
    engine: AsyncEngine, bridge: Bridge, city: City
) -> None:
    parked_case, resolved_case = await routed_case(engine, city.streets), await routed_case(engine, city.water)
    city.systems[city.streets].down = True
    await bridge(parked_case)  # parked, never opened
    await bridge(resolved_case)
    city.systems[city.streets].down = False
    await bridge(await append(engine, parked_case.case_id, rerouted_to(city.water)))
    resolved = CaseResolved(resolution="Filled", resolved_at=NOW)
    await bridge(await append(engine, resolved_case.case_id, resolved, actor=f"department:{city.water}"))

    assert city.systems[city.streets].cancel_calls == [] and city.systems[city.water].cancel_calls == []
    assert await cancellations(engine, parked_case.case_id) == []
    assert await cancellations(engine, resolved_case.case_id) == []


async def test_health_rows_follow_what_calls_and_probes_found(engine: AsyncEngine, bridge: Bridge, city: City) -> None:
    city.systems[city.water].down = True
    for department in (city.streets, city.water):
        await bridge(await routed_case(engine, department))
    assert await bridge.health.flush(engine) == 2

    async def row(department: str) -> Any:
        async with engine.connect() as conn:
            return (
                await conn.execute(
                    text("SELECT * FROM workorder_bridge.department_health WHERE department_id = :d"),
                    {"d": department},
                )
            ).first()

    streets, water = await row(city.streets), await row(city.water)
    assert (streets.kind, streets.up, streets.last_success_at, streets.last_error) == ("open311", True, NOW, None)
    assert (water.kind, water.up, water.last_success_at) == ("rest_webhook", False, None)
    assert water.last_error == "DepartmentUnavailable: " + f"{city.water}: did not answer (ConnectTimeout)"

    await refresh_gauges(engine, {city.water: "rest_webhook"}, later(1))
    assert REGISTRY.get_sample_value("civicflow_department_up", {"department": city.water, "kind": "rest_webhook"}) == 0
    assert REGISTRY.get_sample_value("civicflow_department_parked_work_orders", {"department": city.water}) == 1
    assert REGISTRY.get_sample_value("civicflow_department_oldest_parked_seconds", {"department": city.water}) == 3600
    assert (
        REGISTRY.get_sample_value("civicflow_workorders_opened_total", {"department": city.streets, "kind": "open311"})
        == 1
    )

    city.systems[city.water].down = False
    await bridge.health.probe([city.departments.for_department(city.water)])
    await bridge.health.flush(engine)
    water = await row(city.water)
    assert water.up and water.last_success_at == NOW and water.last_error_at == NOW, "the error is kept, dated"


async def test_the_poller_records_each_update_once_and_moves_its_cursor_only_after_recording(
    engine: AsyncEngine, bridge: Bridge, city: City
) -> None:
    case = await routed_case(engine, city.streets)
    await bridge(case)
    order = (await opened_in(engine, case.case_id))[city.streets]
    streets = city.systems[city.streets]
    streets.log += [
        ExternalUpdate(order, "investigating", NOW + timedelta(minutes=1), "crew on the way"),
        ExternalUpdate(order, "fixed", NOW + timedelta(minutes=2), "Filled"),
    ]
    recorder = UpdateRecorder(engine, STORE, city.departments.specs())
    calls: Counter[str] = Counter()

    async def crashing_on_the_second(department_id: str, update: ExternalUpdate) -> Outcome:
        calls[update.status] += 1
        if update.status == "fixed":
            raise ConnectionError("the database went away")
        return await recorder(department_id, update)

    connector = city.departments.for_department(city.streets)
    crashing = Poller(engine, [(connector, 1.0)], crashing_on_the_second, bridge.health)
    assert await crashing.poll_once(connector) is None
    cursor = "SELECT cursor FROM workorder_bridge.poll_cursors WHERE department_id = :d"
    assert await scalar(engine, cursor, d=city.streets) is None, "the cursor stays where it was"

    poller = Poller(engine, [(connector, 1.0)], recorder, bridge.health)
    assert await poller.poll_once(connector) == 2  # the same page again: the first update is a duplicate now
    assert await scalar(engine, cursor, d=city.streets) == "2"
    assert await poller.poll_once(connector) == 0
    types = [e.type for e in await stream(engine, case.case_id)]
    assert types.count("WorkOrderStatusChanged") == 2 and types.count("CaseResolved") == 1

    streets.log.append(ExternalUpdate(order, "closed", NOW + timedelta(minutes=3), "Closed"))
    assert await poller.poll_once(connector) == 1
    assert await scalar(engine, cursor, d=city.streets) == "3"


async def test_polled_updates_of_another_departments_work_orders_or_too_far_ahead_are_skipped(
    engine: AsyncEngine, bridge: Bridge, city: City
) -> None:
    department = f"sanitation-{uuid4().hex[:8]}"
    city.specs[department] = ConnectorSpec(kind="open311", endpoint="http://other.test")
    city.systems[department] = SystemDouble()

    def double(context: ConnectorContext) -> DoubleConnector:
        return DoubleConnector(context.department_id, "open311", city.systems[context.department_id])

    departments = DepartmentSystems(
        builder_from({"open311": double}, lambda d, s: ConnectorContext(d, s, None, None, "", ""), None),
        {department: city.specs[department]},
    )
    connector = departments.for_department(department)
    city.systems[department].log.append(ExternalUpdate("WO-1", "fixed", NOW))
    answers = [Outcome.UNKNOWN_WORK_ORDER, Outcome.TOO_FAR_AHEAD]

    async def record(department_id: str, update: ExternalUpdate) -> Outcome:
        return answers.pop(0)

    poller = Poller(engine, departments.polled(), record, bridge.health)
    cursor = "SELECT cursor FROM workorder_bridge.poll_cursors WHERE department_id = :d"
    assert await poller.poll_once(connector) == 1, "another department's, on a system they share: skipped"
    assert await scalar(engine, cursor, d=department) == "1"
    city.systems[department].log.append(ExternalUpdate("WO-2", "fixed", NOW))
    assert await poller.poll_once(connector) == 1, "refused as too far ahead: skipped, logged, polling goes on"
    assert await scalar(engine, cursor, d=department) == "2"


async def test_a_department_whose_poll_fails_holds_up_no_other(engine: AsyncEngine, bridge: Bridge, city: City) -> None:
    other = f"sanitation-{uuid4().hex[:8]}"
    city.specs[other] = ConnectorSpec(kind="open311", endpoint="http://other.test", poll_seconds=0.05)
    city.systems[other] = SystemDouble()

    def double(context: ConnectorContext) -> DoubleConnector:
        return DoubleConnector(context.department_id, "open311", city.systems[context.department_id])

    departments = DepartmentSystems(
        builder_from({"open311": double}, lambda d, s: ConnectorContext(d, s, None, None, "", ""), None),
        {city.streets: city.specs[city.streets], other: city.specs[other]},
    )
    city.systems[city.streets].down = True
    city.systems[other].log.append(ExternalUpdate("nowhere-1", "investigating", NOW))
    seen: list[tuple[str, str]] = []

    async def record(department_id: str, update: ExternalUpdate) -> Outcome:
        seen.append((department_id, update.external_id))
        return Outcome.HELD  # as the recorder answers for a work order it has not recorded: the cursor moves on

    poller = Poller(engine, departments.polled(), record, bridge.health)
    stop = asyncio.Event()
    running = asyncio.create_task(poller.run(stop))
    try:

        async def other_polled() -> Any:
            return await scalar(
                engine, "SELECT cursor FROM workorder_bridge.poll_cursors WHERE department_id = :d", d=other
            )

        assert await eventually(other_polled, timeout=10, what="the other department's poll") == "1"
    finally:
        stop.set()
        await running
    assert seen[0] == (other, "nowhere-1")
    await bridge.health.flush(engine)
    up = "SELECT up FROM workorder_bridge.department_health WHERE department_id = :d"
    assert await scalar(engine, up, d=city.streets) is False
    assert await scalar(engine, up, d=other) is True


def test_departments_status_shows_each_department_s_kind_health_and_what_waits(
    database_url: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from civicflow.cli import app

    suffix = uuid4().hex[:8]
    streets, water, parks = f"streets-{suffix}", f"water-{suffix}", f"parks-{suffix}"
    city_file = tmp_path / "city.yaml"
    city_file.write_text(
        "departments:\n"
        f"  {streets}: {{name: Streets, connector: {{kind: open311, endpoint: 'http://open311.test'}}}}\n"
        f"  {water}: {{name: Water}}\n"
        f"  {parks}: {{name: Parks}}\n"
    )

    async def given() -> None:
        engine = make_engine(database_url)
        try:
            health = HealthBook(clock=lambda: datetime.now(UTC) - timedelta(minutes=5))
            health.success(DoubleConnector(streets, "open311", SystemDouble()))
            health.failure(DoubleConnector(water, "rest_webhook", SystemDouble()), "DepartmentUnavailable: no answer")
            await health.flush(engine)
            async with engine.begin() as tx:
                for hours in (1, 3):
                    await tx.execute(
                        text(
                            "INSERT INTO workorder_bridge.pending_work_orders (case_id, routed_event_id, department_id,"
                            " attempts, first_failed_at, next_attempt_at, last_error)"
                            " VALUES (:c, :e, :d, 1, :t, :t, 'DepartmentUnavailable')"
                        ),
                        {"c": uuid7(), "e": uuid7(), "d": water, "t": datetime.now(UTC) - timedelta(hours=hours)},
                    )
                await tx.execute(
                    text(
                        "INSERT INTO workorder_bridge.pending_cancellations (department_id, external_id, case_id,"
                        " caused_by_event, reason, attempts, first_failed_at, next_attempt_at, last_error)"
                        " VALUES (:d, 'W-1', :c, :e, 'r', 1, now(), now(), 'DepartmentUnavailable')"
                    ),
                    {"d": water, "c": uuid7(), "e": uuid7()},
                )
        finally:
            await engine.dispose()

    asyncio.run(given())
    runner = CliRunner()
    env = {"CIVICFLOW_DATABASE_URL": database_url}
    shown = runner.invoke(app, ["departments", "status", "--city-file", str(city_file)], env=env)
    assert shown.exit_code == 0, shown.output
    lines = {line.split()[0]: line.split() for line in shown.output.splitlines() if suffix in line.split()[0]}
    assert lines[streets][:5] == [streets, "open311", "up", "5m", "ago"]
    assert lines[water][:3] == [water, "rest_webhook", "DOWN"] and lines[water][-3:] == ["2", "3h", "1"]
    assert lines[parks][:3] == [parks, "rest_webhook", "unknown"]
    assert f"{water}: DepartmentUnavailable: no answer" in shown.output

    as_json = runner.invoke(app, ["departments", "status", "--json", "--city-file", str(city_file)], env=env)
    assert as_json.exit_code == 0, as_json.output
    mine = {d["department"]: d for d in json.loads(as_json.output) if suffix in d["department"]}
    assert mine[water]["up"] is False and mine[water]["parked_work_orders"] == 2
    assert (
        mine[water]["parked_cancellations"] == 1
        and 3 * 3600 - 60 < mine[water]["oldest_parked_seconds"] < 3 * 3600 + 60
    )
    assert mine[streets]["up"] is True and mine[streets]["kind"] == "open311" and mine[parks]["up"] is None

    broken = tmp_path / "broken.yaml"
    broken.write_text("departments:\n  x: {connector: {kind: open311}}\n")  # open311 needs an endpoint
    warned = runner.invoke(app, ["departments", "status", "--city-file", str(broken)], env=env)
    assert warned.exit_code == 0 and "departments.x.connector" in warned.output and "needs endpoint" in warned.output


async def test_a_work_order_cancelled_for_triage_reports_only_changes(
    engine: AsyncEngine, bridge: Bridge, city: City
) -> None:
    case = await routed_case(engine, city.streets)
    await bridge(case)
    order = (await opened_in(engine, case.case_id))[city.streets]
    triage = CaseNeedsTriage(queue="call-centre", reason="turned down twice", rule_set_version="v1")
    await bridge(await append(engine, case.case_id, triage))
    assert len(await cancellations(engine, case.case_id)) == 1

    record = UpdateRecorder(engine, STORE, city.departments.specs())
    late = ExternalUpdate(order, "resolved", later(1), "x")
    assert await record(city.streets, late) is Outcome.RECORDED
    assert [e.type for e in await stream(engine, case.case_id)][-1] == "WorkOrderStatusChanged", "not CaseResolved"
