"""The case view says where its point came from: given, geocoded from the address, or why there is none."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from civicflow.cli.calltaker import _point_line
from civicflow.events import CaseSubmitted, Location
from services.query.grpc_api import case_view
from services.query.projection import apply
from tests.factories import recorded

AT = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
UNPLACED = "no street of that name in the city's address file; check the street's spelling"


def submitted(location: Location | None) -> CaseSubmitted:
    return CaseSubmitted(
        tracking_number="ABCD-EFG", service_code="POTHOLE", description="deep", location=location, submitted_at=AT
    )


@pytest.mark.parametrize(
    ("location", "point_source", "unplaced", "printed"),
    [
        (Location(lat=41.9, long=-87.61, point_source="given"), "given", "", "point: given with the request"),
        (
            Location(lat=41.887, long=-87.6099, address="110 N Example Ave", point_source="geocoded"),
            "geocoded",
            "",
            "point: geocoded from the address",
        ),
        (Location(address="9 Nowhere Rd", unplaced=UNPLACED), "", UNPLACED, f"point: could not be placed: {UNPLACED}"),
        (Location(lat=41.9, long=-87.61), "given", "", "point: given with the request"),  # recorded before the field
    ],
)
def test_the_view_and_the_call_takers_track_say_where_the_point_came_from(
    location: Location, point_source: str, unplaced: str, printed: str
) -> None:
    record, _ = apply(None, recorded(submitted(location), case_id=uuid4(), version=1, at=AT))
    view = case_view(record, [], "exact")
    assert (view.point_source, view.unplaced) == (point_source, unplaced)
    assert _point_line(view.point_source, view.unplaced) == printed


def test_a_case_without_a_place_or_with_a_hidden_one_says_nothing_of_a_point() -> None:
    record, _ = apply(None, recorded(submitted(None), case_id=uuid4(), version=1, at=AT))
    assert (record.point_source, record.unplaced) == (None, None)
    view = case_view(record, [], "exact")
    assert (view.point_source, view.unplaced, view.HasField("location")) == ("", "", False)
    geocoded = Location(lat=41.887, long=-87.6099, address="110 N Example Ave", point_source="geocoded")
    hidden, _ = apply(None, recorded(submitted(geocoded), case_id=uuid4(), version=1, at=AT))
    assert case_view(hidden, [], "hidden").point_source == ""
    assert _point_line("", "") == ""
