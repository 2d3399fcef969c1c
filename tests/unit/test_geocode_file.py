"""Reading a city's address-point CSV as cities publish it: odd headers, a BOM, blanks and bad rows."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from civicflow.address_file import AddressFileError, digest_of, read_address_file
from civicflow.addresses import Street
from civicflow.city import load_city
from civicflow.settings import SAMPLE_CITY

AREA = load_city(SAMPLE_CITY).service_area


def test_headers_in_any_case_and_spelling_a_bom_blank_lines_and_spaces_are_fine() -> None:
    content = (
        "\ufeffOBJECTID, Full_Address ,LAT,LNG,Landmark\r\n"
        "1, 110  N EXAMPLE AVE ,41.887, -87.6099,\r\n"
        "\r\n"
        ",,,,\r\n"
        "2,121 N 2ND AVE,41.8866,-87.6405,City Hall\r\n"
    ).encode()
    found = read_address_file(content, AREA)
    assert found.refused == [] and found.blank == 2
    first, hall = found.points
    assert (first.address, first.number, first.street) == ("110 N EXAMPLE AVE", 110, Street("n", "example", "ave", ""))
    assert (hall.name, hall.lat, hall.long) == ("City Hall", 41.8866, -87.6405)
    assert found.rows == [2, 5]


@pytest.mark.parametrize(
    ("header", "options"),
    [
        ("Address,Latitude,Longitude", {}),
        ("ADDRESS,Y,X", {}),
        ("addr,lat,lon", {}),
        ("site,northing,easting", {"address_column": "SITE", "lat_column": "northing", "long_column": "Easting"}),
    ],
)
def test_columns_are_found_by_their_usual_names_or_named_on_the_command_line(
    header: str, options: dict[str, str]
) -> None:
    found = read_address_file(f"{header}\n110 N Example Ave,41.887,-87.6099\n".encode(), AREA, **options)
    assert len(found.points) == 1


def test_a_file_without_the_columns_says_which_are_missing_and_what_it_has() -> None:
    with pytest.raises(
        AddressFileError, match="no column for the address, latitude and longitude; the file's columns are"
    ):
        read_address_file(b"street,where\n1 Main St,here\n", AREA)
    with pytest.raises(AddressFileError, match="no column 'geo_lat' for the latitude"):
        read_address_file(b"address,lat,long\n", AREA, lat_column="geo_lat")
    with pytest.raises(AddressFileError, match="empty"):
        read_address_file(b"", AREA)


def test_bad_rows_are_refused_with_their_row_number_and_why_and_the_rest_load() -> None:
    rows = [
        "address,lat,long,name",
        "110 N Example Ave,41.887,-87.6099,",  # 2: fine
        ",41.887,-87.6099,",  # 3
        "165 N Example Ave,north,-87.6099,",  # 4
        "220 N Example Ave,NaN,inf,",  # 5
        "330 N Example Ave,95,-87.6099,",  # 6
        "440 N Example Ave,40.0,-87.6099,",  # 7: outside the city
        "Somewhere nice,41.887,-87.6099,",  # 8: no house number, no name
        "110 n example avenue,41.8871,-87.6099,",  # 9: row 2 again, written otherwise
        "550 N Example Ave,41.89",  # 10: short
        "660 N Example Ave\x01,41.89,-87.61,",  # 11
        "x" * 301 + ",41.89,-87.61,",  # 12
    ]
    found = read_address_file("\n".join(rows).encode(), AREA)
    assert len(found.points) == 1
    assert found.refused == [
        (3, "has no address"),
        (4, "latitude is not a number"),
        (5, "latitude is not a finite number; longitude is not a finite number"),
        (6, "latitude is not between -90 and 90"),
        (7, "the point is outside Sample City's service area"),
        (8, "the address has no house number and street, and the row no place name"),
        (9, "the same address as row 2"),
        (10, "has 2 columns; the address, latitude and longitude need 3"),
        (11, "has control characters in its address, coordinates or place name"),
        (12, "the address is over 300 characters"),
    ]
    assert "row 4: latitude is not a number" in found.report()


def test_only_the_columns_read_are_checked_and_non_breaking_spaces_are_spaces() -> None:
    content = (
        "address,lat,long,name,notes\n"
        '110\u00a0N\u00a0Example Ave,41.887,\u00a0-87.6099,,"a fictional note\nover two lines\x07"\n'
        "165 N Example Ave,41.888,-87.6099,Example\u00a0Hall\u00a0,\x00\n"
        "220 N Example Ave,41.889,-87.6099\x1b,,\n"
    ).encode()
    found = read_address_file(content, AREA)
    assert [(p.address, p.name) for p in found.points] == [
        ("110 N Example Ave", None),
        ("165 N Example Ave", "Example Hall"),
    ]
    assert found.points[0].street == Street("n", "example", "ave", "")
    assert found.refused == [(4, "has control characters in its address, coordinates or place name")]
    notes_unreadable = b"address,lat,long,notes\n110 N Example Ave,41.887,-87.6099,caf\xe9\n"
    assert len(read_address_file(notes_unreadable, AREA).points) == 1


def test_the_digest_is_the_same_whoever_loads_the_file_with_its_usual_columns() -> None:
    content = b"address,lat,long\n110 N Example Ave,41.887,-87.6099\n"
    assert digest_of(content) == digest_of(content, (None, None, None, None))  # civicflow dev, the CLI
    assert digest_of(content, ("address", None, None, None)) != digest_of(content)
    assert digest_of(content + b"\n") != digest_of(content)


def test_invalid_utf8_costs_its_row_and_an_endless_field_stops_the_file_saying_where() -> None:
    found = read_address_file(
        b"address,lat,long\n110 N Ex\xffample Ave,41.887,-87.6099\n165 N Example Ave,41.888,-87.61\n", AREA
    )
    assert found.refused == [(2, "is not UTF-8 text; save the file as UTF-8")] and len(found.points) == 1
    with pytest.raises(AddressFileError, match="line 2: field larger than field limit"):
        read_address_file(b"address,lat,long\n" + b"1" * 200_000 + b",41.9,-87.61\n", AREA)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_read_or_refused_with_a_reason_never_an_error(content: bytes) -> None:
    try:
        found = read_address_file(b"address,lat,long\n" + content, AREA)
    except AddressFileError as exc:
        assert str(exc)
        return
    assert all(AREA is None or AREA.covers(p.lat, p.long) for p in found.points)
    assert all(row >= 2 and why for row, why in found.refused)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_whatever_a_column_not_read_holds_the_row_loads(notes: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["address", "lat", "long", "notes"])
    writer.writerow(["110 N Example Ave", "41.887", "-87.6099", notes])
    # control characters, line breaks, quotes; a lone surrogate is a byte that is not UTF-8
    found = read_address_file(buffer.getvalue().encode("utf-8", errors="surrogatepass"), AREA)
    assert found.refused == [] and len(found.points) == 1, found.refused
