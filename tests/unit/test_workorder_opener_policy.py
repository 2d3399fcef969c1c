"""The bridge's opener decides what to record; the kernel records it. Tested with the store's reads faked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import (
    CaseRerouted,
    CaseRouted,
    CaseSubmitted,
    Location,
    WorkOrderOpened,
    WorkOrderSyncFailed,
)
from civicflow.eventstore import EventStore
from civicflow.ids import uuid7
from services.workorder_bridge.connector import DepartmentUnavailable, OpenedWorkOrder, WorkOrderRequest
from services.workorder_bridge.opener import WorkOrderOpener
from tests.factories import recorded
from tests.fake_store import StoredStreams

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
SUBMITTED = CaseSubmitted(
    tracking_number="QGPE-J5T",
    service_code="POTHOLE",
    description="deep",
    location=Location(address="12 Elm Street"),
    submitted_at=NOW,
)
ROUTING: dict[str, Any] = {
    "department_name": "Streets",
    "priority": "normal",
    "due_at": NOW + timedelta(days=5),
    "rule_id": "potholes",
    "rule_set_version": "1",
}


class Department:
    """A department's system (of a kind "rest") that every department of the city uses."""

    kind = "rest"
    department_id = "streets"

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.keys: list[str] = []

    def for_department(self, department_id: str) -> Department:
        return self

    async def open_work_order(self, request: WorkOrderRequest, key: str) -> OpenedWorkOrder:
        self.keys.append(key)
        if self.down:
            raise DepartmentUnavailable("timed out")
        return OpenedWorkOrder(external_id="WO-7", status="open")


def an_opener(department: Department, store: StoredStreams) -> WorkOrderOpener:
    engine = cast(AsyncEngine, None)  # the policy itself opens no transaction
    return WorkOrderOpener(engine, cast(EventStore, store), department, "http://bridge.test/hook", clock=lambda: NOW)


async def test_a_routed_case_gets_its_work_order_keyed_by_the_routing_event() -> None:
    case_id = uuid7()
    stream = [recorded(SUBMITTED, case_id=case_id, version=1, at=NOW)]
    stream.append(recorded(CaseRouted(department_id="streets", **ROUTING), case_id=case_id, version=2, at=NOW))
    department, store = Department(), StoredStreams(*stream)

    decision = await an_opener(department, store)(stream[1], store.reads_of())

    assert department.keys == [str(stream[1].event_id)]
    [append] = decision.appends
    assert append.events == [WorkOrderOpened(department_id="streets", system="rest", external_id="WO-7")]
    assert [w.params["c"] for w in decision.writes] == [case_id, case_id]  # the row, and nothing left parked


async def test_a_department_that_is_down_parks_the_work_order_and_says_so() -> None:
    case_id = uuid7()
    stream = [recorded(SUBMITTED, case_id=case_id, version=1, at=NOW)]
    stream.append(recorded(CaseRouted(department_id="streets", **ROUTING), case_id=case_id, version=2, at=NOW))
    store = StoredStreams(*stream)

    decision = await an_opener(Department(down=True), store)(stream[1], store.reads_of())

    [append] = decision.appends
    assert isinstance(append.events[0], WorkOrderSyncFailed)
    [park] = decision.writes
    assert park.params["e"] == stream[1].event_id and park.params["next"] == NOW + timedelta(seconds=5)


async def test_a_decision_already_replaced_calls_nobody_and_decides_nothing() -> None:
    case_id = uuid7()
    stream = [recorded(SUBMITTED, case_id=case_id, version=1, at=NOW)]
    stream.append(recorded(CaseRouted(department_id="streets", **ROUTING), case_id=case_id, version=2, at=NOW))
    rerouted = CaseRerouted(department_id="water", reason="recategorised", **ROUTING)
    stream.append(recorded(rerouted, case_id=case_id, version=3, at=NOW))
    department, store = Department(), StoredStreams(*stream)

    decision = await an_opener(department, store)(stream[1], store.reads_of())

    assert department.keys == [] and decision.appends == [] and decision.writes == []
