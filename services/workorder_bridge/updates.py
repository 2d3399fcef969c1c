"""Recording a department's status updates in our vocabulary: the `RecordUpdate` every push endpoint and poller
hands what it received to (services/workorder_bridge/connector.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import structlog
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.department_systems import DEFAULT_CONNECTOR, ConnectorSpec
from civicflow.events import EventMetadata
from civicflow.eventstore import ConcurrencyConflict, EventStore
from civicflow.notes import resident_text
from services.workorder_bridge.connector import ExternalUpdate, Outcome
from services.workorder_bridge.domain import StatusChange, events_for_status, update_may_act

log = structlog.get_logger(__name__)

RECORD_ATTEMPTS = 5
THEIR_STATUS_CHARACTERS = 64
UNMAPPED_STATUSES = Counter(
    "civicflow_workorder_unmapped_status",
    "Status updates whose status the department's mapping does not know (recorded as a note with their code),"
    " by department and connector kind: add the status to the city file's statuses.reverse.",
    ["department", "kind"],
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def their_words(status: str) -> str:
    """Their status as it is stored and shown: without control characters, at most 64 characters (every kind
    validates what it receives; this is the recorder's own guard for the columns and the view)."""
    cleaned = _CONTROL.sub("", status).strip()[:THEIR_STATUS_CHARACTERS]
    return cleaned or "(no status)"


class UpdateRecorder:
    """Records a department's status update once: the status_updates row and the events in one transaction.

    Their status is made ours by the department's connector (`ConnectorSpec.ours`: its reverse mapping over the
    kind's defaults); what ours means for the case is domain.events_for_status. An update is a duplicate when
    it was recorded before (its update_id, where their system numbers updates; else the same status and
    changed_at: a redelivery) or when it says nothing new (the latest update's status and note again: a
    system that stamps a fresh time on every resend would otherwise resolve the case twice). An update older
    than the latest one recorded is outdated: it arrived late and would turn a finished job back. A job the
    department reopens (resolved, in progress, resolved) is three changes; a new note on the same status is a
    change. Only the work order of the standing routing decision acts on the case (domain.update_may_act):
    updates on replaced work orders, and on a case already resolved, are the work order's changes."""

    def __init__(
        self, engine: AsyncEngine, store: EventStore, connectors: Mapping[str, ConnectorSpec] | None = None
    ) -> None:
        self._engine = engine
        self._store = store
        self._connectors = dict(connectors or {})

    def spec(self, department_id: str) -> ConnectorSpec:
        return self._connectors.get(department_id, DEFAULT_CONNECTOR)

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        spec = self.spec(department_id)
        theirs = their_words(update.status)
        change = StatusChange(
            department_id=department_id,
            external_id=update.external_id,
            theirs=theirs,
            ours=spec.ours(theirs),
            changed_at=update.changed_at,
            # a note reaches residents: plain text without links, as the webhook already made it
            note=resident_text(update.note) or None,
            refers_to=update.refers_to,
        )
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                outcome = await self._record_once(change, update.update_id)
            except ConcurrencyConflict:
                # Another event reached the case between our read and our append: decide again on it.
                if attempt == RECORD_ATTEMPTS:
                    raise
                continue
            if outcome is Outcome.RECORDED and change.ours is None:
                UNMAPPED_STATUSES.labels(department=department_id, kind=spec.kind).inc()
                # their code, so someone can map it; never the note, which may name a resident
                log.warning(
                    "work order status not in the department's mapping; recorded as a note",
                    department_id=department_id,
                    kind=spec.kind,
                    their_status=theirs,
                )
            return outcome
        raise AssertionError("unreachable")

    async def _record_once(self, change: StatusChange, update_id: str | None) -> Outcome:
        key = {"d": change.department_id, "x": change.external_id}
        async with self._engine.begin() as tx:
            work_order = (
                await tx.execute(
                    text(
                        "SELECT case_id, correlation_id, opened_by_event FROM workorder_bridge.work_orders"
                        " WHERE department_id = :d AND external_id = :x FOR UPDATE"  # one update at a time
                    ),
                    key,
                )
            ).first()
            if work_order is None:
                return Outcome.UNKNOWN_WORK_ORDER
            if update_id is not None and (
                await tx.scalar(
                    text("SELECT 1 FROM workorder_bridge.status_updates WHERE department_id = :d AND update_id = :u"),
                    {"d": change.department_id, "u": update_id},
                )
            ):
                return Outcome.DUPLICATE
            latest = (
                await tx.execute(
                    text(
                        "SELECT status, note, changed_at FROM workorder_bridge.status_updates"
                        " WHERE department_id = :d AND external_id = :x"
                        " ORDER BY changed_at DESC, recorded_at DESC LIMIT 1"
                    ),
                    key,
                )
            ).first()
            if latest is not None and (latest.status, latest.note) == (change.theirs, change.note):
                return Outcome.DUPLICATE
            if latest is not None and change.changed_at < latest.changed_at:
                return Outcome.OUTDATED
            first_time = (
                await tx.execute(
                    text(
                        "INSERT INTO workorder_bridge.status_updates"
                        " (department_id, external_id, status, changed_at, note, update_id)"
                        " VALUES (:d, :x, :s, :t, :n, :u) ON CONFLICT DO NOTHING RETURNING status"
                    ),
                    {**key, "s": change.theirs, "t": change.changed_at, "n": change.note, "u": update_id},
                )
            ).first()
            if first_time is None:
                return Outcome.DUPLICATE
            # The case's other work orders (after a reroute) are not under our row lock: appending at the
            # version we read makes two updates resolving the case at once conflict, and the loser re-reads.
            stream = await self._store.read_stream(tx, work_order.case_id)
            metadata = EventMetadata(
                correlation_id=work_order.correlation_id,
                causation_id=None,
                # who acted: the department's system (known by its webhook secret, its API, its key)
                actor=f"department:{change.department_id}",
                channel="department-system",
            )
            with structlog.contextvars.bound_contextvars(
                case_id=str(work_order.case_id), correlation_id=str(work_order.correlation_id)
            ):
                acts = update_may_act(stream, work_order.opened_by_event, change.ours)
                await self._store.append(
                    tx,
                    work_order.case_id,
                    stream[-1].version if stream else 0,
                    events_for_status(change, acts, self._connectors.keys()),
                    metadata,
                    occurred_at=change.changed_at,
                )
                log.info("work order status recorded", acts_on_case=acts, status=change.ours or "unmapped")
        return Outcome.RECORDED
