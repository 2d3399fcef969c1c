"""`civicflow import` refusing to start, as a user meets it: a broken mapping, a file that lacks a column,
a database that does not answer; each says what to do, and nothing is imported."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from civicflow.cli import app

MAPPING = """
source: oldcrm
timezone: America/Chicago
columns: {external_id: ID, service: Type, description: Text, address: Address, submitted_at: Opened}
services: {"Pothole in Street": POTHOLE}
"""
EXPORT = "ID,Type,Text,Address,Opened\r\nSR-1,Pothole in Street,deep,1200 N Main St,2026-03-14 23:30:00\r\n"
NO_DATABASE = {"CIVICFLOW_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}


def run(tmp_path: Path, mapping: str = MAPPING, export: str = EXPORT) -> tuple[int, str]:
    (tmp_path / "map.yaml").write_text(mapping)
    (tmp_path / "old.csv").write_text(export)
    args = ["import", str(tmp_path / "old.csv"), "--mapping", str(tmp_path / "map.yaml")]
    args += ["--refused", str(tmp_path / "refused.csv")]
    result = CliRunner().invoke(app, args, env={**NO_DATABASE, "CIVICFLOW_STATE_DIR": str(tmp_path)})
    return result.exit_code, result.output


def test_a_broken_mapping_is_explained_by_field_and_line(tmp_path: Path) -> None:
    code, printed = run(tmp_path, MAPPING.replace("America/Chicago", "Chicago"))
    assert code == 1 and "map.yaml: refused" in printed and "timezone (line 3)" in printed


def test_a_file_without_a_mapped_column_imports_nothing(tmp_path: Path) -> None:
    code, printed = run(tmp_path, export=EXPORT.replace("Opened", "Created"))
    assert code == 1 and "does not have: Opened" in printed and "nothing was imported" in printed


def test_a_database_that_does_not_answer_says_to_run_the_command_again(tmp_path: Path) -> None:
    code, printed = run(tmp_path)
    assert code == 1 and "the database stopped the import" in printed and "run the same command again" in printed


def test_a_file_saved_with_cr_alone_line_ends_says_how_to_save_it(tmp_path: Path) -> None:
    code, printed = run(tmp_path, export=EXPORT.replace("\r\n", "\r"))
    assert code == 1 and "save it again with CRLF (Windows) or LF line ends" in printed
    assert "universal-newline" not in printed
