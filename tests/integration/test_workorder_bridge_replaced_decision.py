"""A routing decision the opener finds replaced on a replay may have had its work order opened before a crash kept
the bridge from recording it: where the kind can look our key up (grpc's outbox here, against real PostgreSQL),
that work order is cancelled, once; where nothing was opened, nothing is parked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.backoff import Backoff
from civicflow.department_systems import ConnectorSpec
from civicflow.events import (
    CaseRerouted,
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
from civicflow.unit_of_work import UnitOfWork, in_order
from services.workorder_bridge.cancellation import WorkOrderCanceller
from services.workorder_bridge.connectors import DepartmentSystems
from services.workorder_bridge.grpc_outbox import GrpcOutbox
from services.workorder_bridge.kinds.grpc import GrpcConnector
from services.workorder_bridge.opener import WorkOrderOpener

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()


def routed(department_id: str) -> CaseRouted:
    return CaseRouted(
        department_id=department_id,
        department_name=department_id.title(),
        priority="normal",
        due_at=datetime.now(UTC) + timedelta(days=2),
        rule_id="r",
        rule_set_version="v1",
    )


async def test_a_work_order_opened_before_its_decision_was_replaced_is_cancelled_on_the_replay(
    engine: AsyncEngine,
) -> None:
    water, parks = f"gw{uuid.uuid4().hex[:8]}", f"gp{uuid.uuid4().hex[:8]}"
    outbox = GrpcOutbox(engine)
    systems = DepartmentSystems(
        lambda d, spec: GrpcConnector(d, spec, outbox),
        {water: ConnectorSpec(kind="grpc"), parks: ConnectorSpec(kind="grpc")},
    )

    async def no_one_to_tell(department_id: str, subject: str, body: str) -> None:
        raise AssertionError("a grpc department's work order is cancelled on its feed")

    opener = WorkOrderOpener(engine, STORE, systems, "http://bridge.test/hook", Backoff(5.0, 300.0))
    canceller = WorkOrderCanceller(engine, STORE, systems, no_one_to_tell, Backoff(5.0, 300.0))
    unit = UnitOfWork(engine, "workorder_bridge", STORE)

    case_id = uuid7()
    submitted = CaseSubmitted(
        tracking_number=f"G-{case_id.hex[-6:]}",
        service_code="WATER_LEAK",
        description="a leak",
        location=Location(address="1 Main St"),
        submitted_at=datetime.now(UTC),
    )
    meta = EventMetadata(correlation_id=uuid7(), actor="test")
    async with engine.begin() as tx:
        [_, first] = await STORE.append(tx, case_id, 0, [submitted, routed(water)], meta)
    # The bridge opened it on water's feed, then died before recording it; meanwhile the case went to parks.
    async with engine.connect() as conn:
        opened = await opener.open_for(first, await STORE.read_stream(conn, case_id))
    rerouted = CaseRerouted(**routed(parks).model_dump(), reason="recategorised", previous_department_id=water)
    async with engine.begin() as tx:
        [reroute] = await STORE.append(tx, case_id, None, [rerouted], meta)

    # The replay of the first decision finds it replaced: it opens nothing, and parks the cancellation.
    await unit.run([first], in_order({"CaseRouted": opener}))
    async with engine.connect() as conn:
        parked = (
            await conn.execute(
                text(
                    "SELECT external_id, caused_by_event, reason FROM workorder_bridge.pending_cancellations"
                    " WHERE department_id = :d"
                ),
                {"d": water},
            )
        ).all()
    assert [(p.external_id, p.caused_by_event) for p in parked] == [(opened.external_id, reroute.event_id)]
    assert parked[0].reason.startswith(f"the case was sent to {parks.title()}")

    # the canceller's retry cancels it on water's feed, once, and the case records it
    assert await canceller.retry_due(datetime.now(UTC) + timedelta(minutes=1)) == 1
    assert await canceller.retry_due(datetime.now(UTC) + timedelta(minutes=2)) == 0
    async with engine.connect() as conn:
        events: list[RecordedEvent] = await STORE.read_stream(conn, case_id)
    cancelled = [e.data for e in events if isinstance(e.data, WorkOrderCancelled)]
    assert [(c.department_id, c.external_id, c.how) for c in cancelled] == [(water, opened.external_id, "cancelled")]
    assert not any(isinstance(e.data, WorkOrderOpened) for e in events), "the replaced decision records no work order"
    feed = await outbox.messages_after(water, 0)
    assert [m.kind for m in feed] == ["work_order", "cancellation"]


async def test_a_replaced_decision_that_opened_nothing_parks_nothing(engine: AsyncEngine) -> None:
    water, parks = f"gw{uuid.uuid4().hex[:8]}", f"gp{uuid.uuid4().hex[:8]}"
    outbox = GrpcOutbox(engine)
    specs = {water: ConnectorSpec(kind="grpc"), parks: ConnectorSpec(kind="grpc")}
    systems = DepartmentSystems(lambda d, spec: GrpcConnector(d, spec, outbox), specs)
    opener = WorkOrderOpener(engine, STORE, systems, "http://bridge.test/hook", Backoff(5.0, 300.0))
    case_id = uuid7()
    submitted = CaseSubmitted(
        tracking_number=f"G-{case_id.hex[-6:]}",
        service_code="WATER_LEAK",
        description="a leak",
        location=Location(address="1 Main St"),
        submitted_at=datetime.now(UTC),
    )
    rerouted = CaseRerouted(**routed(parks).model_dump(), reason="recategorised", previous_department_id=water)
    meta = EventMetadata(correlation_id=uuid7(), actor="test")
    async with engine.begin() as tx:
        [_, first, _] = await STORE.append(tx, case_id, 0, [submitted, routed(water), rerouted], meta)

    await UnitOfWork(engine, "workorder_bridge", STORE).run([first], in_order({"CaseRouted": opener}))
    async with engine.connect() as conn:
        parked = await conn.scalar(
            text("SELECT count(*) FROM workorder_bridge.pending_cancellations WHERE case_id = :c"), {"c": case_id}
        )
    assert parked == 0
    assert await outbox.messages_after(water, 0) == [], "nothing was put on water's feed"
