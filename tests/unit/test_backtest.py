"""Backtesting a candidate rule set on an old system's export: rows routed on their original time, agreement
with the old departments overall and per service, every disagreement listed, unusable rows counted."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from civicflow.cli import app
from civicflow.history import parse_mapping
from civicflow.history_export import read_export
from civicflow.settings import SAMPLE_CITY
from services.router.backtest import backtest
from services.router.rulebook import load_rules

RULES = load_rules(SAMPLE_CITY)
MAPPING = """
source: oldcrm
timezone: America/Chicago
columns: {external_id: ID, service: Type, description: Text, lat: Lat, long: Lon, submitted_at: Opened,
          department: Agency}
services: {"Animal Bite": ANIMAL_BITE, "Noise - Residential": NOISE_COMPLAINT, "Pothole in Street": POTHOLE}
departments: {"Animal Services": animals, "Code Enforcement": code, "Dept. of Streets": streets}
"""
HEADER = ["ID", "Type", "Text", "Lat", "Lon", "Opened", "Agency"]
ROWS = [
    # Saturday night, local time: the after-hours bite rule, which the old system agreed with
    ["SR-1", "Animal Bite", "bitten at the bus stop", "", "", "2026-03-14 23:30:00", "Animal Services"],
    # a loud party at 23:30 goes to the police now; the old system gave it to code enforcement
    ["SR-2", "Noise - Residential", "loud party", "41.86", "-87.65", "2026-03-16 23:30:00", "Code Enforcement"],
    # the same at 10:00 stays with code enforcement
    ["SR-3", "Noise - Residential", "jackhammer", "41.86", "-87.65", "2026-03-16 10:00:00", "Code Enforcement"],
    ["SR-4", "Pothole in Street", "deep", "41.91", "-87.69", "2026-03-16 10:00:00", "Streets & Sanitation"],
    ["SR-5", "Unknown Thing", "?", "", "", "2026-03-16 10:00:00", "Code Enforcement"],
    ["SR-6", "Pothole in Street", "deep", "", "", "2025-01-01 10:00:00", "Dept. of Streets"],
]


def export(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def test_the_report_says_how_often_the_candidate_agrees_with_the_old_departments(tmp_path: Path) -> None:
    rows = read_export(io.BytesIO(export(ROWS)), parse_mapping(MAPPING))

    report = backtest(RULES, rows, since=datetime(2026, 1, 1, tzinfo=UTC))

    assert (report.rows, report.routed, report.before_since) == (6, 3 + 1, 1)
    assert (report.compared, report.agreed) == (3, 2)
    assert report.by_service == {"ANIMAL_BITE": 1, "NOISE_COMPLAINT": 2}
    assert report.agreed_by_service == {"ANIMAL_BITE": 1, "NOISE_COMPLAINT": 1}
    assert report.rules_fired["animal-bite-after-hours"] == 1 and report.rules_fired["noise-at-night"] == 1
    assert report.moves == {("code", "police"): 1}
    assert report.no_old_department == {"Streets & Sanitation": 1}
    assert sum(report.unusable.values()) == 1 and "service" in next(iter(report.unusable))
    [differs] = report.disagreements
    assert (differs.external_id, differs.old_department, differs.new_department, differs.rule_id) == (
        "SR-2",
        "code",
        "police",
        "noise-at-night",
    )
    report.write_csv(tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines == [
        ["external_id", "service_code", "submitted_at", "old_department", "new_department", "rule"],
        ["SR-2", "NOISE_COMPLAINT", "2026-03-16T23:30:00-05:00", "code", "police", "noise-at-night"],
    ]
    printed = "\n".join(report.summary_lines())
    assert "agrees with the old system's department on 2 of 3 rows (66.7%)" in printed
    assert "code -> police: 1" in printed


def test_rules_dry_run_from_csv_needs_no_database(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_bytes(export(ROWS))
    (tmp_path / "map.yaml").write_text(MAPPING)
    out = tmp_path / "differs.csv"
    args = ["rules", "dry-run", str(SAMPLE_CITY), "--since", "2026-01-01", "--from-csv", str(tmp_path / "old.csv")]
    args += ["--mapping", str(tmp_path / "map.yaml"), "--csv", str(out)]

    result = CliRunner().invoke(app, args, env={"CIVICFLOW_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/x"})

    assert result.exit_code == 0, result.output
    assert "agrees with the old system's department on 2 of 3 rows" in result.output
    assert out.read_text().count("\n") == 2


def test_rules_dry_run_from_csv_says_what_is_wrong_with_the_mapping(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_bytes(export(ROWS))
    (tmp_path / "map.yaml").write_text(MAPPING.replace("America/Chicago", "Chicago"))
    args = ["rules", "dry-run", str(SAMPLE_CITY), "--since", "2026-01-01", "--from-csv", str(tmp_path / "old.csv")]

    missing = CliRunner().invoke(app, args)
    broken = CliRunner().invoke(app, [*args, "--mapping", str(tmp_path / "map.yaml")])

    assert missing.exit_code == 2 and "--mapping" in missing.output
    assert broken.exit_code == 1 and "timezone" in broken.output and "nothing was compared" in broken.output
