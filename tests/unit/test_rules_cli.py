"""`civicflow rules check` as a city analyst uses it: a mistake is explained, a good file says OK."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from civicflow.cli import app
from services.router.main import DEFAULT_CITY

runner = CliRunner()


def test_the_sample_city_checks_out() -> None:
    result = runner.invoke(app, ["rules", "check", str(DEFAULT_CITY)])
    assert result.exit_code == 0, result.output
    assert "53 services" in result.output and result.output.strip().endswith("OK")


def test_a_mistake_is_explained_with_where_it_is_and_nothing_is_loaded(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_CITY.parent, tmp_path / "city")
    path = tmp_path / "city" / DEFAULT_CITY.name
    text = path.read_text()
    assert "department: water" in text
    path.write_text(text.replace("department: water", "department: waterworks", 1))
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 1
    assert "refused; nothing was loaded" in result.output
    assert "then.department 'waterworks' is not defined" in result.output


def test_an_unreachable_rule_fails_the_check(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_CITY.parent, tmp_path / "city")
    path = tmp_path / "city" / DEFAULT_CITY.name
    text = path.read_text()
    catch_all = "rules:\n  - id: everything-first\n    description: a catch-all put first by mistake\n"
    catch_all += "    then: {department: triage, sla: {calendar_days: 1}}\n"
    path.write_text(text.replace("rules:\n", catch_all, 1))
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 1
    assert "can never fire: rule everything-first comes first" in result.output


def test_a_catalogue_named_in_words_or_listed_twice_is_refused_with_the_codes_to_write(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_CITY.parent, tmp_path / "city")
    path = tmp_path / "city" / DEFAULT_CITY.name
    text = path.read_text()
    pothole = "  POTHOLE: {name: Pothole, group: streets, public_location: exact}\n"
    assert pothole in text
    line = text[: text.index(pothole)].count("\n") + 1
    added = "  Noise - Street/Sidewalk: {name: Noise, group: police}\n  NO: {name: Norway, group: police}\n"
    path.write_text(text.replace(pothole, pothole * 2 + added, 1))
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 1
    assert "refused; nothing was loaded" in result.output
    assert f"services: POTHOLE is defined twice (lines {line} and {line + 1})" in result.output
    assert "'Noise - Street/Sidewalk' is not a service code" in result.output
    assert "write 'NOISE_STREET_SIDEWALK'" in result.output
    assert "YAML read this service code as false" in result.output
