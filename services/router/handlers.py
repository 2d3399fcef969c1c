"""The router's policies: place new cases, reroute rejected or recategorised ones; and the overdue scan."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseOverdue,
    CaseRecategorised,
    CaseReopened,
    CaseResolved,
    CaseSubmitted,
    EventMetadata,
    RecordedEvent,
    ResolutionDisputed,
    RoutingDecision,
    WorkOrderReferred,
    WorkOrderRejected,
    imported_from,
)
from civicflow.eventstore import EventStore, StreamAppend
from civicflow.ids import uuid7
from civicflow.unit_of_work import Decision, Policy, Reads, Statement
from services.router.decide import reopen, reroute, route_new_case
from services.router.rulebook import RuleBook

log = structlog.get_logger(__name__)

ACTOR = "router"


_TRACK = text(
    "INSERT INTO router.open_cases (case_id, department_id, due_at) VALUES (:c, :d, :due)"
    " ON CONFLICT (case_id) DO UPDATE SET department_id = :d, due_at = :due, overdue_for = NULL"
)
_FORGET = text("DELETE FROM router.open_cases WHERE case_id = :c")


def track_open_case(case_id: UUID, decision: CaseEvent) -> list[Statement]:
    """Keep router.open_cases in step with the decision, in the same transaction. A case with no SLA is
    not tracked: it has no due date to pass."""
    if isinstance(decision, RoutingDecision) and decision.due_at is not None:
        return [Statement(_TRACK, {"c": case_id, "d": decision.department_id, "due": decision.due_at})]
    if isinstance(decision, RoutingDecision | CaseNeedsTriage):
        return [Statement(_FORGET, {"c": case_id})]
    return []


_TRACK_AGAIN = text(
    "INSERT INTO router.open_cases (case_id, department_id, due_at, overdue_for) VALUES (:c, :d, :due, :overdue)"
    " ON CONFLICT (case_id) DO UPDATE SET department_id = :d, due_at = :due, overdue_for = :overdue"
)


def track_reopened_case(case_id: UUID, history: Sequence[CaseEvent]) -> list[Statement]:
    """router.open_cases for a case its department reopened: the standing decision's due date, marked overdue
    already when CaseOverdue was recorded for that due date (it is recorded once per due date)."""
    standing = next((e for e in reversed(history) if isinstance(e, RoutingDecision | CaseNeedsTriage)), None)
    if not isinstance(standing, RoutingDecision) or standing.due_at is None:
        return []
    flagged = any(isinstance(e, CaseOverdue) and e.due_at == standing.due_at for e in history)
    row = {
        "c": case_id,
        "d": standing.department_id,
        "due": standing.due_at,
        "overdue": standing.due_at if flagged else None,
    }
    return [Statement(_TRACK_AGAIN, row)]


class Router:
    """The router's policies: each returns the decision for one event; the kernel records it."""

    def __init__(self, engine: AsyncEngine, store: EventStore, rules: RuleBook) -> None:
        self._engine = engine
        self._store = store
        self._rules = rules

    def policies(self) -> dict[str, Policy]:
        return {
            CaseSubmitted.event_type: self.on_submitted,
            WorkOrderRejected.event_type: self.on_reroute_trigger,
            WorkOrderReferred.event_type: self.on_reroute_trigger,
            CaseRecategorised.event_type: self.on_reroute_trigger,
            CaseReopened.event_type: self.on_reopened,
            CaseResolved.event_type: self.on_resolved,
            ResolutionDisputed.event_type: self.on_disputed,
        }

    async def on_submitted(self, event: RecordedEvent, reads: Reads) -> Decision:
        assert isinstance(event.data, CaseSubmitted)
        decision = route_new_case(self._rules.current, event.data, event.metadata.channel)
        # An imported past request is routed (on its original time) but never watched for being overdue.
        tracked = [] if event.data.imported else track_open_case(event.case_id, decision)
        return Decision(appends=[StreamAppend(event.case_id, None, [decision], event.caused(ACTOR))], writes=tracked)

    async def on_reroute_trigger(self, event: RecordedEvent, reads: Reads) -> Decision:
        """WorkOrderRejected, WorkOrderReferred or CaseRecategorised: back through the rules, without who turned
        it down (a referral: to the department it names, when the rule set has it)."""
        stream = await reads.stream(event.case_id)
        history = [e.data for e in stream if e.version <= event.version]
        channel = stream[0].metadata.channel if stream else None
        decision = reroute(self._rules.current, history, event.data, channel)
        if decision is None:
            log.info("rejection ignored: the case has moved on", case_id=str(event.case_id))
            return Decision()
        expected = stream[-1].version if stream else 0
        tracked = [] if imported_from(history) else track_open_case(event.case_id, decision)
        return Decision(
            appends=[StreamAppend(event.case_id, expected, [decision], event.caused(ACTOR))], writes=tracked
        )

    async def on_disputed(self, event: RecordedEvent, reads: Reads) -> Decision:
        """ResolutionDisputed: back to the department that resolved the case, as a CaseRerouted it reopens."""
        stream = await reads.stream(event.case_id)
        history = [e.data for e in stream if e.version <= event.version]
        channel = stream[0].metadata.channel if stream else None
        decision = reopen(self._rules.current, history, event.recorded_at, channel)
        if decision is None:
            log.info("dispute ignored: no resolution standing", case_id=str(event.case_id))
            return Decision()
        expected = stream[-1].version if stream else 0
        return Decision(
            appends=[StreamAppend(event.case_id, expected, [decision], event.caused(ACTOR))],
            writes=track_open_case(event.case_id, decision),
        )

    async def on_resolved(self, event: RecordedEvent, reads: Reads) -> Decision:
        return Decision(writes=[Statement(_FORGET, {"c": event.case_id})])

    async def on_reopened(self, event: RecordedEvent, reads: Reads) -> Decision:
        """CaseReopened: the department took its job up again, so the case is watched for its due date again
        (the standing decision's; once overdue for it already, not flagged a second time)."""
        stream = await reads.stream(event.case_id)
        history = [e.data for e in stream if e.version <= event.version]
        if imported_from(history) is not None:
            return Decision()
        return Decision(writes=track_reopened_case(event.case_id, history))

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
            if rows:
                await self._store.append_many(
                    tx,
                    [
                        StreamAppend(
                            row.case_id,
                            None,
                            [CaseOverdue(department_id=row.department_id, due_at=row.due_at)],
                            EventMetadata(correlation_id=uuid7(), actor=ACTOR, channel=None),
                        )
                        for row in rows
                    ],
                )
                await tx.execute(
                    text("UPDATE router.open_cases SET overdue_for = due_at WHERE case_id = ANY(:c)"),
                    {"c": [row.case_id for row in rows]},
                )
        if rows:
            log.info("cases overdue", count=len(rows))
        return len(rows)
