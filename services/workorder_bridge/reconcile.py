"""Reconciliation: reading back work orders that have gone quiet, because webhooks get lost and departments'
systems lose things.

A work order of a case not resolved, opened for the case's standing routing decision and not cancelled, with
no status news (its latest status_updates row, else its opening) for longer than its department's
`reconcile_after_minutes`, and not read back within that interval either, is read through its connector
(`read_work_order`):

- their status is news (newer than our latest, or another status): it goes to RecordUpdate like any webhook
  or poll, which records it once; so a finished job whose report was lost resolves the case;
- their system does not know it (None): it is opened again through the connector under the SAME idempotency key
  (the routing event's id, as the opener sent it), and the new number is recorded as WorkOrderReopenedThere
  with a work_orders row for the same case and routing decision, so its later updates act on the case. Where
  that cannot work (their system refuses, or still holds our key for the work order it lost and answers with
  it), WorkOrderLost puts the case in the department's supervisor queue (its `on_call_queue` in the city file,
  else "<department>-supervisor"), and its timeline says so. Either way the lost number is marked done with
  (`cancelled_work_orders`, how = lost): nothing cancels or reads it again;
- their system cannot tell now (DepartmentUnavailable): the department's health error, and its work orders are
  left for the next pass; a kind that cannot be read (CannotRead: grpc, email) is skipped from then on.

Rows are claimed in small batches (FOR UPDATE SKIP LOCKED, the claim written to `work_order_reads` before
anyone is called), so replicas share the work and a work order is read at most once per interval. A reopening
or a loss is recorded with the read's outcome in one transaction, and reopening sends the same key, so a crash
between their answer and our commit repeats nothing: the next read finds the number lost again and the same
key finds the work order opened the first time. News is recorded by RecordUpdate, once however often it is
handed on. A crash after the claim only delays that work order's read by an interval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
import yaml
from prometheus_client import Counter
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.consumer import describe_error
from civicflow.department_systems import DEFAULT_CONNECTOR, ConnectorSpec
from civicflow.events import RecordedEvent, WorkOrderLost, WorkOrderReopenedThere, stands_resolved
from civicflow.eventstore import ConcurrencyConflict, EventStore
from services.workorder_bridge.connector import (
    CannotRead,
    Connector,
    DepartmentUnavailable,
    ExternalUpdate,
    OpenedWorkOrder,
    RecordUpdate,
    WorkOrderRefused,
)
from services.workorder_bridge.health import HealthBook
from services.workorder_bridge.opener import SERVICE, standing_decision
from services.workorder_bridge.poller import finished_statuses
from services.workorder_bridge.updates import their_words

log = structlog.get_logger(__name__)

BATCH = 20  # work orders claimed at a time: small, so a slow department holds few rows
RECORD_ATTEMPTS = 5
RECONCILED = Counter(
    "civicflow_workorders_reconciled",
    "Quiet work orders read back from their departments' systems, by what was found: updated (news recorded),"
    " unchanged, reopened (lost, opened again), lost (to the supervisor queue), unavailable (read next pass).",
    ["department", "outcome"],
)


class Departments(Protocol):
    """What reconciliation needs of the bridge's connectors (connectors.DepartmentSystems)."""

    def for_department(self, department_id: str) -> Connector: ...

    def spec(self, department_id: str) -> ConnectorSpec: ...

    def specs(self) -> dict[str, ConnectorSpec]: ...


class OpenAgain(Protocol):
    """Opens the work order of a routing decision in its department's system, under the decision's id as the
    key, with the request as the case stood when routed (opener.WorkOrderOpener.open_for)."""

    async def open_for(self, event: RecordedEvent, stream: Sequence[RecordedEvent]) -> OpenedWorkOrder: ...


@dataclass
class Reconciled:
    """What one pass did, by outcome (for logs and tests)."""

    read: int = 0
    updated: int = 0
    reopened: int = 0
    lost: int = 0
    not_needed: int = 0
    waiting: int = 0  # claims given back: the department did not answer, or cannot be read
    departments_down: set[str] = field(default_factory=set)


