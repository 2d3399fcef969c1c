"""Backtest a candidate rule set on an old system's export before going live (`rules dry-run --from-csv`): each
row the import mapping reads is routed by the candidate on its original time, and the report says how often
the candidate sends it where the old system did (overall and per service type), with every disagreement.

Pure: rows come from `civicflow.history` (the import's own reading); the router checks only what routing
needs and does not use intake's validation, so a row intake would refuse for other reasons is still compared.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from civicflow.codes import CODE
from civicflow.geocode import Geocoder, Placed
from civicflow.history_export import HistoricalRow, RowRefused
from services.router.engine import CaseFacts, CompiledRuleSet, Routed

TRIAGE = "(no rule: triage)"


@dataclass(frozen=True)
class Disagreement:
    external_id: str
    service_code: str
    submitted_at: datetime
    old_department: str
    new_department: str
    rule_id: str


@dataclass
class BacktestReport:
    rule_set_version: str
    rows: int = 0  # rows read from the export
    routed: int = 0  # rows the candidate placed (with a department or in triage)
    before_since: int = 0
    compared: int = 0  # routed rows whose old department the mapping names
    agreed: int = 0
    unusable: Counter[str] = field(default_factory=Counter)  # why a row could not be routed
    no_old_department: Counter[str] = field(default_factory=Counter)  # the agency as written, or "(blank)"
    by_service: Counter[str] = field(default_factory=Counter)  # compared rows per service
    agreed_by_service: Counter[str] = field(default_factory=Counter)
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (old department, new department)
    rules_fired: Counter[str] = field(default_factory=Counter)
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agreed / self.compared if self.compared else 0.0

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["external_id", "service_code", "submitted_at", "old_department", "new_department", "rule"])
            for d in self.disagreements:
                writer.writerow(
                    [
                        _plain(d.external_id),
                        d.service_code,
                        d.submitted_at.isoformat(),
                        d.old_department,
                        d.new_department,
                        d.rule_id,
                    ]
                )

    def summary_lines(self) -> list[str]:
        """The report as the command prints it."""
        lines = [
            f"rule set {self.rule_set_version} on {self.rows} rows of the export:"
            f" {self.routed} routed, {self.before_since} before --since, {sum(self.unusable.values())} not usable",
            f"agrees with the old system's department on {self.agreed} of {self.compared} rows"
            f" ({self.agreement:.1%}); {sum(self.no_old_department.values())} routed rows had no old department"
            " the mapping names",
        ]
        if self.by_service:
            lines.append("\nby service type (agree / compared):")
            for code, total in sorted(self.by_service.items()):
                share = self.agreed_by_service[code] / total
                lines.append(f"  {code:<24} {self.agreed_by_service[code]:>6} / {total:<6} {share:>6.1%}")
        if self.moves:
            lines.append("\nwhere they differ (old department -> candidate's: rows):")
            lines.extend(f"  {old} -> {new}: {count}" for (old, new), count in self.moves.most_common(15))
        if self.rules_fired:
            lines.append("\nrules that would fire:")
            lines.extend(f"  {rule:<32} {count}" for rule, count in self.rules_fired.most_common())
        if self.unusable:
            lines.append("\nrows not usable for routing:")
            lines.extend(f"  {count:>6}  {why}" for why, count in self.unusable.most_common(10))
        if self.no_old_department:
            lines.append("\nold agencies the mapping's departments do not name (add them to compare those rows):")
            lines.extend(f"  {count:>6}  {agency}" for agency, count in self.no_old_department.most_common(10))
        return lines


def facts_of_row(row: HistoricalRow, geocoder: Geocoder | None = None) -> CaseFacts | str:
    """What routing needs from a mapped row, or why the row cannot be routed (the light checks the router
    needs: a service code, a point that is a real one; no intake validation). An address without a point is
    placed by the geocoder, as intake places it."""
    request: dict[str, Any] = row.request
    code = request.get("service_code")
    if not isinstance(code, str) or not CODE.match(code):
        return "service: not a service code"
    location = request.get("location") or {}
    lat, long = location.get("lat"), location.get("long")
    if (lat is None) != (long is None):
        lat = long = None  # half a point is no point; area rules just do not match
    if lat is not None and long is not None:
        if not (math.isfinite(lat) and math.isfinite(long) and -90 <= lat <= 90 and -180 <= long <= 180):
            return "location: not a point on Earth"
        if lat == 0 and long == 0:
            lat = long = None
    unplaced = None
    address = location.get("address")
    if lat is None and isinstance(address, str) and address and geocoder is not None:
        found = geocoder.locate(address)
        if isinstance(found, Placed):
            lat, long = found.lat, found.long
        else:
            unplaced = found.reason
    attributes = request.get("attributes") or {}
    return CaseFacts(
        service_code=code,
        description=str(request.get("description") or ""),
        submitted_at=row.submitted_at,
        lat=lat,
        long=long,
        attributes=dict(attributes),
        flags=frozenset(),
        channel=request.get("channel"),
        unplaced=unplaced,
    )


def backtest(
    candidate: CompiledRuleSet,
    rows: Iterable[HistoricalRow | RowRefused],
    since: datetime | None = None,
    geocoder: Geocoder | None = None,
) -> BacktestReport:
    """Route every usable row submitted at or after `since` with the candidate, against its old department."""
    report = BacktestReport(candidate.version)
    for row in rows:
        report.rows += 1
        if isinstance(row, RowRefused):
            why = row.reason.split(" (column ", 1)[0] if row.field != "row" else row.reason.split(":", 1)[0]
            report.unusable[f"{row.field}: {why}"[:120]] += 1
            continue
        if since is not None and row.submitted_at < since:
            report.before_since += 1
            continue
        facts = facts_of_row(row, geocoder)
        if isinstance(facts, str):
            report.unusable[facts] += 1
            continue
        decision = candidate.route(facts)
        if isinstance(decision, Routed):
            new, rule = decision.department_id, decision.rule_id
        else:  # no rule placed it: the call centre's triage department has it, as in the old system's 311 desk
            new, rule = candidate.rule_set.triage.department, TRIAGE
        report.routed += 1
        report.rules_fired[rule] += 1
        old = row.old_department
        if old is None:
            report.no_old_department[_plain(row.old_agency or "(blank)")[:60]] += 1
            continue
        report.compared += 1
        report.by_service[facts.service_code] += 1
        if old == new:
            report.agreed += 1
            report.agreed_by_service[facts.service_code] += 1
        else:
            report.moves[(old, new)] += 1
            report.disagreements.append(
                Disagreement(row.external_id, facts.service_code, row.submitted_at, old, new, rule)
            )
    return report


def _plain(text: str) -> str:
    """Text from the export as a report line may show it: control characters escaped."""
    return text if text.isprintable() else repr(text)
