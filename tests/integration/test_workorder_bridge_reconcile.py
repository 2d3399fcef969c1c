"""Reconciliation (services/workorder_bridge/reconcile.py) against real PostgreSQL, the SAMPLE REST department
system and the bridge's real webhook, each served over HTTP in this process: a callback that never arrived is
read back and resolves the case; a work order the department lost is opened again under the same key and its
later updates act on the case; one that cannot be opened again puts the case in the supervisor queue; reads
are spaced by the department's interval, and a department that does not answer is left for the next pass.

No clock is waited on: each pass is given its `now`, an hour past the work orders' opening, and every
department has a one-minute interval, so only this test's work orders (their departments are its own) are
due; the session's other work orders are in departments this test's bridge cannot read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.backoff import Backoff
from civicflow.department_systems import ConnectorSpec
from civicflow.events import (
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    RecordedEvent,
    WorkOrderLost,
    WorkOrderOpened,
    WorkOrderReopenedThere,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.unit_of_work import UnitOfWork, in_order
from samples.department_workorders.app import SampleDepartmentSettings, create_app
from samples.open311_department.app import SampleOpen311Settings
from samples.open311_department.app import create_app as create_open311_app
from services.query.projection import CaseRecord, TimelineEntry, apply
from services.workorder_bridge.connector import (
    CannotRead,
    Connector,
    ExternalUpdate,
    Health,
    OpenedWorkOrder,
    UpdatesPage,
)
from services.workorder_bridge.connectors import DepartmentSystems
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.health import HealthBook
from services.workorder_bridge.kinds.open311 import Open311Connector
from services.workorder_bridge.kinds.rest_webhook import RestWebhookConnector
from services.workorder_bridge.opener import WorkOrderOpener
from services.workorder_bridge.reconcile import Reconciler
from services.workorder_bridge.updates import UpdateRecorder
from services.workorder_bridge.webhook import WEBHOOK_PATH, WebhookSecrets, create_webhook_app
from tests.conftest import eventually
from tests.integration.test_connector_open311 import serve
from tests.integration.test_connector_rest_webhook import Served

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
SECRET = "reconcile-test-webhook-secret-9Qz2"
DEAD_CALLBACK = "http://127.0.0.1:9/webhooks/work-orders"  # nothing listens: every callback is lost
INTERVAL_MINUTES = 1.0
OPEN311_KEY = "reconcile-test-open311-key-not-a-secret"


class NotOurs:
    """The connector of a department another test made: this test's bridge cannot read it, so its pass leaves
    the session's other work orders alone."""

    kind = "rest_webhook"

    def __init__(self, department_id: str) -> None:
        self.department_id = department_id

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder:
        raise AssertionError("not this test's department")

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None:
        raise AssertionError("not this test's department")

    async def updates_since(self, cursor: str | None) -> UpdatesPage:
        return UpdatesPage([], cursor)

    async def read_work_order(self, external_id: str) -> ExternalUpdate | None:
        raise CannotRead("another test's department")

    async def health(self) -> Health:
        return Health(True, "not ours")

    async def aclose(self) -> None:
        return None


