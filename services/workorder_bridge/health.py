"""Each department's health as the bridge sees it: what every open, cancel and poll found, a periodic probe of
every system, the table `civicflow departments status` reads, and the Prometheus metrics of the same.

Outcomes are noted in memory as they happen (the opener notes one per work order, inside the consumer's batch)
and written in one short transaction a second later: a row per department updated inside every batch would
make batches touching the same departments in another order wait on each other, or deadlock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.workorder_bridge.connector import Connector

log = structlog.get_logger(__name__)

DEPARTMENT_UP = Gauge(
    "civicflow_department_up",
    "1 while the department's system answered the bridge's latest call or probe, 0 while it did not.",
    ["department", "kind"],
)
PARKED_WORK_ORDERS = Gauge(
    "civicflow_department_parked_work_orders",
    "Work orders waiting for the department's system to answer again.",
    ["department"],
)
OLDEST_PARKED_SECONDS = Gauge(
    "civicflow_department_oldest_parked_seconds",
    "How long the department's oldest parked work order has waited (0: none waits).",
    ["department"],
)
WORK_ORDERS_OPENED = Counter(
    "civicflow_workorders_opened", "Work orders opened in departments' systems.", ["department", "kind"]
)
WORK_ORDERS_CANCELLED = Counter(
    "civicflow_workorders_cancelled",
    "Earlier work orders of cases that moved on: cancelled in the department's system, or the department told.",
    ["department", "how"],
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Observation:
    department_id: str
    kind: str
    up: bool
    at: datetime
    error: str | None  # by kind (consumer.describe_error), never personal data


_UPSERT = text(
    "INSERT INTO workorder_bridge.department_health"
    " (department_id, kind, up, last_success_at, last_error_at, last_error, checked_at)"
    " VALUES (:d, :k, :up, :ok_at, :err_at, :err, :at)"
    " ON CONFLICT (department_id) DO UPDATE SET"
    "  kind = EXCLUDED.kind,"
    # a replica's older observation, written late, does not turn the latest back
    "  up = CASE WHEN EXCLUDED.checked_at >= department_health.checked_at THEN EXCLUDED.up"
    "       ELSE department_health.up END,"
    "  last_success_at = GREATEST(department_health.last_success_at, EXCLUDED.last_success_at),"
    "  last_error = CASE WHEN EXCLUDED.last_error_at IS NOT NULL AND EXCLUDED.last_error_at"
    "       >= COALESCE(department_health.last_error_at, EXCLUDED.last_error_at)"
    "       THEN EXCLUDED.last_error ELSE department_health.last_error END,"
    "  last_error_at = GREATEST(department_health.last_error_at, EXCLUDED.last_error_at),"
    "  checked_at = GREATEST(department_health.checked_at, EXCLUDED.checked_at)"
)


class HealthBook:
    """Notes what each call to a department's system found and writes it to department_health on flush."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock
        self._pending: dict[str, list[Observation]] = {}

    def success(self, connector: Connector) -> None:
        self._note(Observation(connector.department_id, connector.kind, True, self._clock(), None))

    def failure(self, connector: Connector, error: str) -> None:
        self._note(Observation(connector.department_id, connector.kind, False, self._clock(), error[:500]))

    def _note(self, observation: Observation) -> None:
        # only a department's latest success and latest failure matter: however long the database is away,
        # what waits for it stays two observations a department
        noted = self._pending.setdefault(observation.department_id, [])
        same = [o for o in noted if o.up == observation.up]
        if same and same[0].at > observation.at:
            return
        noted[:] = [o for o in noted if o.up != observation.up] + [observation]

    async def flush(self, engine: AsyncEngine) -> int:
        """Write what was noted since the last flush, departments in one order (replicas never deadlock);
        how many departments' rows were written. Nothing is lost if the write fails: it is tried next time."""
        if not self._pending:
            return 0
        taken, self._pending = self._pending, {}
        rows = [_row(observations) for _, observations in sorted(taken.items())]
        try:
            async with engine.begin() as tx:
                await tx.execute(_UPSERT, rows)
        except BaseException:
            for observations in taken.values():
                for observation in observations:
                    self._note(observation)
            raise
        return len(rows)

    async def probe(self, connectors: Sequence[Connector], timeout: float = 15.0) -> None:
        """Ask every system whether it answers, all at once; one that hangs counts as down."""

        async def ask(connector: Connector) -> None:
            try:
                health = await asyncio.wait_for(connector.health(), timeout)
            except Exception as exc:  # a probe that fails is a department that does not answer
                self.failure(connector, f"health check failed ({type(exc).__name__})")
                return
            if health.up:
                self.success(connector)
            else:
                self.failure(connector, health.detail or "down")

        await asyncio.gather(*(ask(c) for c in connectors))


