"""Opening work orders for routing decisions, and waiting out a department whose system is down.

A department's system that does not answer must not hold up anyone else's work orders: the consumer
reads every case in partition order, so waiting in the handler would stall a quarter of the city's
cases behind one department's outage. Instead the decision is parked in
`workorder_bridge.pending_work_orders` (in the same transaction that marks the event processed) and
the handler moves on; `retry_due` tries parked ones again with backoff until the system answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.consumer import Inbox, describe_error
from civicflow.events import (
    RecordedEvent,
    RoutingDecision,
    WorkOrderOpened,
    WorkOrderSyncFailed,
    current_service_code,
)
from civicflow.eventstore import EventStore
from services.workorder_bridge.connector import DepartmentConnector, DepartmentUnavailable, OpenedWorkOrder
from services.workorder_bridge.domain import submission_of, work_order_request

log = structlog.get_logger(__name__)

SERVICE = "workorder_bridge"


@dataclass(frozen=True)
class Backoff:
    """When to try a parked work order again: first after `first_seconds`, doubling, at most `max_seconds`."""

    first_seconds: float = 5.0
    max_seconds: float = 300.0

    def after(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.first_seconds * 2 ** max(attempts - 1, 0), self.max_seconds))


class WorkOrderOpener:
    """Opens the work order in the department's system, then records it and WorkOrderOpened at once.

    The routing event's id is the Idempotency-Key, so a redelivery, a retry of a parked decision, or a
    crash between the HTTP call and the commit finds the same work order again instead of opening a
    second one."""

    def __init__(
        self,
        engine: AsyncEngine,
        inbox: Inbox,
        store: EventStore,
        connector: DepartmentConnector,
        callback_url: str,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._engine = engine
        self._inbox = inbox
        self._store = store
        self._connector = connector
        self._callback_url = callback_url
        self._backoff = backoff

    async def __call__(self, event: RecordedEvent) -> None:
        """The consumer's handler for CaseRouted and CaseRerouted: a new work order either way."""
        assert isinstance(event.data, RoutingDecision)
        async with self._engine.connect() as conn:
            processed = await conn.scalar(
                text("SELECT 1 FROM workorder_bridge.inbox WHERE event_id = :e"), {"e": event.event_id}
            )
            if processed:
                return  # a redelivery: spare the department a call
            stream = await self._store.read_stream(conn, event.case_id)
        try:
            opened = await self._open(event, stream)
        except DepartmentUnavailable as exc:
            error = describe_error(exc)

            async def park(tx: AsyncConnection) -> None:
                await self._park(tx, event, error, datetime.now(UTC))

            if await self._inbox.process_once(event, park):
                log.warning(
                    "department system unavailable; the work order waits",
                    department_id=event.data.department_id,
                    error=error,
                    retry_in_seconds=self._backoff.first_seconds,
                )
            return

        async def record(tx: AsyncConnection) -> None:
            await self._record(tx, event, opened)

        if await self._inbox.process_once(event, record):
            log.info("work order opened", department_id=event.data.department_id, external_id=opened.external_id)

    async def retry_due(self, now: datetime) -> int:
        """Try every parked work order whose time has come, one transaction each; how many were opened.

        Rows are taken with FOR UPDATE SKIP LOCKED, so several bridge replicas share the work. Once a
        department fails in this pass, its other parked work orders wait for the next one untried."""
        opened = 0
        down: dict[str, str] = {}
        tried: set[UUID] = set()
        while True:
            async with self._engine.begin() as tx:
                row = (
                    await tx.execute(
                        text(
                            "SELECT case_id, routed_event_id, department_id, attempts"
                            " FROM workorder_bridge.pending_work_orders WHERE next_attempt_at <= :now"
                            " ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED"
                        ),
                        {"now": now},
                    )
                ).first()
                if row is None or row.case_id in tried:
                    return opened
                tried.add(row.case_id)
                with structlog.contextvars.bound_contextvars(case_id=str(row.case_id)):
                    if row.department_id in down:
                        await self._postpone(tx, row.case_id, row.attempts, down[row.department_id], now)
                        continue
                    stream = await self._store.read_stream(tx, row.case_id)
                    event = next(e for e in stream if e.event_id == row.routed_event_id)
                    try:
                        work_order = await self._open(event, stream)
                        async with tx.begin_nested():  # a failed record rolls back to here, not the postponement
                            await self._record(tx, event, work_order)
                    except Exception as exc:  # whatever failed, the row stays parked, with why
                        error = describe_error(exc)
                        if isinstance(exc, DepartmentUnavailable):
                            down[row.department_id] = error
                        else:
                            log.error("parked work order failed for another reason", error=error)
                        await self._postpone(tx, row.case_id, row.attempts, error, now)
                        continue
                    opened += 1
                    log.info(
                        "parked work order opened",
                        department_id=row.department_id,
                        external_id=work_order.external_id,
                        attempts=row.attempts + 1,
                    )

    async def _open(self, event: RecordedEvent, stream: Sequence[RecordedEvent]) -> OpenedWorkOrder:
        routed = event.data
        assert isinstance(routed, RoutingDecision)
        request = work_order_request(
            event.case_id,
            submission_of(stream),
            routed,
            self._callback_url,
            current_service_code(e.data for e in stream),
        )
        return await self._connector.open_work_order(routed.department_id, request, str(event.event_id))

    async def _record(self, tx: AsyncConnection, event: RecordedEvent, opened: OpenedWorkOrder) -> None:
        """The work order row, WorkOrderOpened, and nothing left parked for the case."""
        routed = event.data
        assert isinstance(routed, RoutingDecision)
        await tx.execute(
            text(
                "INSERT INTO workorder_bridge.work_orders"
                " (department_id, external_id, case_id, system, opened_by_event, correlation_id)"
                " VALUES (:d, :x, :c, :s, :e, :r)"
            ),
            {
                "d": routed.department_id,
                "x": opened.external_id,
                "c": event.case_id,
                "s": self._connector.system,
                "e": event.event_id,
                "r": event.metadata.correlation_id,
            },
        )
        await tx.execute(
            text("DELETE FROM workorder_bridge.pending_work_orders WHERE case_id = :c"), {"c": event.case_id}
        )
        opened_event = WorkOrderOpened(
            department_id=routed.department_id, system=self._connector.system, external_id=opened.external_id
        )
        await self._store.append(tx, event.case_id, None, [opened_event], event.caused(SERVICE))

    async def _park(self, tx: AsyncConnection, event: RecordedEvent, error: str, now: datetime) -> None:
        """Wait for the department, and say so in the case's history (WorkOrderSyncFailed, once per
        decision); a later routing decision for the case replaces an earlier one waiting."""
        routed = event.data
        assert isinstance(routed, RoutingDecision)
        await tx.execute(
            text(
                "INSERT INTO workorder_bridge.pending_work_orders"
                " (case_id, routed_event_id, department_id, attempts, first_failed_at, next_attempt_at, last_error)"
                " VALUES (:c, :e, :d, 1, :now, :next, :error)"
                " ON CONFLICT (case_id) DO UPDATE SET routed_event_id = :e, department_id = :d, attempts = 1,"
                " first_failed_at = :now, next_attempt_at = :next, last_error = :error"
            ),
            {
                "c": event.case_id,
                "e": event.event_id,
                "d": routed.department_id,
                "now": now,
                "next": now + self._backoff.after(1),
                "error": error,
            },
        )
        waiting = WorkOrderSyncFailed(department_id=routed.department_id, reason=error)
        await self._store.append(tx, event.case_id, None, [waiting], event.caused(SERVICE))

    async def _postpone(self, tx: AsyncConnection, case_id: UUID, attempts: int, error: str, now: datetime) -> None:
        await tx.execute(
            text(
                "UPDATE workorder_bridge.pending_work_orders"
                " SET attempts = :a, next_attempt_at = :next, last_error = :error WHERE case_id = :c"
            ),
            {"a": attempts + 1, "next": now + self._backoff.after(attempts + 1), "error": error, "c": case_id},
        )