class Bridge:
    """The bridge's opener, recorder, webhook and reconciler for this test's departments, over the sample system."""

    def __init__(self, engine: AsyncEngine, endpoint: str, departments: dict[str, str]) -> None:
        """`departments`: each of this test's departments and where its system calls back; `endpoint`: where the
        bridge reaches their system (the sample's URL)."""
        self.engine = engine
        self.specs = {
            d: ConnectorSpec(kind="rest_webhook", endpoint=endpoint, reconcile_after_minutes=INTERVAL_MINUTES)
            for d in departments
        }
        self.endpoint = endpoint
        self._callbacks = departments
        self._built: list[RestWebhookConnector] = []
        self.systems = DepartmentSystems(self._build, self.specs)
        self.health = HealthBook()
        self.recorder = UpdateRecorder(engine, STORE, self.specs)
        self.opener = WorkOrderOpener(engine, STORE, self.systems, DEAD_CALLBACK, Backoff(5.0, 300.0))
        self.reconciler = Reconciler(
            engine, STORE, self.systems, self.recorder, self.opener, {"queued": "queued-on-call"}, self.health
        )
        self._unit = UnitOfWork(engine, "workorder_bridge", STORE)
        self._policy = in_order({"CaseRouted": self.opener})
        self.staff = httpx.AsyncClient(base_url=endpoint, timeout=10)

    def _build(self, department_id: str, spec: ConnectorSpec) -> Connector:
        callback = self._callbacks.get(department_id)
        if callback is None:
            return NotOurs(department_id)
        connector = RestWebhookConnector(department_id, spec, self.endpoint, timeout_seconds=5, callback_url=callback)
        self._built.append(connector)
        return connector

    async def routed_and_opened(self, department_id: str) -> tuple[RecordedEvent, str]:
        """A case routed to the department, its work order opened there by the opener's policy."""
        case_id = uuid7()
        submitted = CaseSubmitted(
            tracking_number=f"R-{case_id.hex[-6:]}",
            service_code="POTHOLE",
            description="a hole",
            location=Location(address="1 Main St"),
            submitted_at=datetime.now(UTC),
        )
        routed = CaseRouted(
            department_id=department_id,
            department_name=department_id.title(),
            priority="normal",
            due_at=datetime.now(UTC) + timedelta(days=2),
            rule_id="r",
            rule_set_version="v1",
        )
        async with self.engine.begin() as tx:
            [_, decision] = await STORE.append(
                tx, case_id, 0, [submitted, routed], EventMetadata(correlation_id=uuid7(), actor="test")
            )
        await self._unit.run([decision], self._policy)
        [opened] = [e.data for e in await self.stream(case_id) if isinstance(e.data, WorkOrderOpened)]
        return decision, opened.external_id

    async def stream(self, case_id: UUID) -> list[RecordedEvent]:
        async with self.engine.connect() as conn:
            return await STORE.read_stream(conn, case_id)

    async def their(self, department_id: str, external_id: str) -> httpx.Response:
        return await self.staff.get(f"/departments/{department_id}/work-orders/{external_id}")

    async def set_there(self, department_id: str, external_id: str, status: str, note: str) -> None:
        moved = await self.staff.post(
            f"/departments/{department_id}/work-orders/{external_id}/status", json={"status": status, "note": note}
        )
        assert moved.status_code == 200, moved.text

    async def lose_there(self, department_id: str, external_id: str, keep_key: bool = False) -> None:
        lost = await self.staff.post(
            f"/departments/{department_id}/work-orders/{external_id}/lose",
            params={"keep_key": "true" if keep_key else "false"},
        )
        assert lost.status_code == 200, lost.text

    async def read_row(self, department_id: str, external_id: str) -> Any:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    text(
                        "SELECT read_at, outcome FROM workorder_bridge.work_order_reads"
                        " WHERE department_id = :d AND external_id = :x"
                    ),
                    {"d": department_id, "x": external_id},
                )
            ).first()

    async def aclose(self) -> None:
        await self.staff.aclose()
        for connector in self._built:
            await connector.aclose()


def a_department() -> str:
    return f"rc{uuid.uuid4().hex[:8]}"


def an_hour_on() -> datetime:
    """A pass's `now`: well past every interval of this test's work orders, opened a moment ago."""
    return datetime.now(UTC) + timedelta(hours=1)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[Served]:
    # crews that would take an hour a step, and one try per callback: only what the tests do moves a work order
    settings = SampleDepartmentSettings(
        state_dir=tmp_path, webhook_secret=SECRET, sample_dept_step_seconds=3600, sample_dept_callback_attempts=1
    )
    served = Served(create_app(settings))
    await served.start()
    yield served
    await served.stop()


@pytest.fixture
async def webhook_recorder(engine: AsyncEngine) -> AsyncIterator[tuple[Served, list[UpdateRecorder]]]:
    """The bridge's real webhook; the recorder behind it is set by the test (its departments' specs)."""
    recorders: list[UpdateRecorder] = []

    async def record(department_id: str, update: ExternalUpdate) -> Any:
        return await recorders[0](department_id, update)

    served = Served(create_webhook_app(record, WebhookSecrets(SECRET)))
    await served.start()
    yield served, recorders
    await served.stop()


async def test_a_finished_job_whose_callback_was_lost_is_read_back_and_resolves_the_case(
    engine: AsyncEngine, system: Served
) -> None:
    department = a_department()
    bridge = Bridge(engine, system.url, {department: DEAD_CALLBACK})
    try:
        decision, external_id = await bridge.routed_and_opened(department)
        await bridge.set_there(department, external_id, "resolved", "Filled by crew 3")
        # their callback went to a dead address and was given up: the case knows nothing of it
        assert not any(isinstance(e.data, CaseResolved) for e in await bridge.stream(decision.case_id))

        now = an_hour_on()
        await bridge.reconciler.reconcile_due(now)

        events = [e.data for e in await bridge.stream(decision.case_id)]
        [resolved] = [e for e in events if isinstance(e, CaseResolved)]
        assert resolved.resolution == "Filled by crew 3"
        first_read = await bridge.read_row(department, external_id)
        assert first_read.outcome == "updated:recorded"
        # a job over is not read again: nothing more to record, the case stays resolved once
        await bridge.reconciler.reconcile_due(now + timedelta(days=1))
        assert await bridge.read_row(department, external_id) == first_read, "not even claimed"
        again = [e.data for e in await bridge.stream(decision.case_id)]
        assert sum(isinstance(e, CaseResolved) for e in again) == 1 and len(again) == len(events)
    finally:
        await bridge.aclose()


