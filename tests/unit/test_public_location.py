"""The public case view: its location exact, as a hundred block, or not at all; its resolution plain text."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from civicflow.city import load_city
from civicflow.ids import uuid7
from civicflow.settings import SAMPLE_CITY
from services.query.cityfile import CityFile
from services.query.grpc_api import case_view
from services.query.projection import CaseRecord
from services.query.public import PublicPlace, hundred_block, public_place

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("address", "block"),
    [
        ("1234 W Madison St", "1200 block of W Madison St"),
        ("1299 w madison st.", "1200 block of w madison st"),
        ("12 Elm Street", "0 block of Elm Street"),
        ("  3100   N Example Ave ", "3100 block of N Example Ave"),
        ("1234-B W Madison St", "1200 block of W Madison St"),
        ("1234B W Madison St", "1200 block of W Madison St"),
        ("1234 1/2 W Madison St", "1200 block of W Madison St"),
        ("1234 W Madison St, Chicago, IL 60607", "1200 block of W Madison St"),
        ("1234 W Madison St Apt 5", "1200 block of W Madison St"),
        ("1234 W Madison St #3R", "1200 block of W Madison St"),
        ("1234 W Madison St Unit 2", "1200 block of W Madison St"),
        ("100 N 5th Ave", "100 block of N 5th Ave"),
        ("457 W 115th St", "400 block of W 115th St"),
        ("55 O'Brien Ct", "0 block of O'Brien Ct"),
    ],
)
def test_an_address_becomes_its_hundred_block(address: str, block: str) -> None:
    assert hundred_block(address) == block


@pytest.mark.parametrize(
    "address",
    [
        None,
        "",
        "Madison St & Wells St",  # an intersection: no house number
        "Apt 5, 1234 W Madison St",  # a unit first
        "Behind the library",
        "1234",
        "1234 W Madison St 60607",  # a post code left in the street
        "W Madison St 1234",
        "1234 <script> St",
        "12345678 Long Number Rd",
    ],
)
def test_an_address_it_cannot_read_gives_no_address(address: str | None) -> None:
    assert hundred_block(address) is None


def test_exact_is_as_given() -> None:
    assert public_place("exact", 41.881912, -87.627812, "1234 W Madison St") == PublicPlace(
        41.881912, -87.627812, "1234 W Madison St"
    )


def test_block_rounds_the_point_and_reduces_the_address() -> None:
    assert public_place("block", 41.881912, -87.627812, "1234 W Madison St, Apt 3") == PublicPlace(
        41.882, -87.628, "1200 block of W Madison St"
    )
    assert public_place("block", 41.881912, -87.627812, "my house") == PublicPlace(41.882, -87.628, "")
    assert public_place("block", None, None, "my house") is None


def test_hidden_is_nothing() -> None:
    assert public_place("hidden", 41.881912, -87.627812, "1234 W Madison St") is None


def record(service_code: str) -> CaseRecord:
    return CaseRecord(
        case_id=uuid7(),
        status="submitted",
        last_version=1,
        updated_at=NOW,
        tracking_number="QGPE-J5T",
        service_code=service_code,
        lat=41.881912,
        long=-87.627812,
        address="1234 W Madison St",
    )


def test_the_case_view_locates_each_service_as_the_sample_city_says() -> None:
    city = load_city(SAMPLE_CITY)
    pothole, pickup = record("POTHOLE"), record("MISSED_PICKUP")

    street = case_view(pothole, [], city.public_location("POTHOLE"))
    home = case_view(pickup, [], city.public_location("MISSED_PICKUP"))
    hidden = case_view(pickup, [], "hidden")

    assert (street.location.lat, street.location.address) == (41.881912, "1234 W Madison St")
    assert (home.location.lat, home.location.long, home.location.address) == (
        41.882,
        -87.628,
        "1200 block of W Madison St",
    )
    assert not hidden.HasField("location")
    assert "1234" not in str(home) and "1234" not in str(hidden)


def test_a_service_the_city_file_does_not_know_is_shown_by_block() -> None:
    assert load_city(SAMPLE_CITY).public_location("NOT_A_SERVICE") == "block"


def test_a_changed_city_file_applies_at_the_next_lookup_and_a_broken_one_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    path.write_text("jurisdiction: test\nservices:\n  MISSED_PICKUP: {name: Missed pickup, group: sanitation}\n")
    city = CityFile(path)
    assert city.current().public_location("MISSED_PICKUP") == "block"

    hidden = "{name: Missed pickup, group: sanitation, public_location: hidden}"
    path.write_text(f"jurisdiction: test\nservices:\n  MISSED_PICKUP: {hidden}\n")
    assert city.current().public_location("MISSED_PICKUP") == "hidden"

    path.write_text("- not a city file\n")
    assert city.current().public_location("MISSED_PICKUP") == "hidden", "the last good file stays in force"


def test_a_resolution_projected_before_the_notes_rule_is_shown_without_its_link() -> None:
    old = replace(record("POTHOLE"), status="resolved", resolution="Fixed, confirm at http://evil.example")
    assert case_view(old, [], "exact").resolution == "Fixed, confirm at [link removed]"
