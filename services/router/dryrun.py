"""Backtest a candidate rule set on cases already submitted: what would change, and which rules fire.

Reads the event store in a read-only transaction; writes nothing anywhere but the report.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import CaseEvent, CaseNeedsTriage, CaseSubmitted, RecordedEvent, RoutingDecision
from civicflow.eventstore import PostgresEventStore
from services.router.decide import facts_of
from services.router.engine import CompiledRuleSet, Routed

TRIAGE = "(triage)"
_TYPES = ("CaseSubmitted", "CaseRouted", "CaseNeedsTriage")


@dataclass(frozen=True)
class ChangedCase:
    tracking_number: str
    service_code: str
    submitted_at: datetime
    old_department: str
    new_department: str
    old_rule: str
    new_rule: str


@dataclass
class DryRunReport:
    rule_set_version: str
    cases: int = 0
    changed: list[ChangedCase] = field(default_factory=list)
    same_department_other_rule: int = 0
    by_service: Counter[str] = field(default_factory=Counter)
    changed_by_service: Counter[str] = field(default_factory=Counter)
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (from department, to department)
    rules_fired: Counter[str] = field(default_factory=Counter)

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "tracking_number",
                    "service_code",
                    "submitted_at",
                    "old_department",
                    "new_department",
                    "old_rule",
                    "new_rule",
                ]
            )
            for c in self.changed:
                writer.writerow(
                    [
                        c.tracking_number,
                        c.service_code,
                        c.submitted_at.isoformat(),
                        c.old_department,
                        c.new_department,
                        c.old_rule,
                        c.new_rule,
                    ]
                )


def first_decision(history: Sequence[CaseEvent]) -> tuple[str, str] | None:
    """(department, rule) the live rules gave the case when it was submitted, or None if not yet routed."""
    for event in history:
        if isinstance(event, RoutingDecision):
            return event.department_id, event.rule_id
        if isinstance(event, CaseNeedsTriage):
            return TRIAGE, "(no rule)"
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
    after = (decision.department_id, decision.rule_id) if isinstance(decision, Routed) else (TRIAGE, "(no rule)")
    report.cases += 1
    report.by_service[submitted.service_code] += 1
    report.rules_fired[after[1]] += 1
    if after[0] == before[0] and after[1] != before[1]:
        report.same_department_other_rule += 1
    if after[0] != before[0]:
        report.changed_by_service[submitted.service_code] += 1
        report.moves[(before[0], after[0])] += 1
        report.changed.append(
            ChangedCase(
                submitted.tracking_number,
                submitted.service_code,
                submitted.submitted_at,
                before[0],
                after[0],
                before[1],
                after[1],
            )
        )


async def dry_run(
    engine: AsyncEngine,
    candidate: CompiledRuleSet,
    since: datetime,
    on_total: Callable[[int], None] = lambda _: None,
    on_case: Callable[[], None] = lambda: None,
) -> DryRunReport:
    store = PostgresEventStore()
    report = DryRunReport(candidate.version)
    async with engine.connect() as conn, conn.begin():
        await conn.execute(text("SET TRANSACTION READ ONLY"))  # the database itself refuses any write
        on_total(await store.count_streams_opened_since(conn, since))
        async for case in store.streams_opened_since(conn, since, _TYPES):
            compare(report, candidate, case)
            on_case()
    return report