async def test_a_work_order_the_department_lost_is_opened_again_under_the_same_key_and_its_updates_act(
    engine: AsyncEngine, system: Served, webhook_recorder: tuple[Served, list[UpdateRecorder]]
) -> None:
    webhook, recorders = webhook_recorder
    department = a_department()
    bridge = Bridge(engine, system.url, {department: webhook.url + WEBHOOK_PATH})
    recorders.append(bridge.recorder)
    try:
        decision, lost_id = await bridge.routed_and_opened(department)
        await bridge.lose_there(department, lost_id)
        assert (await bridge.their(department, lost_id)).status_code == 404

        now = an_hour_on()
        done = await bridge.reconciler.reconcile_due(now)
        assert (done.read, done.reopened) == (1, 1), "the new work order is not read in the pass that opened it"

        [reopened] = [
            e.data for e in await bridge.stream(decision.case_id) if isinstance(e.data, WorkOrderReopenedThere)
        ]
        assert reopened.old_external_id == lost_id and reopened.external_id != lost_id
        shown = await bridge.their(department, reopened.external_id)
        assert shown.status_code == 200 and shown.json()["case_id"] == str(decision.case_id)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT external_id, opened_by_event, reopened_as FROM workorder_bridge.work_orders"
                        " WHERE case_id = :c ORDER BY opened_at"
                    ),
                    {"c": decision.case_id},
                )
            ).all()
            how = await conn.scalar(
                text(
                    "SELECT how FROM workorder_bridge.cancelled_work_orders"
                    " WHERE department_id = :d AND external_id = :x"
                ),
                {"d": department, "x": lost_id},
            )
        assert [(r.external_id, r.opened_by_event, r.reopened_as) for r in rows] == [
            (lost_id, decision.event_id, reopened.external_id),
            (reopened.external_id, decision.event_id, None),
        ]
        assert how == "lost", "the lost number is done with: nothing cancels or reads it again"

        # the same key again finds the work order opened the second time, never a third
        again = await bridge.opener.open_for(decision, await bridge.stream(decision.case_id))
        assert again.external_id == reopened.external_id

        # a later pass reads the new work order (still open there): nothing is opened again
        later = await bridge.reconciler.reconcile_due(now + timedelta(minutes=5))
        assert later.reopened == 0 and later.lost == 0

        # the department finishes the job under its new number: the webhook's update acts on the case
        await bridge.set_there(department, reopened.external_id, "resolved", "Patched")

        async def resolved() -> CaseResolved | None:
            found = [e.data for e in await bridge.stream(decision.case_id) if isinstance(e.data, CaseResolved)]
            return found[0] if found else None

        assert (await eventually(resolved, timeout=30, what="the case to resolve")).resolution == "Patched"
    finally:
        await bridge.aclose()


def view(events: list[RecordedEvent]) -> tuple[CaseRecord, list[TimelineEntry]]:
    record: CaseRecord | None = None
    timeline = []
    for event in events:
        record, line = apply(record, event)
        if line is not None:
            timeline.append(line)
    assert record is not None
    return record, timeline


