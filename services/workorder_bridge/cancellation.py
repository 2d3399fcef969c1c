"""Cancelling a case's earlier work orders when the case moves on, exactly once.

A case moves on when the router places it again (CaseRerouted: a department turned it down, a call-taker
recategorised it), sends it to triage (CaseNeedsTriage), or when it is closed as a duplicate of another
(CaseResolved with duplicate_of). Every work order of the case opened for an earlier routing decision and not
cancelled yet is then cancelled in its department's system, with the reason in words and the causing event's
id with the work order's as the idempotency key: a redelivery, or a crash between the department's answer and
our commit, sends the same key again and their system finds the same cancellation.

What happened is recorded as WorkOrderCancelled with a row of `cancelled_work_orders` (keyed by department and
work order: the row is what makes it once) in the transaction that marks the event processed. A system that
cannot cancel (CannotCancel), or refuses to (WorkOrderRefused: it will not change its mind), gets the
department told by its channel (TellDepartment) instead, recorded as how="told". A system that does not answer
parks the cancellation in `pending_cancellations`, retried with backoff like parked work orders (opener.py).
A work order that was never opened (still parked) needs no cancelling: the opener drops it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from uuid import UUID

import structlog
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.backoff import Backoff
from civicflow.consumer import describe_error
from civicflow.events import (
    CaseNeedsTriage,
    CaseRerouted,
    CaseResolved,
    CaseSubmitted,
    RecordedEvent,
    RoutingDecision,
    WorkOrderCancelled,
)
from civicflow.eventstore import EventStore, StreamAppend
from civicflow.unit_of_work import Decision, Reads, Statement, record
from services.workorder_bridge.connector import CannotCancel, WorkOrderRefused
from services.workorder_bridge.connectors import DepartmentLookup
from services.workorder_bridge.health import WORK_ORDERS_CANCELLED, HealthBook
from services.workorder_bridge.opener import PARKED_BACKOFF, SERVICE

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


class TellDepartment(Protocol):
    """Tells a department something by its own channel (its inbox): used when its system cannot cancel a work
    order. Raises when the message could not be sent (the cancellation is then parked and tried again)."""

    async def __call__(self, department_id: str, subject: str, body: str) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def reason_to_cancel(event: RecordedEvent) -> str | None:
    """Why the case's earlier work orders are no longer wanted, in words for the department; None when the
    event does not make them so."""
    data = event.data
    if isinstance(data, CaseRerouted):
        return f"the case was sent to {data.department_name}: {data.reason}"
    if isinstance(data, RoutingDecision):
        return f"the case was sent to {data.department_name}"
    if isinstance(data, CaseNeedsTriage):
        return f"the case was sent to the call centre's triage queue: {data.reason}"
    if isinstance(data, CaseResolved):
        if data.duplicate_of:
            return f"the case was closed as a duplicate of {data.duplicate_of}"
    return None


def idempotency_key(cause: UUID, external_id: str) -> str:
    """The key a cancellation is sent with: the same cause and work order, the same cancellation."""
    return f"{cause}:{external_id}"


# The case's work orders not cancelled or being cancelled: those recorded, and those a parked work order's retry
# had opened when the case changed under it (opener.py: recorded on its next pass, unless cancelled first).
_OPEN_WORK_ORDERS = text(
    "SELECT department_id, external_id, opened_by_event FROM ("
    "  SELECT w.department_id, w.external_id, w.opened_by_event, w.opened_at FROM workorder_bridge.work_orders w"
    "  WHERE w.case_id = :c"
    "  UNION ALL"
    "  SELECT p.department_id, p.opened_external_id, p.routed_event_id, p.first_failed_at"
    "  FROM workorder_bridge.pending_work_orders p WHERE p.case_id = :c AND p.opened_external_id IS NOT NULL"
    ") o WHERE NOT EXISTS (SELECT 1 FROM workorder_bridge.cancelled_work_orders k"
    "   WHERE k.department_id = o.department_id AND k.external_id = o.external_id)"
    " AND NOT EXISTS (SELECT 1 FROM workorder_bridge.pending_cancellations p"
    "   WHERE p.department_id = o.department_id AND p.external_id = o.external_id)"
    " ORDER BY opened_at"
)
_PARKED_OPENING = text("SELECT 1 FROM workorder_bridge.pending_work_orders WHERE case_id = :c")
_WAIT_FOR_PARKED_OPENING = text("SELECT 1 FROM workorder_bridge.pending_work_orders WHERE case_id = :c FOR UPDATE")
_MARK_CANCELLED = text(
    "INSERT INTO workorder_bridge.cancelled_work_orders (department_id, external_id, case_id, cancelled_by_event, how)"
    " VALUES (:d, :x, :c, :e, :how) ON CONFLICT DO NOTHING"
)
_FORGET_PENDING_CANCELLATION = text(
    "DELETE FROM workorder_bridge.pending_cancellations WHERE department_id = :d AND external_id = :x"
)
_PARK_CANCELLATION = text(
    "INSERT INTO workorder_bridge.pending_cancellations (department_id, external_id, case_id, caused_by_event,"
    " reason, attempts, first_failed_at, next_attempt_at, last_error)"
    " VALUES (:d, :x, :c, :e, :reason, 1, :now, :next, :error) ON CONFLICT DO NOTHING"
)
_FORGET_PENDING_WORK_ORDER = text("DELETE FROM workorder_bridge.pending_work_orders WHERE case_id = :c")


@dataclass(frozen=True)
class Waits:
    """A cancellation that could not be made now, and why (by kind, never personal data)."""

    error: str


class WorkOrderCanceller:
    """The policy for CaseRerouted, CaseNeedsTriage and CaseResolved: cancel the case's earlier work orders."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        departments: DepartmentLookup,
        tell: TellDepartment,
        backoff: Backoff = PARKED_BACKOFF,
        clock: Clock = utc_now,
        health: HealthBook | None = None,
    ) -> None:
        self._engine = engine
        self._store = store
        self._departments = departments
        self._tell = tell
        self._backoff = backoff
        self._clock = clock
        self._health = health or HealthBook(clock)
        # work orders a batch parked: its later events must not try them again (the batch's writes come last)
        self._parked_in_batch: weakref.WeakKeyDictionary[Reads, set[tuple[str, str]]] = weakref.WeakKeyDictionary()

    async def __call__(self, event: RecordedEvent, reads: Reads) -> Decision:
        reason = reason_to_cancel(event)
        if reason is None:
            return Decision()
        stream = await reads.stream(event.case_id)
        await self._wait_for_a_parked_opening(reads.tx, event.case_id)
        rows = (await reads.tx.execute(_OPEN_WORK_ORDERS, {"c": event.case_id})).all()
        parked_here = self._parked_in_batch.setdefault(reads, set())
        decision = Decision()
        for row in superseded(stream, event, rows):
            if (row.department_id, row.external_id) in parked_here:
                continue
            with structlog.contextvars.bound_contextvars(case_id=str(event.case_id)):
                one = await self._cancel(event, stream, row.department_id, row.external_id, reason)
            if isinstance(one, Waits):
                parked_here.add((row.department_id, row.external_id))
                decision.writes.append(self._park(event, row.department_id, row.external_id, reason, one.error))
            else:
                decision.add(one)
        if isinstance(event.data, CaseResolved):
            # closed as a duplicate: a work order still waiting to be opened is not wanted any more either
            decision.writes.append(Statement(_FORGET_PENDING_WORK_ORDER, {"c": event.case_id}))
        return decision

    async def _wait_for_a_parked_opening(self, tx: AsyncConnection, case_id: UUID) -> None:
        """A parked work order of the case being opened right now by the retry task (it holds the row) may
        become a work order this event makes redundant: wait until it is recorded or dropped, so it is
        either seen below or never opened. Waited on another connection: the batch holds no lock meanwhile."""
        if (await tx.execute(_PARKED_OPENING, {"c": case_id})).first() is None:
            return
        async with self._engine.begin() as other:
            await other.execute(_WAIT_FOR_PARKED_OPENING, {"c": case_id})

    async def _cancel(
        self, cause: RecordedEvent, stream: Sequence[RecordedEvent], department_id: str, external_id: str, reason: str
    ) -> Decision | Waits:
        """Cancel one work order (or tell its department): what to record, or why it must wait."""
        connector = self._departments.for_department(department_id)
        key = idempotency_key(cause.event_id, external_id)
        how: Literal["cancelled", "told"]
        try:
            await connector.cancel_work_order(external_id, reason, key)
            how = "cancelled"
        except (CannotCancel, WorkOrderRefused) as cannot:
            self._health.success(connector)  # it answered
            log.info(
                "department's system cannot cancel the work order; telling the department",
                department_id=department_id,
                external_id=external_id,
                why=type(cannot).__name__,
            )
            subject, body = message_to_department(stream, external_id, reason, key)
            try:
                await self._tell(department_id, subject, body)
            except Exception as exc:  # the channel is down, not their system: tried again later
                error = f"telling the department failed ({describe_error(exc)})"
                log.warning("the cancellation waits", department_id=department_id, error=error)
                return Waits(error[:500])
            how = "told"
        except Exception as exc:  # DepartmentUnavailable, or the connector broke: wait and try again, never drop it
            error = describe_error(exc)
            self._health.failure(connector, error)
            log.warning(
                "department's system did not cancel the work order; the cancellation waits",
                department_id=department_id,
                external_id=external_id,
                error=error,
            )
            return Waits(error)
        else:
            self._health.success(connector)
        log.info("earlier work order cancelled", department_id=department_id, external_id=external_id, how=how)
        WORK_ORDERS_CANCELLED.labels(department_id, how).inc()
        cancelled = WorkOrderCancelled(department_id=department_id, external_id=external_id, reason=reason, how=how)
        mark = {"d": department_id, "x": external_id, "c": cause.case_id, "e": cause.event_id, "how": how}
        return Decision(
            appends=[StreamAppend(cause.case_id, None, [cancelled], cause.caused(SERVICE))],
            writes=[
                Statement(_MARK_CANCELLED, mark),
                Statement(_FORGET_PENDING_CANCELLATION, {"d": department_id, "x": external_id}),
            ],
        )

    def _park(self, cause: RecordedEvent, department_id: str, external_id: str, reason: str, error: str) -> Statement:
        now = self._clock()
        return park_cancellation(cause, department_id, external_id, reason, now, error, now + self._backoff.after(1))

    async def retry_due(self, now: datetime) -> int:
        """Try every parked cancellation whose time has come, one transaction each; how many were recorded.
        As the opener's retry: FOR UPDATE SKIP LOCKED, a department found down waits for the next pass, and
        whatever goes wrong with one row postpones that row alone."""
        done = 0
        down: set[str] = set()
        tried: set[tuple[str, str]] = set()
        while True:
            async with self._engine.begin() as tx:
                row = (
                    await tx.execute(
                        text(
                            "SELECT department_id, external_id, case_id, caused_by_event, reason, attempts, last_error"
                            " FROM workorder_bridge.pending_cancellations WHERE next_attempt_at <= :now"
                            " ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED"
                        ),
                        {"now": now},
                    )
                ).first()
                if row is None or (row.department_id, row.external_id) in tried:
                    return done
                tried.add((row.department_id, row.external_id))
                with structlog.contextvars.bound_contextvars(case_id=str(row.case_id)):
                    if row.department_id in down:
                        await self._postpone(tx, row, row.last_error)
                        continue
                    try:
                        async with tx.begin_nested():
                            outcome = await self._retry(tx, row)
                    except Exception as exc:
                        log.error("parked cancellation failed for another reason", error=describe_error(exc))
                        await self._postpone(tx, row, describe_error(exc))
                        continue
                    if isinstance(outcome, Waits):
                        down.add(row.department_id)
                        await self._postpone(tx, row, outcome.error)
                    else:
                        done += outcome

    async def _retry(self, tx: AsyncConnection, row: Row[Any]) -> int | Waits:
        """One parked cancellation: recorded (1), already done another way (0), or still waiting."""
        already = await tx.execute(
            text("SELECT 1 FROM workorder_bridge.cancelled_work_orders WHERE department_id = :d AND external_id = :x"),
            {"d": row.department_id, "x": row.external_id},
        )
        if already.first() is not None:
            await tx.execute(_FORGET_PENDING_CANCELLATION, {"d": row.department_id, "x": row.external_id})
            return 0
        stream = await self._store.read_stream(tx, row.case_id)
        cause = next((e for e in stream if e.event_id == row.caused_by_event), None)
        if cause is None:
            raise LookupError(f"the event {row.caused_by_event} that caused the cancellation is not in the case")
        decision = await self._cancel(cause, stream, row.department_id, row.external_id, row.reason)
        if isinstance(decision, Waits):
            return decision
        await record(tx, self._store, decision)
        return 1

    async def _postpone(self, tx: AsyncConnection, row: Row[Any], error: str) -> None:
        attempts = row.attempts + 1
        await tx.execute(
            text(
                "UPDATE workorder_bridge.pending_cancellations"
                " SET attempts = :a, next_attempt_at = :next, last_error = :error"
                " WHERE department_id = :d AND external_id = :x"
            ),
            {
                "a": attempts,
                "next": self._clock() + self._backoff.after(attempts),
                "error": error,
                "d": row.department_id,
                "x": row.external_id,
            },
        )