def _row(observations: list[Observation]) -> dict[str, object]:
    """One department's observations as one row: the latest decides up; the latest success and error kept."""
    latest = max(observations, key=lambda o: o.at)
    successes = [o.at for o in observations if o.up]
    errors = [o for o in observations if not o.up]
    last_error = max(errors, key=lambda o: o.at) if errors else None
    return {
        "d": latest.department_id,
        "k": latest.kind,
        "up": latest.up,
        "ok_at": max(successes) if successes else None,
        "err_at": last_error.at if last_error else None,
        "err": last_error.error if last_error else None,
        "at": latest.at,
    }


@dataclass(frozen=True)
class DepartmentStatus:
    """One department's line of `civicflow departments status`."""

    department_id: str
    kind: str | None
    up: bool | None  # None: never checked yet
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    checked_at: datetime | None
    parked_work_orders: int
    oldest_parked_at: datetime | None
    parked_cancellations: int

    def oldest_parked_seconds(self, now: datetime) -> float:
        return max((now - self.oldest_parked_at).total_seconds(), 0.0) if self.oldest_parked_at else 0.0


async def department_statuses(conn: AsyncConnection, kinds: dict[str, str] | None = None) -> list[DepartmentStatus]:
    """Every department the city file names (`kinds`, department -> connector kind) or the bridge has a row
    for, with its health and what waits for it."""
    health = {
        r.department_id: r
        for r in await conn.execute(
            text(
                "SELECT department_id, kind, up, last_success_at, last_error_at, last_error, checked_at"
                " FROM workorder_bridge.department_health"
            )
        )
    }
    parked = {
        r.department_id: (r.n, r.oldest)
        for r in await conn.execute(
            text(
                "SELECT department_id, count(*) AS n, min(first_failed_at) AS oldest"
                " FROM workorder_bridge.pending_work_orders GROUP BY department_id"
            )
        )
    }
    cancellations = {
        r.department_id: r.n
        for r in await conn.execute(
            text(
                "SELECT department_id, count(*) AS n FROM workorder_bridge.pending_cancellations GROUP BY department_id"
            )
        )
    }
    kinds = kinds or {}
    found = []
    for department_id in sorted(set(kinds) | set(health) | set(parked) | set(cancellations)):
        row = health.get(department_id)
        count, oldest = parked.get(department_id, (0, None))
        found.append(
            DepartmentStatus(
                department_id=department_id,
                kind=kinds.get(department_id) or (row.kind if row else None),
                up=row.up if row else None,
                last_success_at=row.last_success_at if row else None,
                last_error_at=row.last_error_at if row else None,
                last_error=row.last_error if row else None,
                checked_at=row.checked_at if row else None,
                parked_work_orders=count,
                oldest_parked_at=oldest,
                parked_cancellations=cancellations.get(department_id, 0),
            )
        )
    return found


async def refresh_gauges(engine: AsyncEngine, kinds: dict[str, str], now: datetime) -> None:
    """Set the department gauges from the tables (every replica's outcomes, not only this one's)."""
    async with engine.connect() as conn:
        statuses = await department_statuses(conn, kinds)
    for status in statuses:
        if status.up is not None:
            DEPARTMENT_UP.labels(status.department_id, status.kind or "unknown").set(1 if status.up else 0)
        PARKED_WORK_ORDERS.labels(status.department_id).set(status.parked_work_orders)
        OLDEST_PARKED_SECONDS.labels(status.department_id).set(status.oldest_parked_seconds(now))
    shown = {status.department_id for status in statuses}
    for department_id in _GAUGED - shown:  # nothing of it left in the tables: nothing waits for it
        PARKED_WORK_ORDERS.labels(department_id).set(0)
        OLDEST_PARKED_SECONDS.labels(department_id).set(0)
    _GAUGED.update(shown)


_GAUGED: set[str] = set()  # the departments this process has set gauges for