async def test_a_lost_work_order_that_cannot_be_opened_again_sends_the_case_to_the_supervisor_queue(
    engine: AsyncEngine, system: Served
) -> None:
    department = a_department()
    bridge = Bridge(engine, system.url, {department: DEAD_CALLBACK})
    try:
        decision, lost_id = await bridge.routed_and_opened(department)
        # their system forgets the work order but still holds our key for it: the same key finds the lost id
        await bridge.lose_there(department, lost_id, keep_key=True)

        now = an_hour_on()
        await bridge.reconciler.reconcile_due(now)

        stream = await bridge.stream(decision.case_id)
        [lost] = [e.data for e in stream if isinstance(e.data, WorkOrderLost)]
        assert (lost.department_id, lost.external_id) == (department, lost_id)
        assert lost.queue == f"{department}-supervisor", "no on-call queue in the city file: the default"
        assert not any(isinstance(e.data, WorkOrderReopenedThere) for e in stream)
        record, timeline = view(stream)
        assert record.status == "supervisor_queue"
        assert timeline[-1].stage == "work_order_lost"
        assert f"lost the work order {lost_id}; sent to its supervisor queue {department}-supervisor" in (
            timeline[-1].detail
        )
        # done with: a later pass neither reads it nor records it lost again
        await bridge.reconciler.reconcile_due(now + timedelta(minutes=5))
        assert len(await bridge.stream(decision.case_id)) == len(stream)
        assert bridge.reconciler.queue_of("queued") == "queued-on-call"
    finally:
        await bridge.aclose()


async def test_reads_are_spaced_by_the_departments_interval(engine: AsyncEngine, system: Served) -> None:
    department = a_department()
    bridge = Bridge(engine, system.url, {department: DEAD_CALLBACK})
    try:
        decision, external_id = await bridge.routed_and_opened(department)
        before = len(await bridge.stream(decision.case_id))
        opened_at = datetime.now(UTC)

        # not quiet for long enough yet: not read
        await bridge.reconciler.reconcile_due(opened_at - timedelta(seconds=30))
        assert await bridge.read_row(department, external_id) is None

        first = an_hour_on()
        await bridge.reconciler.reconcile_due(first)
        row = await bridge.read_row(department, external_id)
        assert (row.read_at, row.outcome) == (first, "unchanged"), "open there, as WorkOrderOpened says: no news"

        await bridge.reconciler.reconcile_due(first + timedelta(seconds=50))  # within the interval: not read
        assert (await bridge.read_row(department, external_id)).read_at == first

        second = first + timedelta(minutes=INTERVAL_MINUTES, seconds=1)
        await bridge.reconciler.reconcile_due(second)
        assert (await bridge.read_row(department, external_id)).read_at == second
        assert len(await bridge.stream(decision.case_id)) == before, "reading what we know records nothing"
    finally:
        await bridge.aclose()


async def test_a_department_that_does_not_answer_is_left_for_the_next_pass(engine: AsyncEngine, system: Served) -> None:
    department = a_department()
    bridge = Bridge(engine, system.url, {department: DEAD_CALLBACK})
    try:
        decision, external_id = await bridge.routed_and_opened(department)
        await bridge.set_there(department, external_id, "resolved", "Done while the bridge was away")
        before = len(await bridge.stream(decision.case_id))
        now = an_hour_on()

        # a bridge that cannot reach their system (nothing listens at its address): no answer, nothing decided
        cut_off = Bridge(engine, DEAD_CALLBACK.removesuffix("/webhooks/work-orders"), {department: DEAD_CALLBACK})
        try:
            done = await cut_off.reconciler.reconcile_due(now)
            assert department in done.departments_down
            await cut_off.health.flush(engine)
        finally:
            await cut_off.aclose()
        assert await bridge.read_row(department, external_id) is None, "the claim is given back"
        assert len(await bridge.stream(decision.case_id)) == before, "nothing recorded, reopened or lost"
        async with engine.connect() as conn:
            up = await conn.scalar(
                text("SELECT up FROM workorder_bridge.department_health WHERE department_id = :d"), {"d": department}
            )
        assert up is False, "its health says down"

        # the next pass, at the same moment, reaches it: the finished job is recorded
        await bridge.reconciler.reconcile_due(now)
        assert any(isinstance(e.data, CaseResolved) for e in await bridge.stream(decision.case_id))
    finally:
        await bridge.aclose()


class RerouteWhileOpening:
    """The real opener, and the case rerouted while the department opens the lost work order again (the race the
    reconciler must not lose a work order to)."""

    def __init__(self, bridge: Bridge, elsewhere: str) -> None:
        self._bridge = bridge
        self._elsewhere = elsewhere
        self.rerouted: RecordedEvent | None = None

    async def open_for(self, event: RecordedEvent, stream: Sequence[RecordedEvent]) -> OpenedWorkOrder:
        opened = await self._bridge.opener.open_for(event, stream)
        assert isinstance(event.data, CaseRouted)
        moved = CaseRerouted(
            **event.data.model_copy(update={"department_id": self._elsewhere}).model_dump(),
            reason="recategorised",
            previous_department_id=event.data.department_id,
        )
        async with self._bridge.engine.begin() as tx:
            [self.rerouted] = await STORE.append(
                tx, event.case_id, None, [moved], EventMetadata(correlation_id=uuid7(), actor="test")
            )
        return opened