def park_cancellation(
    cause: RecordedEvent,
    department_id: str,
    external_id: str,
    reason: str,
    now: datetime,
    error: str,
    due: datetime | None = None,
) -> Statement:
    """A cancellation that waits in pending_cancellations, tried again from `due` (default: at once)."""
    row = {
        "d": department_id,
        "x": external_id,
        "c": cause.case_id,
        "e": cause.event_id,
        "reason": reason,
        "now": now,
        "next": due or now,
        "error": error,
    }
    return Statement(_PARK_CANCELLATION, row)


def superseded(stream: Sequence[RecordedEvent], cause: RecordedEvent, rows: Sequence[Row[Any]]) -> list[Row[Any]]:
    """The work orders `cause` makes redundant: those opened for a routing decision before it, not cancelled
    in the stream yet (this batch's cancellations are in it, not yet in the table). A case closed as a
    duplicate by a department's own report keeps that department's work order: its system said so itself."""
    version_of = {e.event_id: e.version for e in stream}
    done = {(e.data.department_id, e.data.external_id) for e in stream if isinstance(e.data, WorkOrderCancelled)}
    reporter = None
    if isinstance(cause.data, CaseResolved) and cause.metadata.actor.startswith("department:"):
        reporter = cause.metadata.actor.removeprefix("department:")
    found = []
    for row in rows:
        opened_for = version_of.get(row.opened_by_event)
        if opened_for is None or opened_for >= cause.version:
            continue  # opened for this decision or a later one: it stands
        if (row.department_id, row.external_id) in done or row.department_id == reporter:
            continue
        found.append(row)
    return found


def message_to_department(stream: Sequence[RecordedEvent], external_id: str, reason: str, key: str) -> tuple[str, str]:
    """What a department whose system cannot cancel is told: the work order, the case, why, and a reference
    that tells a repeat of the same message (after a crash) from a new one. No resident's details."""
    tracking = next((e.data.tracking_number for e in stream if isinstance(e.data, CaseSubmitted)), None)
    case = f" (311 case {tracking})" if tracking else ""
    subject = f"Work order {external_id} is no longer needed{case}"
    body = (
        f"Please close work order {external_id}{case} in your system: {reason}.\n"
        "civicflow cannot cancel it there itself.\n\n"
        f"Reference: {key}\n"
    )
    return subject, body
