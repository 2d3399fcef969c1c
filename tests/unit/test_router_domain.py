"""The service-code table: every case gets a department and a due date, or goes to triage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from civicflow.events import CaseNeedsTriage, CaseRouted, CaseSubmitted, Location
from services.router.domain import CatalogueError, load_catalogue, route_case
from services.router.main import DEFAULT_CITY

CITY = load_catalogue(DEFAULT_CITY)
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def case(code: str) -> CaseSubmitted:
    return CaseSubmitted(
        tracking_number="QGPE-J5T",
        service_code=code,
        description="x",
        location=Location(address="1 Main St"),
        submitted_at=NOW,
    )


def test_a_known_service_goes_to_its_department_with_its_due_date() -> None:
    decision = route_case(CITY, case("POTHOLE"))
    assert isinstance(decision, CaseRouted)
    assert decision.department_id == "streets"
    assert decision.due_at == NOW + timedelta(days=5)
    assert decision.rule_id == "service:POTHOLE" and decision.rule_set_version == CITY.version
    assert "Public Works - Streets" in decision.explanation[0]


def test_an_unknown_service_goes_to_triage_never_nowhere() -> None:
    decision = route_case(CITY, case("UFO_SIGHTING"))
    assert isinstance(decision, CaseNeedsTriage)
    assert decision.queue == "call-centre-triage"
    assert "UFO_SIGHTING" in decision.reason


@given(st.text(min_size=1, max_size=20))
def test_every_case_gets_exactly_one_outcome_and_due_dates_never_precede_submission(code: str) -> None:
    decision = route_case(CITY, case(code))
    assert isinstance(decision, CaseRouted | CaseNeedsTriage)
    if isinstance(decision, CaseRouted):
        assert decision.due_at > NOW


def test_a_catalogue_naming_an_undefined_department_is_refused_with_the_file_and_name(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    path.write_text(
        "version: '1'\njurisdiction: x\ndepartments: {streets: {name: Streets}}\n"
        "services: {POTHOLE: {name: Pothole, department: roads, sla_days: 5}}\n"
    )
    with pytest.raises(CatalogueError, match=r"city.yaml: .*roads"):
        load_catalogue(path)


def test_a_negative_sla_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    path.write_text(
        "version: '1'\njurisdiction: x\ndepartments: {streets: {name: Streets}}\n"
        "services: {POTHOLE: {name: Pothole, department: streets, sla_days: -1}}\n"
    )
    with pytest.raises(CatalogueError, match=r"services.POTHOLE.sla_days"):
        load_catalogue(path)
