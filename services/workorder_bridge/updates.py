"""Recording a department's status updates in our vocabulary: the `RecordUpdate` every push endpoint and poller
hands what it received to (services/workorder_bridge/connector.py)."""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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
HELD_UPDATES = Counter(
    "civicflow_workorder_held_updates",
    "Status updates for work orders not recorded yet, by department and what became of them: held (kept until the"
    " work order is recorded), applied, expired (no such work order was ever recorded), refused (the department's"
    " holds were full).",
    ["department", "what"],
)
# A department's clock a little ahead of ours is fine; a day is a wrong clock or a wrong field, and recording it
# would make every later update of the work order outdated.
MOST_AHEAD = timedelta(days=1)
HOLD_MAX_PER_DEPARTMENT = 10_000
HOLD_DAYS = 7.0
APPLY_BATCH = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def update_key(update: ExternalUpdate) -> str:
    """What names one update of a work order while it is held: their update_id, else its status and time (as
    status_updates' primary key tells a redelivery), so a resend is held once."""
    if update.update_id:
        return f"id:{update.update_id}"
    return f"at:{their_words(update.status)}|{update.changed_at.astimezone(UTC).isoformat()}"


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
    updates on replaced work orders, and on a case already resolved, are the work order's changes.

    An update for a work order the bridge has not recorded is held (Outcome.HELD): the department may have answered
    before the bridge committed the work order (it crashed in between, or is still opening it), and a 404 would make
    its system give up on a real update. `apply_held` applies held updates once their work order is recorded, and
    drops the ones no work order claimed within `hold_days`; a department may have at most `hold_max` waiting
    (beyond: Outcome.HOLD_FULL, send it later). An update whose changed_at is more than a day ahead of our clock
    is refused (Outcome.TOO_FAR_AHEAD) before anything else."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        connectors: Mapping[str, ConnectorSpec] | None = None,
        *,
        clock: Clock = utc_now,
        hold_max: int = HOLD_MAX_PER_DEPARTMENT,
        hold_days: float = HOLD_DAYS,
    ) -> None:
        self._engine = engine
        self._store = store
        self._connectors = dict(connectors or {})
        self._clock = clock
        self._hold_max = hold_max
        self._hold_for = timedelta(days=hold_days)

    def spec(self, department_id: str) -> ConnectorSpec:
        return self._connectors.get(department_id, DEFAULT_CONNECTOR)

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        if update.changed_at > self._clock() + MOST_AHEAD:
            log.warning(
                "status update refused: changed_at is more than a day ahead of our clock",
                department_id=department_id,
                external_id=update.external_id,
            )
            return Outcome.TOO_FAR_AHEAD
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
                outcome = await self._record_once(change, update)
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

    async def _record_once(self, change: StatusChange, update: ExternalUpdate) -> Outcome:
        update_id = update.update_id
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
                return await self._hold(tx, change.department_id, update)
            if update_id is not None and (
                await tx.scalar(
                    text(
                        "SELECT 1 FROM workorder_bridge.status_updates"
                        " WHERE department_id = :d AND external_id = :x AND update_id = :u"
                    ),
                    {**key, "u": update_id},
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

    async def _hold(self, tx: AsyncConnection, department_id: str, update: ExternalUpdate) -> Outcome:
        """Keep an update whose work order is not recorded: once (a resend finds its row), and only while the
        department has fewer than hold_max waiting. Logged by counts and ids, never the note."""
        row = {"d": department_id, "x": update.external_id, "k": update_key(update)[:300]}
        if await tx.scalar(_ANOTHER_DEPARTMENTS, row):
            # a system shared by departments (one Open311 server for the city) shows each the others' work
            # orders: those are not this department's to wait for
            return Outcome.UNKNOWN_WORK_ORDER
        if await tx.scalar(_IS_HELD, row):
            return Outcome.HELD
        waiting = await tx.scalar(_HELD_COUNT, {"d": department_id}) or 0
        if waiting >= self._hold_max:
            HELD_UPDATES.labels(department=department_id, what="refused").inc()
            log.warning(
                "status update for a work order not recorded yet not held: the department has the most waiting",
                department_id=department_id,
                external_id=update.external_id,
                waiting=waiting,
            )
            return Outcome.HOLD_FULL
        await tx.execute(
            _HOLD,
            {
                **row,
                "s": update.status,
                "t": update.changed_at,
                "n": update.note,
                "u": update.update_id,
                "r": update.refers_to,
                "at": self._clock(),
            },
        )
        HELD_UPDATES.labels(department=department_id, what="held").inc()
        log.info(
            "status update held until its work order is recorded",
            department_id=department_id,
            external_id=update.external_id,
        )
        return Outcome.HELD

    async def apply_held(self, now: datetime | None = None) -> int:
        """One pass over the held updates: drop those held longer than hold_days, then apply, oldest change first,
        those whose work order is now recorded, each through the recorder (so one that was applied before a
        crash is a duplicate now), and delete them. How many were applied. Replicas share the rows (SKIP LOCKED)."""
        now = now or self._clock()
        async with self._engine.begin() as tx:
            expired = (await tx.execute(_EXPIRE, {"before": now - self._hold_for})).scalars().all()
        for department_id, count in Tally(expired).items():
            HELD_UPDATES.labels(department=department_id, what="expired").inc(count)
            log.warning(
                "held status updates dropped: no work order of theirs was recorded in time",
                department_id=department_id,
                count=count,
                held_days=self._hold_for.days,
            )
        applied = 0
        async with self._engine.begin() as tx:
            rows = (await tx.execute(_RECORDED_HELD, {"n": APPLY_BATCH})).all()
            done: list[dict[str, str]] = []
            failed: set[tuple[str, str]] = set()
            for row in rows:
                work_order = (row.department_id, row.external_id)
                if work_order in failed:
                    continue  # its later updates wait, so they are applied in order
                update = ExternalUpdate(
                    external_id=row.external_id,
                    status=row.status,
                    changed_at=row.changed_at,
                    note=row.note,
                    update_id=row.update_id,
                    refers_to=row.refers_to,
                )
                try:
                    with structlog.contextvars.bound_contextvars(held=True):
                        outcome = await self(row.department_id, update)
                except Exception:
                    log.exception(
                        "a held status update could not be applied; trying again next pass",
                        department_id=row.department_id,
                        external_id=row.external_id,
                    )
                    failed.add(work_order)
                    continue
                if outcome is Outcome.HELD:  # cannot happen (its work order is recorded); keep it all the same
                    continue
                HELD_UPDATES.labels(department=row.department_id, what="applied").inc()
                done.append({"d": row.department_id, "x": row.external_id, "k": row.update_key})
                applied += 1
            if done:
                await tx.execute(_RELEASE, done)
        return applied


_IS_HELD = text(
    "SELECT 1 FROM workorder_bridge.held_updates WHERE department_id = :d AND external_id = :x AND update_key = :k"
)
_ANOTHER_DEPARTMENTS = text(
    "SELECT 1 FROM workorder_bridge.work_orders WHERE external_id = :x AND department_id <> :d LIMIT 1"
)
_HELD_COUNT = text("SELECT count(*) FROM workorder_bridge.held_updates WHERE department_id = :d")
_HOLD = text(
    "INSERT INTO workorder_bridge.held_updates"
    " (department_id, external_id, update_key, status, changed_at, note, update_id, refers_to, received_at)"
    " VALUES (:d, :x, :k, :s, :t, :n, :u, :r, :at) ON CONFLICT DO NOTHING"
)
_EXPIRE = text(
    "DELETE FROM workorder_bridge.held_updates WHERE ctid IN (SELECT ctid FROM workorder_bridge.held_updates"
    " WHERE received_at < :before FOR UPDATE SKIP LOCKED) RETURNING department_id"
)
_RECORDED_HELD = text(
    "SELECT h.* FROM workorder_bridge.held_updates h WHERE EXISTS (SELECT 1 FROM workorder_bridge.work_orders w"
    " WHERE w.department_id = h.department_id AND w.external_id = h.external_id)"
    " ORDER BY h.changed_at, h.received_at LIMIT :n FOR UPDATE OF h SKIP LOCKED"
)
_RELEASE = text(
    "DELETE FROM workorder_bridge.held_updates WHERE department_id = :d AND external_id = :x AND update_key = :k"
)
