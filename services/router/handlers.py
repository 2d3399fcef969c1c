"""The router's reactions: place new cases, reroute rejected or recategorised ones, flag overdue ones."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.consumer import Inbox
from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseOverdue,
    CaseSubmitted,
    EventMetadata,
    RecordedEvent,
    RoutingDecision,
)
from civicflow.eventstore import EventStore
from civicflow.ids import uuid7
from services.router.decide import reroute, route_new_case
from services.router.rulebook import RuleBook

log = structlog.get_logger(__name__)


async def track_open_case(tx: AsyncConnection, case_id: UUID, decision: CaseEvent) -> None:
    """Keep router.open_cases in step with the decision, in the same transaction."""
    if isinstance(decision, RoutingDecision):
        await tx.execute(
            text(
                "INSERT INTO router.open_cases (case_id, department_id, due_at) VALUES (:c, :d, :due)"
                " ON CONFLICT (case_id) DO UPDATE SET department_id = :d, due_at = :due, overdue_for = NULL"
            ),
            {"c": case_id, "d": decision.department_id, "due": decision.due_at},
        )
    elif isinstance(decision, CaseNeedsTriage):
        await tx.execute(text("DELETE FROM router.open_cases WHERE case_id = :c"), {"c": case_id})


class Router:
    def __init__(self, engine: AsyncEngine, inbox: Inbox, store: EventStore, rules: RuleBook) -> None:
        self._engine = engine
        self._inbox = inbox
        self._store = store
        self._rules = rules

    async def on_submitted(self, event: RecordedEvent) -> None:
        assert isinstance(event.data, CaseSubmitted)
        decision = route_new_case(self._rules.current, event.data, event.metadata.channel)

        async def record(tx: AsyncConnection) -> None:
            await self._store.append(tx, event.case_id, None, [decision], event.caused("router"))
            await track_open_case(tx, event.case_id, decision)

        await self._inbox.process_once(event, record)

    async def on_reroute_trigger(self, event: RecordedEvent) -> None:
        """WorkOrderRejected or CaseRecategorised: back through the rules, without who turned it down."""

        async def record(tx: AsyncConnection) -> None:
            stream = await self._store.read_stream(tx, event.case_id)
            history = [e.data for e in stream if e.version <= event.version]
            channel = stream[0].metadata.channel if stream else None
            decision = reroute(self._rules.current, history, event.data, channel)
            if decision is None:
                log.info("rejection ignored: the case has moved on")
                return
            expected = stream[-1].version if stream else 0
            await self._store.append(tx, event.case_id, expected, [decision], event.caused("router"))
            await track_open_case(tx, event.case_id, decision)

        await self._inbox.process_once(event, record)

    async def on_resolved(self, event: RecordedEvent) -> None:
        async def forget(tx: AsyncConnection) -> None:
            await tx.execute(text("DELETE FROM router.open_cases WHERE case_id = :c"), {"c": event.case_id})

        await self._inbox.process_once(event, forget)

    async def mark_overdue(self, now: datetime, limit: int = 200) -> int:
        """Append CaseOverdue once for each open case past its due date; safe with several routers."""
        async with self._engine.begin() as tx:
            rows = (
                await tx.execute(
                    text(
                        "SELECT case_id, department_id, due_at FROM router.open_cases"
                        " WHERE overdue_for IS NULL AND due_at < :now ORDER BY due_at LIMIT :n"
                        " FOR UPDATE SKIP LOCKED"
                    ),
                    {"now": now, "n": limit},
                )
            ).all()
            for row in rows:
                overdue = CaseOverdue(department_id=row.department_id, due_at=row.due_at)
                meta = EventMetadata(correlation_id=uuid7(), actor="router", channel=None)
                await self._store.append(tx, row.case_id, None, [overdue], meta)
                await tx.execute(
                    text("UPDATE router.open_cases SET overdue_for = due_at WHERE case_id = :c"), {"c": row.case_id}
                )
        if rows:
            log.info("cases overdue", count=len(rows))
        return len(rows)
