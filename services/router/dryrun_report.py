"""What a dry run found, as a city reads it: the summary table and the CSV of cases that would change.

Pure: a `DryRunReport` is filled one compared case at a time (`add`), by the replay of the event store
(`dryrun.py`) or by anything else that knows each case's old and new department; `render_report` and
`changed_cases_csv` turn it into text.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

TRIAGE = "(triage)"
NO_RULE = "(no rule)"
CSV_COLUMNS = (
    "tracking_number",
    "service_code",
    "submitted_at",
    "old_department",
    "new_department",
    "old_rule",
    "new_rule",
)
WIDEST_CODE = 40  # a longer name is cut in the middle in the table; the CSV keeps it whole
_SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ChangedCase:
    tracking_number: str
    service_code: str
    submitted_at: datetime  # when the resident submitted it (for imported history, the old system's time)
    old_department: str
    new_department: str
    old_rule: str
    new_rule: str


@dataclass
class DryRunReport:
    rule_set_version: str
    scope: str = ""  # which cases, in words: "cases submitted since 2026-11-01"
    cases: int = 0
    changed: list[ChangedCase] = field(default_factory=list)
    same_department_other_rule: int = 0
    by_service: Counter[str] = field(default_factory=Counter)
    changed_by_service: Counter[str] = field(default_factory=Counter)
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (from department, to department)
    rules_fired: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        tracking_number: str,
        service_code: str,
        submitted_at: datetime,
        before: tuple[str, str],
        after: tuple[str, str],
    ) -> None:
        """One case compared: (department, rule) as it was decided, and as the candidate decides it
        (TRIAGE and NO_RULE for a case no rule places)."""
        self.cases += 1
        self.by_service[service_code] += 1
        self.rules_fired[after[1]] += 1
        if after[0] == before[0]:
            if after[1] != before[1]:
                self.same_department_other_rule += 1
            return
        self.changed_by_service[service_code] += 1
        self.moves[(before[0], after[0])] += 1
        self.changed.append(
            ChangedCase(tracking_number, service_code, submitted_at, before[0], after[0], before[1], after[1])
        )

    def write_csv(self, path: Path) -> None:
        path.write_text(changed_cases_csv(self), newline="")


def changed_cases_csv(report: DryRunReport) -> str:
    """One row per case that would go to another department, with its tracking number and the time the
    resident submitted it. A cell that a spreadsheet would run as a formula is written as text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for c in report.changed:
        row = (
            c.tracking_number,
            c.service_code,
            c.submitted_at.isoformat(),
            c.old_department,
            c.new_department,
            c.old_rule,
            c.new_rule,
        )
        writer.writerow([_as_text(cell) for cell in row])
    return out.getvalue()


def _as_text(cell: str) -> str:
    return f"'{cell}" if cell.startswith(_SPREADSHEET_FORMULA) else cell


def shortened(name: str, width: int = WIDEST_CODE) -> str:
    """name as one table cell: characters that would break the line or move the cursor shown as "?", and
    its start and end around an ellipsis when it is wider than width (long codes often differ only at
    the end: …_STREET, …_SIDEWALK, so both ends stay)."""
    name = "".join(ch if ch.isprintable() else "?" for ch in name)
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return f"{name[: width - 1 - tail]}…{name[len(name) - tail :]}"


def render_report(report: DryRunReport, show_all: bool = False) -> str:
    """The summary a city reads: totals, then by service type the changed and total cases (only services
    whose cases change unless show_all), the moves between departments and the rules that would fire."""
    lines = [
        f"rule set {report.rule_set_version} on {report.cases} {report.scope or 'cases'}:"
        f" {len(report.changed)} would go to a different department;"
        f" {report.same_department_other_rule} would stay but be decided by another rule",
        "",
    ]
    services = sorted(report.by_service if show_all else report.changed_by_service)
    if services:
        which = "by service type" if show_all else "service types whose cases change"
        lines.append(f"{which} (changed / cases):")
        width = max(len(shortened(code)) for code in services)
        for code in services:
            lines.append(
                f"  {shortened(code):<{width}}  {report.changed_by_service[code]:>6} / {report.by_service[code]}"
            )
        if not show_all and (unchanged := len(report.by_service) - len(services)):
            kinds = "service type" if unchanged == 1 else "service types"
            lines.append(f"  ({unchanged} other {kinds} unchanged; --all lists them)")
    else:
        lines.append("no service type's cases would change")
    if report.moves:
        lines += ["", "by department (from -> to: cases):"]
        width = max(len(shortened(old)) for old, _ in report.moves)
        for (old, new), count in report.moves.most_common():
            lines.append(f"  {shortened(old):<{width}} -> {shortened(new)}: {count}")
    if report.rules_fired:
        lines += ["", "rules that would fire:"]
        width = max(len(shortened(rule)) for rule in report.rules_fired)
        for rule_id, count in report.rules_fired.most_common():
            lines.append(f"  {shortened(rule_id):<{width}}  {count:>6}")
    return "\n".join(lines)
