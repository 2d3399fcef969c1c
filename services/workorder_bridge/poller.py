"""Fetching status updates from departments whose systems are polled (open311), each on its own schedule.

Each poll asks the department's connector for the updates after the department's stored cursor, hands each to
RecordUpdate, and only then saves the new cursor: a crash between the two reads the same page again, and
recording dedupes it. An update for a work order not recorded yet is held by the recorder (Outcome.HELD) and
applied once it is, so the cursor moves past it; one the recorder refuses (changed_at more than a day ahead, or the
department's holds full) is skipped and logged by count, so one bad update cannot stop the department's polling. A
RecordUpdate that neither records nor holds (UNKNOWN_WORK_ORDER) keeps the cursor where it was.

A poll that fails is the department's health error, and waits for its next turn; it never holds up another
department's poll. Several bridge replicas may poll the same department; recording dedupes what both read.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.consumer import describe_error
from civicflow.department_systems import ConnectorSpec
from services.workorder_bridge.connector import Connector, Outcome, RecordUpdate
from services.workorder_bridge.health import HealthBook

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


_CURSOR = text("SELECT cursor FROM workorder_bridge.poll_cursors WHERE department_id = :d")
_SAVE_CURSOR = text(
    "INSERT INTO workorder_bridge.poll_cursors (department_id, cursor, polled_at) VALUES (:d, :c, :at)"
    " ON CONFLICT (department_id) DO UPDATE SET cursor = EXCLUDED.cursor, polled_at = EXCLUDED.polled_at"
)


class Poller:
    """Polls every polled department's system on its own interval until stopped."""

    def __init__(
        self,
        engine: AsyncEngine,
        polled: list[tuple[Connector, float]],
        record_update: RecordUpdate,
        health: HealthBook,
        clock: Clock = utc_now,
    ) -> None:
        self._engine = engine
        self._polled = polled
        self._record = record_update
        self._health = health
        self._clock = clock

    async def poll_once(self, connector: Connector) -> int | None:
        """One poll of one department: how many updates it handed on, or None when the poll failed."""
        department_id = connector.department_id
        with structlog.contextvars.bound_contextvars(department_id=department_id):
            try:
                async with self._engine.connect() as conn:
                    cursor = await conn.scalar(_CURSOR, {"d": department_id})
                try:
                    page = await connector.updates_since(cursor)
                except Exception as exc:  # their system's failure: its health, and the others poll on
                    error = describe_error(exc)
                    self._health.failure(connector, error)
                    log.warning("polling the department's system failed; trying again next time", error=error)
                    return None
                self._health.success(connector)
                outcomes: Counter[Outcome] = Counter()
                for update in page.updates:
                    outcome = await self._record(department_id, update)
                    log.debug("polled update", external_id=update.external_id, outcome=outcome.value)
                    outcomes[outcome] += 1
                if outcomes[Outcome.TOO_FAR_AHEAD] or outcomes[Outcome.HOLD_FULL]:
                    log.warning(
                        "polled updates skipped: not recorded and not held",
                        too_far_ahead=outcomes[Outcome.TOO_FAR_AHEAD],
                        holds_full=outcomes[Outcome.HOLD_FULL],
                    )
                if outcomes[Outcome.UNKNOWN_WORK_ORDER]:  # another department's, on a system they share
                    log.debug(
                        "polled updates of other departments' work orders", count=outcomes[Outcome.UNKNOWN_WORK_ORDER]
                    )
                async with self._engine.begin() as tx:
                    await tx.execute(_SAVE_CURSOR, {"d": department_id, "c": page.cursor, "at": self._clock()})
            except Exception as exc:  # ours (the database, recording): the cursor stays, the page is read again
                log.error("polled updates not recorded; reading them again next time", error=describe_error(exc))
                return None
            return len(page.updates)

    async def run(self, stop: asyncio.Event) -> None:
        """Each polled department on a loop of its own, so a slow one delays no other."""
        await asyncio.gather(*(self._keep_polling(c, every, stop) for c, every in self._polled))

    async def _keep_polling(self, connector: Connector, every: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll_once(connector)
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                pass


# Statuses of ours after which a work order needs no more reading: the job is over, one way or another.
FINISHED = frozenset({"resolved", "closed", "duplicate", "not_our_responsibility", "cancelled", "internal_referral"})
OPEN_WORK_ORDERS_READ = 500  # the newest open ones; more than this open at once are read by their updates feed


# Their latest status is compared as department_systems.their_status_key does (case, spaces and hyphens aside).
def finished_statuses(spec: ConnectorSpec) -> list[str]:
    """Their statuses (as their_status_key compares them) that the department's mapping makes finished."""
    return sorted(theirs for theirs, ours in spec.reverse().items() if ours in FINISHED)


_OPEN_WORK_ORDERS = text(
    "SELECT w.external_id FROM workorder_bridge.work_orders w"
    " LEFT JOIN LATERAL (SELECT s.status FROM workorder_bridge.status_updates s"
    "   WHERE s.department_id = w.department_id AND s.external_id = w.external_id"
    "   ORDER BY s.changed_at DESC, s.recorded_at DESC LIMIT 1) latest ON true"
    " WHERE w.department_id = :d AND NOT EXISTS (SELECT 1 FROM workorder_bridge.cancelled_work_orders c"
    "   WHERE c.department_id = w.department_id AND c.external_id = w.external_id)"
    "   AND (latest.status IS NULL"
    "     OR regexp_replace(lower(btrim(latest.status)), '[[:space:]-]+', '_', 'g') <> ALL(:finished))"
    " ORDER BY w.opened_at DESC LIMIT :n"
)


def open_work_orders_of(
    engine: AsyncEngine, department_id: str, spec: ConnectorSpec
) -> Callable[[], Awaitable[list[str]]]:
    """The department's work orders still open as far as the bridge knows (not cancelled, and their latest status
    not one its mapping makes finished): what a polled system without an updates feed is asked about."""
    finished = finished_statuses(spec)

    async def read() -> list[str]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                _OPEN_WORK_ORDERS, {"d": department_id, "finished": finished, "n": OPEN_WORK_ORDERS_READ}
            )
        return [row.external_id for row in rows]

    return read
