"""Opening work orders for routing decisions, and waiting out a department whose system is down.

A department's system that does not answer must not hold up anyone else's work orders: the consumer
reads every case in partition order, so waiting in the handler would stall a quarter of the city's
cases behind one department's outage. Instead the decision is parked in
`workorder_bridge.pending_work_orders` (the kernel writes it in the transaction that marks the event
processed) and the policy moves on; `retry_due` tries parked ones again with backoff until the system answers.

A system that answers but refuses the work order (4xx) will not change its mind: the bridge records
WorkOrderRejected, and the router places the case again (or sends it to triage), as it does when a
department turns a case down through its webhook.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.backoff import Backoff
from civicflow.consumer import describe_error
from civicflow.events import (
    CaseNeedsTriage,
    RecordedEvent,
    RoutingDecision,
    WorkOrderOpened,
    WorkOrderRejected,
    WorkOrderSyncFailed,
    current_service_code,
    imported_from,
)
from civicflow.eventstore import ConcurrencyConflict, EventStore, StreamAppend
from civicflow.unit_of_work import Decision, Reads, Statement, record
from services.workorder_bridge.connector import (
    Connector,
    DepartmentUnavailable,
    FindsByKey,
    OpenedWorkOrder,
    WorkOrderRefused,
)
from services.workorder_bridge.connectors import DepartmentLookup
from services.workorder_bridge.domain import submission_of, work_order_request
from services.workorder_bridge.health import WORK_ORDERS_OPENED, HealthBook

log = structlog.get_logger(__name__)

SERVICE = "workorder_bridge"

Clock = Callable[[], datetime]
PARKED_BACKOFF = Backoff(first_seconds=5.0, max_seconds=300.0)  # what BridgeSettings defaults to as well


def utc_now() -> datetime:
    return datetime.now(UTC)


def standing_decision(stream: Sequence[RecordedEvent], routed_event_id: UUID) -> RecordedEvent | None:
    """The parked routing decision, or None when a later one (a reroute, triage) has replaced it."""
    parked = next((e for e in stream if e.event_id == routed_event_id), None)
    if parked is None:
        raise LookupError(f"routing event {routed_event_id} is not in the case's stream")
    later = (e for e in stream if e.version > parked.version)
    if any(isinstance(e.data, RoutingDecision | CaseNeedsTriage) for e in later):
        return None
    return parked


_FORGET_PENDING = text("DELETE FROM workorder_bridge.pending_work_orders WHERE case_id = :c")
_FORGET_PENDING_DECISION = text(
    "DELETE FROM workorder_bridge.pending_work_orders WHERE case_id = :c AND routed_event_id = :e"
)
_RECORD_WORK_ORDER = text(
    "INSERT INTO workorder_bridge.work_orders"
    " (department_id, external_id, case_id, system, opened_by_event, correlation_id)"
    " VALUES (:d, :x, :c, :s, :e, :r)"
)
_REMEMBER_OPENED = text(
    "UPDATE workorder_bridge.pending_work_orders SET opened_external_id = :x"
    " WHERE case_id = :c AND routed_event_id = :e"
)
# A work order the bridge knows for a routing decision: recorded, or remembered on its parked row.
_KNOWN_FOR_DECISION = text(
    "SELECT 1 FROM workorder_bridge.work_orders WHERE opened_by_event = :e"
    " UNION ALL SELECT 1 FROM workorder_bridge.pending_work_orders"
    " WHERE routed_event_id = :e AND opened_external_id IS NOT NULL"
)
_PARK = text(
    "INSERT INTO workorder_bridge.pending_work_orders"
    " (case_id, routed_event_id, department_id, attempts, first_failed_at, next_attempt_at, last_error)"
    " VALUES (:c, :e, :d, 1, :now, :next, :error)"
    " ON CONFLICT (case_id) DO UPDATE SET routed_event_id = :e, department_id = :d, attempts = 1,"
    " first_failed_at = :now, next_attempt_at = :next, last_error = :error, opened_external_id = NULL"
)


class WorkOrderOpener:
    """Opens the work order in the routed department's own system (its connector, by the city file), and
    decides the work order row and WorkOrderOpened (system = the connector's kind) for the kernel to record
    with the inbox mark.

    The routing event's id is the Idempotency-Key, so a redelivery, a retry of a parked decision, a
    batch handled again one event at a time, or a crash between the HTTP call and the commit finds the
    same work order again instead of opening a second one."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        departments: DepartmentLookup,
        callback_url: str,
        backoff: Backoff = PARKED_BACKOFF,
        clock: Clock = utc_now,
        health: HealthBook | None = None,
    ) -> None:
        self._engine = engine
        self._store = store
        self._departments = departments
        self._health = health or HealthBook(clock)
        self._callback_url = callback_url
        self._backoff = backoff
        self._clock = clock

    async def __call__(self, event: RecordedEvent, reads: Reads) -> Decision:
        """The policy for CaseRouted and CaseRerouted: a new work order either way."""
        assert isinstance(event.data, RoutingDecision)
        stream = await reads.stream(event.case_id)
        if imported_from(e.data for e in stream) is not None:
            log.info("no work order for an imported past request", department_id=event.data.department_id)
            return Decision()
        if standing_decision(stream, event.event_id) is None:  # we are behind: a later decision is coming
            self._replaced(event)
            try:
                return await self._cancel_what_it_opened(reads.tx, event, stream)
            except Exception as exc:  # their system down for the look-up: a known gap (docs/DESIGN.md)
                log.warning(
                    "could not look up a work order the replaced decision may have opened; not cancelled",
                    department_id=event.data.department_id,
                    error=describe_error(exc),
                )
                return Decision()
        try:
            opened = await self._open(event, stream)
        except DepartmentUnavailable as exc:
            error = describe_error(exc)
            log.warning(
                "department system unavailable; the work order waits",
                department_id=event.data.department_id,
                error=error,
                retry_in_seconds=self._backoff.first_seconds,
            )
            return self._park(event, error)
        except WorkOrderRefused as exc:
            # read again: the case may have been placed elsewhere while the department answered
            now = await self._store.read_stream(reads.tx, event.case_id) + reads.pending(event.case_id)
            return self._turned_down(event, exc, now)
        log.info("work order opened", department_id=event.data.department_id, external_id=opened.external_id)
        return self._record(event, opened)

    async def retry_due(self, now: datetime) -> int:
        """Try every parked work order whose time has come, one transaction each; how many were opened.

        Rows are taken with FOR UPDATE SKIP LOCKED, so several bridge replicas share the work. Once a
        department fails in this pass, its other parked work orders wait for the next one untried. Whatever
        goes wrong with one row postpones that row alone."""
        opened = 0
        down: dict[str, str] = {}
        tried: set[UUID] = set()
        while True:
            async with self._engine.begin() as tx:
                row = (
                    await tx.execute(
                        text(
                            "SELECT case_id, routed_event_id, department_id, attempts, opened_external_id"
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
                        await self._postpone(tx, row, down[row.department_id])
                        continue
                    try:
                        async with tx.begin_nested():  # a failure rolls back to here, not the postponement
                            opened += await self._retry(tx, row)
                    except Exception as exc:  # whatever failed, the row stays parked, with why
                        error = describe_error(exc)
                        if isinstance(exc, DepartmentUnavailable):
                            down[row.department_id] = error
                        else:
                            log.error("parked work order failed for another reason", error=error)
                        await self._postpone(tx, row, error)

    async def _retry(self, tx: AsyncConnection, row: Row[Any]) -> int:
        """One parked work order: opened (1), or dropped, turned down or postponed (0)."""
        stream = await self._store.read_stream(tx, row.case_id)
        event = standing_decision(stream, row.routed_event_id)
        if event is None:
            if row.opened_external_id is not None:
                await self._opened_too_late(tx, row, stream)
                return 0
            # an earlier try may have opened it before a crash: looked up (a failure postpones the row), cancelled
            decided = next(e for e in stream if e.event_id == row.routed_event_id)
            await record(tx, self._store, await self._cancel_what_it_opened(tx, decided, stream))
            await tx.execute(_FORGET_PENDING, {"c": row.case_id})
            log.info("parked work order dropped: a later routing decision replaced it", department_id=row.department_id)
            return 0
        try:
            work_order = await self._open(event, stream)
        except WorkOrderRefused as refused:
            now = await self._store.read_stream(tx, row.case_id)  # as the department's answer finds it
            await record(tx, self._store, self._turned_down(event, refused, now))
            return 0
        try:
            async with tx.begin_nested():
                await record(tx, self._store, self._record(event, work_order))
        except ConcurrencyConflict:
            # The case changed while its department was asked (this transaction is older than the change, so
            # it may not append after it): their system has the work order now, so remember its id. The next
            # pass records it if the decision still stands, or has it cancelled if the change replaced it;
            # the canceller finds it here too if it gets to the change first.
            await tx.execute(
                _REMEMBER_OPENED, {"c": row.case_id, "e": row.routed_event_id, "x": work_order.external_id}
            )
            await self._postpone(tx, row, "the case changed while its department was asked; recorded next time")
            return 0
        log.info(
            "parked work order opened",
            department_id=row.department_id,
            external_id=work_order.external_id,
            attempts=row.attempts + 1,
        )
        return 1

    async def _cancel_what_it_opened(
        self, tx: AsyncConnection, event: RecordedEvent, stream: Sequence[RecordedEvent]
    ) -> Decision:
        """A decision found replaced (a replay, a parked retry) may have had its work order opened in the
        department's system before a crash kept us from recording it. Where the kind can look our key up cheaply
        (connector.FindsByKey), a work order found is parked for cancellation (due now) with the replacing event
        as the cause; recorded ones are the canceller's already. rest_webhook and email cannot look up: a known
        gap (docs/DESIGN.md)."""
        from services.workorder_bridge.cancellation import park_cancellation, reason_to_cancel

        routed = event.data
        assert isinstance(routed, RoutingDecision)
        connector = self._departments.for_department(routed.department_id)
        if not isinstance(connector, FindsByKey):
            return Decision()
        known = await tx.execute(_KNOWN_FOR_DECISION, {"e": event.event_id})
        if known.first() is not None:
            return Decision()  # recorded (or remembered on a parked row): the canceller sees it
        found = await connector.find_by_key(str(event.event_id))
        if found is None:
            return Decision()
        cause = next(e for e in stream if e.version > event.version and reason_to_cancel(e) is not None)
        log.warning(
            "a replaced decision's work order was opened before it could be recorded; its cancellation follows",
            department_id=routed.department_id,
            external_id=found.external_id,
        )
        reason = reason_to_cancel(cause) or ""
        why = "opened under a routing decision replaced before it was recorded"
        return Decision(
            writes=[park_cancellation(cause, routed.department_id, found.external_id, reason, self._clock(), why)]
        )

    async def _opened_too_late(self, tx: AsyncConnection, row: Row[Any], stream: Sequence[RecordedEvent]) -> None:
        """A parked work order their system opened just as a later decision replaced it: record it, and park its
        cancellation (due now) with the replacing event as the cause, for the canceller's retry to make; unless
        the canceller has cancelled it already."""
        from services.workorder_bridge.cancellation import park_cancellation, reason_to_cancel

        external_id = row.opened_external_id
        await tx.execute(_FORGET_PENDING, {"c": row.case_id})
        done = await tx.execute(
            text("SELECT 1 FROM workorder_bridge.cancelled_work_orders WHERE department_id = :d AND external_id = :x"),
            {"d": row.department_id, "x": external_id},
        )
        if done.first() is not None:
            return
        decided = next(e for e in stream if e.event_id == row.routed_event_id)
        cause = next(e for e in stream if e.version > decided.version and reason_to_cancel(e) is not None)
        opened = self._record(decided, OpenedWorkOrder(external_id=external_id, status="open"))
        opened.writes.append(
            park_cancellation(
                cause,
                row.department_id,
                external_id,
                reason_to_cancel(cause) or "",
                self._clock(),
                "opened as the case moved on",
            )
        )
        await record(tx, self._store, opened)
        log.info("work order opened as the case moved on; its cancellation follows", department_id=row.department_id)

    async def open_for(self, event: RecordedEvent, stream: Sequence[RecordedEvent]) -> OpenedWorkOrder:
        """Open the routing decision's work order in its department's system under the decision's key, as the
        policy does: for reconciliation (reconcile.py) opening again a work order their system lost."""
        return await self._open(event, stream)

    async def _open(self, event: RecordedEvent, stream: Sequence[RecordedEvent]) -> OpenedWorkOrder:
        routed = event.data
        assert isinstance(routed, RoutingDecision)
        # The case as it stood when it was routed: a retry after a later recategorisation sends the same
        # request under the same Idempotency-Key, and so finds the work order a lost answer had opened.
        history = [e for e in stream if e.version <= event.version]
        submitted = submission_of(history)
        request = work_order_request(
            event.case_id,
            submitted,
            routed,
            self._callback_url,
            current_service_code(e.data for e in history),
            submitted.attributes,  # each connector sends only those its department maps
        )
        connector = self._departments.for_department(routed.department_id)
        try:
            opened = await connector.open_work_order(request, str(event.event_id))
        except WorkOrderRefused:
            self._health.success(connector)  # it answered: refusing is not being down
            raise
        except Exception as exc:
            self._health.failure(connector, describe_error(exc))
            raise
        self._health.success(connector)
        return opened

    def _record(self, event: RecordedEvent, opened: OpenedWorkOrder) -> Decision:
        """The work order row, WorkOrderOpened, and nothing left parked for the case."""
        routed = event.data
        assert isinstance(routed, RoutingDecision)
        connector: Connector = self._departments.for_department(routed.department_id)
        row = {
            "d": routed.department_id,
            "x": opened.external_id,
            "c": event.case_id,
            "s": connector.kind,
            "e": event.event_id,
            "r": event.metadata.correlation_id,
        }
        opened_event = WorkOrderOpened(
            department_id=routed.department_id, system=connector.kind, external_id=opened.external_id
        )
        WORK_ORDERS_OPENED.labels(routed.department_id, connector.kind).inc()
        return Decision(
            appends=[StreamAppend(event.case_id, None, [opened_event], event.caused(SERVICE))],
            writes=[Statement(_RECORD_WORK_ORDER, row), Statement(_FORGET_PENDING, {"c": event.case_id})],
        )

    def _turned_down(
        self, event: RecordedEvent, refused: WorkOrderRefused, stream: Sequence[RecordedEvent]
    ) -> Decision:
        """The department's system will not take it: WorkOrderRejected, and the router places the case again
        (unless it already has, while the department was being asked: `stream` is the case read after
        the answer)."""
        routed = event.data
        assert isinstance(routed, RoutingDecision)
        forget = Statement(_FORGET_PENDING_DECISION, {"c": event.case_id, "e": event.event_id})
        # Replaced meanwhile: nothing to cancel, since a system that refuses holds no work order under our key (an
        # idempotent one answers a key it knows with its work order; open311 looks the key up before posting).
        if standing_decision(stream, event.event_id) is None:
            self._replaced(event)
            return Decision(writes=[forget])
        reason = f"its work-order system refused the work order (HTTP {refused.status_code})"
        rejected = WorkOrderRejected(department_id=routed.department_id, reason=reason)
        log.warning(
            "department system refused the work order; the router places the case again",
            department_id=routed.department_id,
            status_code=refused.status_code,
        )
        return Decision(appends=[StreamAppend(event.case_id, None, [rejected], event.caused(SERVICE))], writes=[forget])

    def _replaced(self, event: RecordedEvent) -> None:
        """A later routing decision replaced this one: no work order and no rejection (the later one gets
        its own)."""
        assert isinstance(event.data, RoutingDecision)
        log.info("routing decision replaced by a later one; no work order", department_id=event.data.department_id)

    def _park(self, event: RecordedEvent, error: str) -> Decision:
        """Wait for the department, and say so in the case's history (WorkOrderSyncFailed, once per
        decision); a later routing decision for the case replaces an earlier one waiting."""
        routed = event.data
        assert isinstance(routed, RoutingDecision)
        now = self._clock()
        row = {
            "c": event.case_id,
            "e": event.event_id,
            "d": routed.department_id,
            "now": now,
            "next": now + self._backoff.after(1),
            "error": error,
        }
        waiting = WorkOrderSyncFailed(department_id=routed.department_id, reason=error)
        return Decision(
            appends=[StreamAppend(event.case_id, None, [waiting], event.caused(SERVICE))],
            writes=[Statement(_PARK, row)],
        )

    async def _postpone(self, tx: AsyncConnection, row: Row[Any], error: str) -> None:
        attempts = row.attempts + 1
        next_attempt = self._clock() + self._backoff.after(attempts)
        await tx.execute(
            text(
                "UPDATE workorder_bridge.pending_work_orders"
                " SET attempts = :a, next_attempt_at = :next, last_error = :error WHERE case_id = :c"
            ),
            {"a": attempts, "next": next_attempt, "error": error, "c": row.case_id},
        )
