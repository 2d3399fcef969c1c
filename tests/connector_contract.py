"""The contract every connector kind meets (services/workorder_bridge/connector.py `Connector`), as one base test
class. Each kind's test module subclasses `ConnectorContract` (named Test…) and gives a `department` fixture: its
connector wired to a running sample of that kind's system, and a way to act as the department's staff.

    class TestOpen311Connector(ConnectorContract):
        @pytest.fixture
        async def department(self, tmp_path) -> AsyncIterator[DepartmentUnderTest]: ...

Every test uses keys and work orders of its own, so the order tests run in does not matter.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Protocol

import pytest

from civicflow.department_systems import ConnectorSpec
from services.workorder_bridge.connector import (
    CannotCancel,
    CannotRead,
    Connector,
    DepartmentUnavailable,
    ExternalUpdate,
)
from services.workorder_bridge.domain import WorkOrderRequest
from tests.conftest import eventually


class DepartmentUnderTest(Protocol):
    """A kind's connector and the sample system behind it, driven as the department's staff would."""

    connector: Connector
    spec: ConnectorSpec
    can_cancel: bool  # False: cancel_work_order raises CannotCancel and the bridge tells the department instead

    async def change_status(self, external_id: str, their_status: str, note: str | None = None) -> None:
        """Staff move the work order to one of *their* statuses in their own system."""
        ...

    async def updates(self) -> list[ExternalUpdate]:
        """Every update that has reached civicflow so far: polled through connector.updates_since (poll kinds) or
        received at the bridge's endpoint (push kinds)."""
        ...

    async def cancelled_there(self, external_id: str) -> bool:
        """Whether their system shows the work order cancelled (or, for a kind that cannot cancel, whether the
        department was told)."""
        ...

    async def stop_system(self) -> None:
        """Stop the sample system, as an outage would."""
        ...


def a_request(service_code: str = "POTHOLE") -> WorkOrderRequest:
    case_id = uuid.uuid4()
    return WorkOrderRequest(
        case_id=str(case_id),
        tracking_number=f"CT-{case_id.hex[:8].upper()}",
        service_code=service_code,
        summary=f"311 case for a contract test: {service_code}",
        callback_url="http://127.0.0.1:9/webhooks/work-orders",
        due_at=datetime(2030, 1, 2, 15, 0, tzinfo=UTC),
    )


class ConnectorContract:
    """The tests every kind passes. Subclasses provide the `department` fixture."""

    async def test_a_work_order_opens_once_per_key(self, department: DepartmentUnderTest) -> None:
        request, key = a_request(), str(uuid.uuid4())
        first = await department.connector.open_work_order(request, key)
        again = await department.connector.open_work_order(request, key)
        other = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        assert first.external_id, "their system names the work order"
        assert again.external_id == first.external_id, "the same key finds the same work order, never a second"
        assert other.external_id != first.external_id

    async def test_a_status_change_there_reaches_civicflow_in_their_words(
        self, department: DepartmentUnderTest
    ) -> None:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        theirs = department.spec.theirs("in_progress")
        await department.change_status(opened.external_id, theirs, note="crew on site")

        async def arrived() -> list[ExternalUpdate]:
            return [u for u in await department.updates() if u.external_id == opened.external_id]

        updates = await eventually(arrived, timeout=30, what="the status update to reach civicflow")
        assert [department.spec.ours(u.status) for u in updates][-1] == "in_progress"

    async def test_a_status_no_mapping_knows_still_arrives_unmapped(self, department: DepartmentUnderTest) -> None:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        await department.change_status(opened.external_id, "awaiting_parts_xq")

        async def arrived() -> list[ExternalUpdate]:
            return [u for u in await department.updates() if u.external_id == opened.external_id]

        updates = await eventually(arrived, timeout=30, what="the unmapped update to reach civicflow")
        assert department.spec.ours(updates[-1].status) is None, "their own status, for the bridge to note"

    async def test_a_work_order_is_cancelled_once_however_often_asked(self, department: DepartmentUnderTest) -> None:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        key = str(uuid.uuid4())
        if not department.can_cancel:
            with pytest.raises(CannotCancel):
                await department.connector.cancel_work_order(opened.external_id, "rerouted", key)
            return
        await department.connector.cancel_work_order(opened.external_id, "the case went to another department", key)
        await department.connector.cancel_work_order(opened.external_id, "the case went to another department", key)
        assert await department.cancelled_there(opened.external_id)

    async def test_a_status_change_there_reads_back(self, department: DepartmentUnderTest) -> None:
        """Reconciliation's read (services/workorder_bridge/reconcile.py): the work order as it stands there."""
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        try:
            before = await department.connector.read_work_order(opened.external_id)
        except CannotRead:
            pytest.skip(f"a {department.connector.kind} department's work orders cannot be read back")
        assert before is not None and before.external_id == opened.external_id
        await department.change_status(opened.external_id, department.spec.theirs("in_progress"), note="crew on site")

        async def moved() -> ExternalUpdate | None:
            found = await department.connector.read_work_order(opened.external_id)
            return found if found is not None and department.spec.ours(found.status) == "in_progress" else None

        shown = await eventually(moved, timeout=30, what="the change to show when read back")
        assert shown.changed_at >= before.changed_at and shown.changed_at.tzinfo is not None

    async def test_a_work_order_their_system_does_not_know_reads_none(self, department: DepartmentUnderTest) -> None:
        try:
            found = await department.connector.read_work_order(f"NOT-THERE-{uuid.uuid4().hex[:10]}")
        except CannotRead:
            pytest.skip(f"a {department.connector.kind} department's work orders cannot be read back")
        assert found is None, "a work order their system does not know reads None: lost, not unavailable"

    async def test_health_says_up_then_down_and_an_outage_is_unavailable_not_refused(
        self, department: DepartmentUnderTest
    ) -> None:
        assert (await department.connector.health()).up
        await department.stop_system()
        health = await department.connector.health()
        assert not health.up and health.detail
        if department.connector.kind in ("rest_webhook", "open311"):  # kinds that call out to open a work order
            with pytest.raises(DepartmentUnavailable):
                await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
