"""The dry-run report a city reads: only the services that change (or all), columns that hold long codes,
and a CSV of the changed cases with their tracking numbers and submitted times."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from civicflow.cli import app
from civicflow.events import CaseNeedsTriage, CaseRouted, CaseSubmitted, Location
from services.router.dryrun import compare, first_decision
from services.router.dryrun_report import (
    CSV_COLUMNS,
    NO_RULE,
    TRIAGE,
    DryRunReport,
    changed_cases_csv,
    render_report,
    shortened,
)
from services.router.rulebook import load_rules
from tests.factories import recorded

LONG = "NOISE_COMMERCIAL_LOUD_MUSIC_PARTY_AFTER_MIDNIGHT_ON_A_WEEKDAY_NIGHT"[:64]
IMPORTED_AT = datetime(2019, 3, 1, 9, 30, tzinfo=UTC)  # a case from an old system, long before this one


def report() -> DryRunReport:
    r = DryRunReport("candidate-2", scope="cases submitted since 2019-01-01")
    r.add("7KQ2-M9X", "POTHOLE", IMPORTED_AT, ("streets", "streets"), ("streets", "streets"))
    r.add("7KQ2-M9Y", "POTHOLE", IMPORTED_AT, ("streets", "streets"), ("streets", "pothole-hazard"))
    r.add("7KQ2-M9Z", "NOISE", IMPORTED_AT, ("police", "noise-by-day"), (TRIAGE, NO_RULE))
    r.add("7KQ2-M9W", LONG, IMPORTED_AT + timedelta(hours=1), ("police", "noise"), ("environment", "loud-music"))
    return r


def test_the_totals_count_changed_and_same_department_cases() -> None:
    r = report()
    assert (r.cases, len(r.changed), r.same_department_other_rule) == (4, 2, 1)
    text = render_report(r)
    assert text.splitlines()[0] == (
        "rule set candidate-2 on 4 cases submitted since 2019-01-01: 2 would go to a different department;"
        " 1 would stay but be decided by another rule"
    )


def test_only_services_whose_cases_change_are_listed_unless_all_are_asked_for() -> None:
    text = render_report(report())
    table = _section(text, "service types whose cases change (changed / cases):")
    assert [line.split()[0] for line in table[:-1]] == ["NOISE", shortened(LONG)]
    assert "POTHOLE" not in "\n".join(table[:-1])
    assert table[-1] == "  (1 other service type unchanged; --all lists them)"
    every = _section(render_report(report(), show_all=True), "by service type (changed / cases):")
    assert sorted(line.split()[0] for line in every) == sorted(["NOISE", "POTHOLE", shortened(LONG)])
    assert any(line.split()[0] == "POTHOLE" and line.split()[1:] == ["0", "/", "2"] for line in every)


def test_nothing_changing_is_said_in_words() -> None:
    r = DryRunReport("same")
    r.add("7KQ2-M9X", "POTHOLE", IMPORTED_AT, ("streets", "streets"), ("streets", "streets"))
    assert "no service type's cases would change" in render_report(r)


def test_a_long_code_keeps_its_columns_and_is_cut_in_the_middle() -> None:
    table = _section(render_report(report()), "service types whose cases change (changed / cases):")[:-1]
    assert len({line.index("/") for line in table}) == 1, "the counts line up whatever the code's length"
    cut = shortened(LONG)
    assert len(cut) == 40 and cut.startswith(LONG[:20]) and cut.endswith(LONG[-19:]) and "…" in cut
    assert shortened("POTHOLE") == "POTHOLE"


@given(st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=200), min_size=1, max_size=8, unique=True))
@settings(max_examples=200, deadline=None)
def test_the_table_lines_up_for_any_codes(codes: list[str]) -> None:
    r = DryRunReport("any")
    for code in codes:
        r.add("7KQ2-M9X", code, IMPORTED_AT, ("a", "r1"), ("b", "r2"))
    table = _section(render_report(r), "service types whose cases change (changed / cases):")
    assert len(table) == len(codes), "one line per service, whatever its code holds"
    assert len({line.rindex(" / ") for line in table}) == 1
    assert all(len(line) <= 2 + 40 + 2 + 6 + 3 + 1 for line in table)


def test_the_csv_carries_the_tracking_number_the_submitted_time_and_the_whole_code() -> None:
    rows = list(csv.DictReader(io.StringIO(changed_cases_csv(report()))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["tracking_number"] for r in rows] == ["7KQ2-M9Z", "7KQ2-M9W"]
    assert rows[0]["submitted_at"] == "2019-03-01T09:30:00+00:00"
    assert (rows[0]["old_department"], rows[0]["new_department"], rows[0]["new_rule"]) == ("police", TRIAGE, NO_RULE)
    assert rows[1]["service_code"] == LONG


def test_a_cell_a_spreadsheet_would_run_is_written_as_text() -> None:
    r = DryRunReport("x")
    r.add("7KQ2-M9X", "POTHOLE", IMPORTED_AT, ("=HYPERLINK(1)", "r"), ("+streets", "r"))
    [row] = list(csv.DictReader(io.StringIO(changed_cases_csv(r))))
    assert (row["old_department"], row["new_department"]) == ("'=HYPERLINK(1)", "'+streets")


def test_write_csv_writes_what_changed_cases_csv_gives(tmp_path: Path) -> None:
    r = report()
    r.write_csv(tmp_path / "changed.csv")
    assert (tmp_path / "changed.csv").read_bytes() == changed_cases_csv(r).encode()


# --- a case's history compared ---------------------------------------------------------------------

FIXTURE = Path(__file__).parents[1] / "fixtures" / "city" / "rules.yaml"


def test_an_imported_case_is_compared_with_its_original_submitted_time() -> None:
    case_id = uuid4()
    submitted = CaseSubmitted(
        tracking_number="7KQ2-M9X",
        service_code="NOISE",
        description="fictional drilling",
        location=Location(lat=41.87, long=-87.68),
        submitted_at=IMPORTED_AT,
    )
    routed = CaseRouted(
        department_id="parks",
        department_name="Parks",
        priority="normal",
        due_at=None,
        rule_id="old-system",
        rule_set_version="imported",
    )
    r = DryRunReport("test-1")
    compare(
        r,
        load_rules(FIXTURE),
        [
            recorded(submitted, case_id=case_id, version=1, at=IMPORTED_AT),
            recorded(routed, case_id=case_id, version=2, at=IMPORTED_AT),
        ],
    )
    [changed] = r.changed
    assert (changed.submitted_at, changed.old_department, changed.new_department) == (IMPORTED_AT, "parks", "police")


def test_the_first_decision_is_the_one_made_at_submission() -> None:
    triage = CaseNeedsTriage(queue="q", reason="r", rule_set_version="1")
    assert first_decision([triage]) == (TRIAGE, NO_RULE)
    assert first_decision([]) is None


def _section(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((n for n in range(start, len(lines)) if not lines[n].startswith("  ")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("since", ["\x00", "2026-13-01", "", "yesterday" * 100_000, "2026-11-01\udcff"])
def test_a_wrong_since_is_refused_before_anything_is_read(since: str) -> None:
    result = CliRunner().invoke(app, ["rules", "dry-run", str(FIXTURE), "--since", since])
    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())  # as read, without rich's box and wrapping
    assert "is not a date like 2026-11-01" in said
    assert len(result.output) < 2000, "the value is quoted, not echoed whole"