async def test_a_work_order_opened_again_as_the_case_moves_on_is_recorded_and_its_cancellation_parked(
    engine: AsyncEngine, system: Served
) -> None:
    department = a_department()
    bridge = Bridge(engine, system.url, {department: DEAD_CALLBACK})
    try:
        decision, lost_id = await bridge.routed_and_opened(department)
        await bridge.lose_there(department, lost_id)
        racing = RerouteWhileOpening(bridge, a_department())
        reconciler = Reconciler(engine, STORE, bridge.systems, bridge.recorder, racing)

        await reconciler.reconcile_due(an_hour_on())

        [reopened] = [
            e.data for e in await bridge.stream(decision.case_id) if isinstance(e.data, WorkOrderReopenedThere)
        ]
        assert racing.rerouted is not None
        async with engine.connect() as conn:
            parked = (
                await conn.execute(
                    text(
                        "SELECT external_id, caused_by_event FROM workorder_bridge.pending_cancellations"
                        " WHERE department_id = :d"
                    ),
                    {"d": department},
                )
            ).all()
        assert [(p.external_id, p.caused_by_event) for p in parked] == [
            (reopened.external_id, racing.rerouted.event_id)
        ], "the work order opened again is cancelled, since the case moved on"
    finally:
        await bridge.aclose()


async def test_a_request_an_open311_system_lost_is_posted_again_with_our_key(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The same with the open311 kind: GET requests/{id} answers 404, the key search finds nothing, so the
    connector posts the request again with attribute[civicflow_key] = the routing event's id."""
    key_file = tmp_path / "open311.key"
    key_file.write_text(OPEN311_KEY)
    sample = create_open311_app(
        SampleOpen311Settings(state_dir=tmp_path, open311_api_key=OPEN311_KEY, sample_open311_step_seconds=0)
    )
    url, stop = await serve(sample)
    department = a_department()
    spec = ConnectorSpec.model_validate(
        {
            "kind": "open311",
            "endpoint": url,
            "credentials": {"file": str(key_file)},
            "jurisdiction_id": "sample-city",
            "services": {"POTHOLE": "4"},
            "reconcile_after_minutes": INTERVAL_MINUTES,
        }
    )
    connector = Open311Connector(department, spec)
    systems = DepartmentSystems(lambda d, s: connector if d == department else NotOurs(d), {department: spec})
    recorder = UpdateRecorder(engine, STORE, systems.specs())
    opener = WorkOrderOpener(engine, STORE, systems, DEAD_CALLBACK, Backoff(5.0, 300.0))
    reconciler = Reconciler(engine, STORE, systems, recorder, opener)
    try:
        case_id = uuid7()
        submitted = CaseSubmitted(
            tracking_number=f"O-{case_id.hex[-6:]}",
            service_code="POTHOLE",
            description="a hole",
            location=Location(address="1 Main St"),
            submitted_at=datetime.now(UTC),
        )
        routed = CaseRouted(
            department_id=department,
            department_name="Streets",
            priority="normal",
            due_at=datetime.now(UTC) + timedelta(days=2),
            rule_id="r",
            rule_set_version="v1",
        )
        async with engine.begin() as tx:
            [_, decision] = await STORE.append(
                tx, case_id, 0, [submitted, routed], EventMetadata(correlation_id=uuid7(), actor="test")
            )
        await UnitOfWork(engine, "workorder_bridge", STORE).run([decision], in_order({"CaseRouted": opener}))
        async with engine.connect() as conn:
            [opened] = [e.data for e in await STORE.read_stream(conn, case_id) if isinstance(e.data, WorkOrderOpened)]
        # their system loses the request, and with it what its key search would find (the sample's own memory)
        store = sample.state.store
        lost = store.requests.pop(opened.external_id)
        store._by_key.pop(lost.key)

        done = await reconciler.reconcile_due(an_hour_on())

        assert (done.read, done.reopened) == (1, 1)
        async with engine.connect() as conn:
            stream = await STORE.read_stream(conn, case_id)
        [reopened] = [e.data for e in stream if isinstance(e.data, WorkOrderReopenedThere)]
        assert reopened.old_external_id == opened.external_id
        again = store.requests[reopened.external_id]
        assert again.key == str(decision.event_id), "posted again under the same key"
        assert len([r for r in store.requests.values() if r.key == str(decision.event_id)]) == 1
    finally:
        await connector.aclose()
        await stop()