def supervisor_queues(city_file: Path | None) -> dict[str, str]:
    """Each department's on-call queue from the city file (`departments.<id>.on_call_queue`), where it names one:
    where a case whose work order was lost waits. A file that cannot be read gives none (the bridge's start
    reads it first and says what is wrong)."""
    if city_file is None:
        return {}
    try:
        raw: Any = yaml.safe_load(city_file.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    departments = raw.get("departments") if isinstance(raw, dict) else None
    found: dict[str, str] = {}
    for department_id, definition in departments.items() if isinstance(departments, dict) else ():
        queue = definition.get("on_call_queue") if isinstance(definition, dict) else None
        if isinstance(queue, str) and queue.strip():
            found[str(department_id)] = queue.strip()
    return found


# Work orders due a read: not reopened, not cancelled or lost, quiet for longer than the department's interval
# (the city file's, else the default's, given as :intervals and :default in minutes) and not read within it.
_DUE = text(
    "SELECT w.department_id, w.external_id, w.case_id, w.system, w.opened_by_event, w.correlation_id,"
    "  latest.status AS latest_status, latest.changed_at AS latest_changed_at, r.read_at, r.outcome"
    " FROM workorder_bridge.work_orders w"
    " LEFT JOIN workorder_bridge.work_order_reads r"
    "   ON r.department_id = w.department_id AND r.external_id = w.external_id"
    " LEFT JOIN LATERAL (SELECT s.status, s.changed_at FROM workorder_bridge.status_updates s"
    "   WHERE s.department_id = w.department_id AND s.external_id = w.external_id"
    "   ORDER BY s.changed_at DESC, s.recorded_at DESC LIMIT 1) latest ON true"
    " CROSS JOIN LATERAL (SELECT CAST(:now AS timestamptz) - COALESCE("
    "   CAST(CAST(:intervals AS jsonb) ->> w.department_id AS float8), CAST(:default AS float8))"
    "   * interval '1 minute' AS cutoff) due"
    " WHERE w.reopened_as IS NULL AND NOT (w.department_id = ANY(:skip))"
    " AND NOT EXISTS (SELECT 1 FROM workorder_bridge.cancelled_work_orders c"
    "   WHERE c.department_id = w.department_id AND c.external_id = w.external_id)"
    " AND COALESCE((SELECT max(s.recorded_at) FROM workorder_bridge.status_updates s"
    "   WHERE s.department_id = w.department_id AND s.external_id = w.external_id), w.opened_at) <= due.cutoff"
    " AND (r.read_at IS NULL OR r.read_at <= due.cutoff)"
    # a job over (their latest status one the department's mapping makes finished) has nothing more to say
    " AND (latest.status IS NULL OR NOT (regexp_replace(lower(btrim(latest.status)), '[[:space:]-]+', '_', 'g')"
    "   = ANY(ARRAY(SELECT jsonb_array_elements_text(COALESCE(CAST(:finished AS jsonb) -> w.department_id,"
    "     CAST(:finished AS jsonb) -> '*'))))))"
    " ORDER BY COALESCE(r.read_at, w.opened_at) LIMIT :n FOR UPDATE OF w SKIP LOCKED"
)
_CLAIM = text(
    "INSERT INTO workorder_bridge.work_order_reads (department_id, external_id, read_at, outcome)"
    " VALUES (:d, :x, :at, 'claimed')"
    " ON CONFLICT (department_id, external_id) DO UPDATE SET read_at = EXCLUDED.read_at, outcome = 'claimed'"
)
_GIVE_BACK = text(
    "UPDATE workorder_bridge.work_order_reads SET read_at = :at, outcome = :outcome"
    " WHERE department_id = :d AND external_id = :x"
)
_FORGET_CLAIM = text("DELETE FROM workorder_bridge.work_order_reads WHERE department_id = :d AND external_id = :x")
_READ = text(
    "UPDATE workorder_bridge.work_order_reads SET outcome = :outcome WHERE department_id = :d AND external_id = :x"
)
_LOCK_WORK_ORDER = text(
    "SELECT w.reopened_as, EXISTS (SELECT 1 FROM workorder_bridge.cancelled_work_orders c"
    "   WHERE c.department_id = w.department_id AND c.external_id = w.external_id) AS done_with"
    " FROM workorder_bridge.work_orders w WHERE w.department_id = :d AND w.external_id = :x FOR UPDATE"
)
_MARK_REOPENED = text(
    "UPDATE workorder_bridge.work_orders SET reopened_as = :new WHERE department_id = :d AND external_id = :x"
)
_RECORD_REOPENED = text(
    "INSERT INTO workorder_bridge.work_orders"
    " (department_id, external_id, case_id, system, opened_by_event, correlation_id)"
    " VALUES (:d, :new, :c, :s, :e, :r) ON CONFLICT (department_id, external_id) DO NOTHING"
)
_MARK_LOST = text(
    "INSERT INTO workorder_bridge.cancelled_work_orders (department_id, external_id, case_id, cancelled_by_event, how)"
    " VALUES (:d, :x, :c, :e, 'lost') ON CONFLICT DO NOTHING"
)


class Reconciler:
    """Reads back quiet work orders and acts on what their systems say (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        departments: Departments,
        record_update: RecordUpdate,
        opener: OpenAgain,
        queues: Mapping[str, str] | None = None,
        health: HealthBook | None = None,
        batch: int = BATCH,
    ) -> None:
        self._engine = engine
        self._store = store
        self._departments = departments
        self._record = record_update
        self._opener = opener
        self._queues = dict(queues or {})
        self._health = health or HealthBook()
        self._batch = batch
        self._unreadable: set[str] = set()  # departments whose kind cannot be read (CannotRead): skipped for good

    def queue_of(self, department_id: str) -> str:
        return self._queues.get(department_id) or f"{department_id}-supervisor"

    async def reconcile_due(self, now: datetime) -> Reconciled:
        """One pass: every work order due a read at `now`, a batch at a time, until none is left that this pass
        can read (a department found down or unreadable is left alone for the rest of the pass)."""
        done = Reconciled()
        tried: set[tuple[str, str]] = set()
        while True:
            claimed = await self._claim(now, done.departments_down | self._unreadable)
            fresh = [row for row in claimed if (row.department_id, row.external_id) not in tried]
            for row in claimed:
                if (row.department_id, row.external_id) in tried:  # given back earlier in this pass: next pass
                    await self._give_back(row, done)
                    continue
                tried.add((row.department_id, row.external_id))
                with structlog.contextvars.bound_contextvars(case_id=str(row.case_id)):
                    try:
                        await self._one(row, now, done)
                    except Exception as exc:  # ours (recording, the database): this one waits an interval, alone
                        log.error("work order not reconciled; read again next interval", error=describe_error(exc))
            if not fresh:
                return done

    async def _claim(self, now: datetime, skip: set[str]) -> list[Row[Any]]:
        intervals = {d: spec.reconcile_after_minutes for d, spec in self._departments.specs().items()}
        default = ConnectorSpec.model_fields["reconcile_after_minutes"].default
        finished = {d: finished_statuses(spec) for d, spec in self._departments.specs().items()}
        finished["*"] = finished_statuses(DEFAULT_CONNECTOR)
        async with self._engine.begin() as tx:
            rows = (
                await tx.execute(
                    _DUE,
                    {
                        "now": now,
                        "intervals": json.dumps(intervals),
                        "default": default,
                        "finished": json.dumps(finished),
                        "skip": sorted(skip),
                        "n": self._batch,
                    },
                )
            ).all()
            for row in rows:
                await tx.execute(_CLAIM, {"d": row.department_id, "x": row.external_id, "at": now})
        return list(rows)

    async def _give_back(self, row: Row[Any], done: Reconciled) -> None:
        """The read did not happen: the work order is due again next pass, as it was."""
        done.waiting += 1
        key = {"d": row.department_id, "x": row.external_id}
        async with self._engine.begin() as tx:
            if row.read_at is None:
                await tx.execute(_FORGET_CLAIM, key)
            else:
                await tx.execute(_GIVE_BACK, {**key, "at": row.read_at, "outcome": row.outcome})

    async def _note(self, row: Row[Any], outcome: str) -> None:
        RECONCILED.labels(row.department_id, outcome.partition(":")[0]).inc()
        async with self._engine.begin() as tx:
            await tx.execute(_READ, {"d": row.department_id, "x": row.external_id, "outcome": outcome})

    async def _one(self, row: Row[Any], now: datetime, done: Reconciled) -> None:
        department_id = row.department_id
        if department_id in done.departments_down or department_id in self._unreadable:
            await self._give_back(row, done)
            return
        try:
            async with self._engine.connect() as conn:
                stream = await self._store.read_stream(conn, row.case_id)
            decision = standing_decision(stream, row.opened_by_event)
        except Exception as exc:  # ours (the database) or a case without its decision: read again next interval
            log.error("work order not reconciled: its case could not be read", error=describe_error(exc))
            await self._note(row, "case_unreadable")
            return
        if decision is None or stands_resolved(e.data for e in stream):
            # a replaced decision or a resolved case needs nothing; a resolved case is looked at again next
            # interval all the same (its department may reopen the job)
            done.not_needed += 1
            await self._note(row, "not_needed")
            return
        connector = self._departments.for_department(department_id)
        try:
            found = await connector.read_work_order(row.external_id)
        except CannotRead:
            log.info("this kind of system cannot be read back; not reconciled", department_id=department_id)
            self._unreadable.add(department_id)
            await self._give_back(row, done)
            return
        except Exception as exc:  # DepartmentUnavailable, or their answer broke the connector: next pass
            RECONCILED.labels(department_id, "unavailable").inc()
            self._down(connector, describe_error(exc), done)
            await self._give_back(row, done)
            return
        self._health.success(connector)
        done.read += 1
        if found is not None:
            await self._news(row, found, done)
            return
        # Before opening anything again, make sure "not known" is not a wrong address answering 404 for all.
        checked = await connector.health()
        if not checked.up:
            self._down(connector, f"it said it does not know a work order, but is down: {checked.detail}", done)
            await self._give_back(row, done)
            return
        await self._lost_there(row, decision, stream, now, done)

    def _down(self, connector: Connector, error: str, done: Reconciled) -> None:
        self._health.failure(connector, error)
        done.departments_down.add(connector.department_id)
        log.warning("work orders not read back; trying next pass", department_id=connector.department_id, error=error)

    async def _news(self, row: Row[Any], found: ExternalUpdate, done: Reconciled) -> None:
        """Their status, when it tells us something: newer than our latest, or another status."""
        if row.latest_status is None and self._departments.spec(row.department_id).ours(found.status) == "open":
            await self._note(row, "unchanged")  # open, as WorkOrderOpened already says
            return
        newer = row.latest_changed_at is None or found.changed_at > row.latest_changed_at
        if newer or their_words(found.status) != row.latest_status:
            outcome = await self._record(row.department_id, found)
            log.info(
                "quiet work order read back with news",
                department_id=row.department_id,
                external_id=row.external_id,
                outcome=outcome.value,
            )
            done.updated += 1
            await self._note(row, f"updated:{outcome.value}")
        else:
            await self._note(row, "unchanged")

    async def _lost_there(
        self, row: Row[Any], decision: RecordedEvent, stream: Sequence[RecordedEvent], now: datetime, done: Reconciled
    ) -> None:
        """Their system does not know the work order: open it again under the same key, or send the case to the
        department's supervisor queue when that cannot work."""
        department_id = row.department_id
        log.warning("department's system lost a work order; opening it again", department_id=department_id)
        reason: str | None = None
        try:
            opened = await self._opener.open_for(decision, stream)
        except WorkOrderRefused as refused:
            reason = f"its system refused to open it again (HTTP {refused.status_code})"
        except DepartmentUnavailable as exc:
            self._down(self._departments.for_department(department_id), describe_error(exc), done)
            await self._give_back(row, done)
            return
        except Exception as exc:  # the connector broke on their answer: try next pass, never drop it
            log.error("opening a lost work order again failed", department_id=department_id, error=describe_error(exc))
            await self._give_back(row, done)
            return
        else:
            if opened.external_id == row.external_id:
                reason = "its system still holds our key for the work order it lost, so it cannot be opened again there"
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                if reason is None:
                    await self._record_reopened(row, decision, opened.external_id, now)
                    RECONCILED.labels(department_id, "reopened").inc()
                    done.reopened += 1
                    log.info("lost work order opened again", department_id=department_id)
                else:
                    await self._record_lost(row, decision, reason)
                    RECONCILED.labels(department_id, "lost").inc()
                    done.lost += 1
                    log.warning("lost work order cannot be opened again; sent to the supervisor queue", reason=reason)
                return
            except ConcurrencyConflict:
                # another event reached the case between our read and our append: decide again on it
                if attempt == RECORD_ATTEMPTS:
                    await self._give_back(row, done)  # the same key finds what was opened, next pass

    async def _record_reopened(self, row: Row[Any], decision: RecordedEvent, new_id: str, now: datetime) -> None:
        """WorkOrderReopenedThere and the new number, the old one done with, the read noted: one transaction. Their
        system has the work order again whatever the case did meanwhile, so it is recorded all the same; if a later
        decision replaced this one meanwhile, the new work order's cancellation is parked (due now) as well, since
        the canceller, having seen only the lost number, cannot know it."""
        from services.workorder_bridge.cancellation import park_cancellation, reason_to_cancel

        key = {"d": row.department_id, "x": row.external_id}
        async with self._engine.begin() as tx:
            if not await self._still_ours(tx, key):
                return
            stream = await self._store.read_stream(tx, row.case_id)
            event = WorkOrderReopenedThere(
                department_id=row.department_id, old_external_id=row.external_id, external_id=new_id
            )
            [recorded] = await self._store.append(
                tx, row.case_id, stream[-1].version, [event], decision.caused(SERVICE)
            )
            await tx.execute(_MARK_REOPENED, {**key, "new": new_id})
            await tx.execute(
                _RECORD_REOPENED,
                {
                    "d": row.department_id,
                    "new": new_id,
                    "c": row.case_id,
                    "s": row.system,
                    "e": row.opened_by_event,
                    "r": row.correlation_id,
                },
            )
            await tx.execute(_MARK_LOST, {**key, "c": row.case_id, "e": recorded.event_id})
            await tx.execute(_READ, {**key, "outcome": "reopened"})
            # just opened, so not quiet: its first read is an interval from now
            await tx.execute(_CLAIM, {"d": row.department_id, "x": new_id, "at": now})
            await tx.execute(_READ, {"d": row.department_id, "x": new_id, "outcome": "opened_again"})
            if standing_decision(stream, decision.event_id) is None:
                cause = next(e for e in stream if e.version > decision.version and reason_to_cancel(e) is not None)
                why = "opened again after its department lost it, as the case moved on"
                parked = park_cancellation(cause, row.department_id, new_id, reason_to_cancel(cause) or "", now, why)
                await tx.execute(parked.sql, parked.params)

    async def _record_lost(self, row: Row[Any], decision: RecordedEvent, reason: str) -> None:
        """WorkOrderLost (the case to the supervisor queue), the number done with, the read noted: one transaction;
        if a later decision replaced this one meanwhile, the case has moved on and only the number is done with."""
        key = {"d": row.department_id, "x": row.external_id}
        async with self._engine.begin() as tx:
            if not await self._still_ours(tx, key):
                return
            stream = await self._store.read_stream(tx, row.case_id)
            cause = decision.event_id
            if standing_decision(stream, decision.event_id) is not None:
                event = WorkOrderLost(
                    department_id=row.department_id,
                    external_id=row.external_id,
                    queue=self.queue_of(row.department_id),
                    reason=reason,
                )
                [recorded] = await self._store.append(
                    tx, row.case_id, stream[-1].version, [event], decision.caused(SERVICE)
                )
                cause = recorded.event_id
            await tx.execute(_MARK_LOST, {**key, "c": row.case_id, "e": cause})
            await tx.execute(_READ, {**key, "outcome": "lost"})

    @staticmethod
    async def _still_ours(tx: AsyncConnection, key: Mapping[str, str]) -> bool:
        """Whether the work order is still ours to act on (locked): not reopened or done with meanwhile."""
        found = (await tx.execute(_LOCK_WORK_ORDER, key)).first()
        return found is not None and found.reopened_as is None and not found.done_with
