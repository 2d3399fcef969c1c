"""Backtest a candidate rule set on cases already submitted: what would change, and which rules fire.

Reads the event store in a read-only transaction; writes nothing anywhere but the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, time, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import CaseEvent, CaseNeedsTriage, CaseSubmitted, RecordedEvent, RoutingDecision
from civicflow.eventstore import PostgresEventStore
from services.router.decide import facts_of
from services.router.dryrun_report import NO_RULE, TRIAGE, ChangedCase, DryRunReport
from services.router.engine import CompiledRuleSet, Routed

__all__ = ["ChangedCase", "DryRunReport", "compare", "dry_run", "first_decision"]

_TYPES = ("CaseSubmitted", "CaseRouted", "CaseNeedsTriage")


def first_decision(history: Sequence[CaseEvent]) -> tuple[str, str] | None:
    """(department, rule) the live rules gave the case when it was submitted, or None if not yet routed."""
    for event in history:
        if isinstance(event, RoutingDecision):
            return event.department_id, event.rule_id
        if isinstance(event, CaseNeedsTriage):
            return TRIAGE, NO_RULE
    return None


def compare(report: DryRunReport, candidate: CompiledRuleSet, case: list[RecordedEvent]) -> None:
    history = [e.data for e in case]
    submitted = history[0]
    if not isinstance(submitted, CaseSubmitted):
        return
    before = first_decision(history)
    if before is None:
        return  # not routed yet: nothing to compare with
    decision = candidate.route(facts_of(history, case[0].metadata.channel))
    after = (decision.department_id, decision.rule_id) if isinstance(decision, Routed) else (TRIAGE, NO_RULE)
    report.add(submitted.tracking_number, submitted.service_code, submitted.submitted_at, before, after)


async def dry_run(
    engine: AsyncEngine,
    candidate: CompiledRuleSet,
    since: datetime,
    on_total: Callable[[int], None] = lambda _: None,
    on_case: Callable[[], None] = lambda: None,
) -> DryRunReport:
    """The candidate's decisions for every case whose stream began at or after `since` (its first
    event's occurred_at: for history imported from an old system, the time it was first submitted there)."""
    store = PostgresEventStore()
    from_day = since.time() == time(0) and since.utcoffset() == timedelta(0)
    report = DryRunReport(
        candidate.version, scope=f"cases submitted since {since:%Y-%m-%d{'' if from_day else ' %H:%M %Z'}}"
    )
    async with engine.connect() as conn, conn.begin():
        await conn.execute(text("SET TRANSACTION READ ONLY"))  # the database itself refuses any write
        on_total(await store.count_streams_opened_since(conn, since))
        async for case in store.streams_opened_since(conn, since, _TYPES):
            compare(report, candidate, case)
            on_case()
    return report
