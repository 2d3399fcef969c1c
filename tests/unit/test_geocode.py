"""Reading addresses as people write them, and finding them among the sample city's address points."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bench.geocode import ordinal
from civicflow.address_file import read_address_file
from civicflow.address_points import AddressIndex, AddressPoint
from civicflow.addresses import AddressParts, Street, _fast, _tagged, parse_address
from civicflow.city import load_city
from civicflow.geocode import Placed, Unplaced
from civicflow.settings import SAMPLE_CITY

CITY = load_city(SAMPLE_CITY)
assert CITY.address_points is not None
SAMPLE = read_address_file(Path(CITY.address_points).read_bytes(), CITY.service_area)
INDEX = AddressIndex(SAMPLE.points)
# two rows of the sample file (samples/city/address_points.csv)
N_EXAMPLE_110 = (41.887, -87.6099)
S_EXAMPLE_110 = (41.883, -87.6099)


@pytest.mark.parametrize(
    "written",
    [
        "110 N Example Ave",
        "110 N EXAMPLE AVE",
        "110 north example avenue",
        "110 N. Example Av.",
        "  110   N  Example   Ave  ",
        "110 N Example Ave, Apt 4",
        "110 N Example Ave #2R",
        "110 N Example Ave Unit 3, Sample City, IL 60601",
        "110 N Example Ave Sample City IL",
        "110 N EXAMPLE AVE SPRINGFIELD",
    ],
)
def test_abbreviations_case_punctuation_units_and_city_do_not_matter(written: str) -> None:
    assert parse_address(written) == AddressParts(110, Street("n", "example", "ave", ""))
    found = INDEX.locate(written)
    assert isinstance(found, Placed), found
    assert (found.lat, found.long) == N_EXAMPLE_110


def test_ordinal_words_and_a_street_named_like_a_direction_read_as_the_file_writes_them() -> None:
    assert parse_address("12 East Third Avenue") == AddressParts(12, Street("e", "3rd", "ave", ""))
    assert parse_address("1234 North Ave") == AddressParts(1234, Street("", "north", "ave", ""))
    assert parse_address("100 Main St N") == AddressParts(100, Street("", "main", "st", "n"))


def test_a_missing_direction_is_found_when_one_street_fits_and_refused_saying_which_to_give_when_two_do() -> None:
    found = INDEX.locate("110 Example Ave")
    assert isinstance(found, Unplaced)
    assert found.reason == "matches 2 addresses: give the direction (N/S)"
    one_sided = INDEX.locate("1510 Elm St")  # Riverfront Park's row: only W Elm St has 1510
    assert isinstance(one_sided, Placed) and one_sided.how == "normalised"


@pytest.mark.parametrize("typo", ["110 N Exmaple Ave", "110 N Exampel Ave", "110 N Examle Ave", "110 N Example Avneue"])
def test_a_typo_in_the_street_is_matched_fuzzily_to_the_street_with_that_number(typo: str) -> None:
    found = INDEX.locate(typo)
    assert isinstance(found, Placed), found
    assert found.how == "fuzzy" and 80 <= found.score < 100
    assert (found.lat, found.long) == N_EXAMPLE_110


def test_a_number_the_file_lacks_lies_between_its_neighbours_on_the_block_and_a_far_one_is_refused() -> None:
    oak = Street("w", "oak", "st", "")
    index = AddressIndex(
        [
            AddressPoint("100 W Oak St", 41.9, -87.65, 100, oak),
            AddressPoint("140 W Oak St", 41.9, -87.654, 140, oak),
            AddressPoint("210 W Oak St", 41.9, -87.66, 210, oak),
        ]
    )
    between = index.locate("110 W Oak St")
    assert isinstance(between, Placed) and between.how == "nearest" and between.matched == "110 W Oak St"
    assert between.long == pytest.approx(-87.651)
    last_on_block = index.locate("160 W Oak St")
    assert isinstance(last_on_block, Placed) and last_on_block.long == -87.654
    other_block = index.locate("330 W Oak St")
    assert isinstance(other_block, Unplaced) and "not that house number" in other_block.reason
    far = INDEX.locate("99999 N Example Ave")
    assert isinstance(far, Unplaced) and "not that house number" in far.reason


def test_a_street_that_is_not_there_is_refused_in_words_a_call_taker_can_act_on() -> None:
    found = INDEX.locate("110 N Zanzibar Ave")
    assert isinstance(found, Unplaced)
    assert found.reason == "no street of that name in the city's address file; check the street's spelling"
    assert "Zanzibar" not in found.reason


def test_intersections_are_where_the_two_streets_address_points_come_closest() -> None:
    for written in ("Oak St & Example Ave", "Oak and Example", "oak at example", "corner of Oak St and Example Ave"):
        found = INDEX.locate(written)
        assert isinstance(found, Placed) and found.how == "intersection", (written, found)
        assert abs(found.lat - 41.914) < 0.001 and abs(found.long - -87.610) < 0.001
    apart = INDEX.locate("Oak St & Maple St")  # parallel streets
    assert isinstance(apart, Unplaced) and "do not meet" in apart.reason
    unknown = INDEX.locate("Oak St & Nowhere Blvd")
    assert isinstance(unknown, Unplaced) and "second cross street" in unknown.reason


def test_places_are_found_by_their_name_even_misspelt() -> None:
    for written in ("City Hall", "the city hall", "CITY HALL", "Citty Hall"):
        found = INDEX.locate(written)
        assert isinstance(found, Placed) and found.how == "landmark" and found.matched == "City Hall", written


def test_a_misspelt_place_as_close_to_two_places_is_refused() -> None:
    index = AddressIndex(
        [
            AddressPoint("1 West Park Dr", 41.90, -87.65, name="West Park"),
            AddressPoint("2 East Park Dr", 41.95, -87.60, name="East Park"),
        ]
    )
    found = index.locate("Wast Park")  # a letter from each
    assert isinstance(found, Unplaced) and found.reason.startswith("matches 2 places"), found
    exact = index.locate("the west park")
    assert isinstance(exact, Placed) and exact.matched == "West Park"


def test_a_service_that_takes_only_addresses_refuses_an_intersection_or_a_place() -> None:
    assert isinstance(INDEX.locate("City Hall", kinds=("address",)), Unplaced)
    refused = INDEX.locate("Oak St & Example Ave", kinds=("address",))
    assert isinstance(refused, Unplaced) and refused.reason.endswith("give a house number and street")
    assert isinstance(INDEX.locate("110 N Example Ave", kinds=("intersection",)), Unplaced)


@pytest.mark.parametrize(
    ("hostile", "says"),
    [
        ("", "no address was given"),
        ("   ", "no address was given"),
        ("110 N Example\x00 Ave", "control characters"),
        ("x" * 10_000, "over 300 characters"),
        ("🚧🕳️🚗", "not found in the city's address file"),
        ("!!! ,,, ###", "not found in the city's address file"),
        ("110", "not found in the city's address file"),
    ],
)
def test_hostile_text_is_unplaced_with_a_reason_that_does_not_quote_it(hostile: str, says: str) -> None:
    found = INDEX.locate(hostile)
    assert isinstance(found, Unplaced)
    assert says in found.reason
    assert hostile.strip() == "" or hostile[:20] not in found.reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_placed_or_unplaced_never_an_error(anything: str) -> None:
    found = INDEX.locate(anything)
    assert isinstance(found, Placed | Unplaced)
    if isinstance(found, Placed):
        assert CITY.service_area is not None and CITY.service_area.covers(found.lat, found.long)


def test_no_points_places_nothing() -> None:
    found = AddressIndex([]).locate("110 N Example Ave")
    assert isinstance(found, Unplaced)


@pytest.mark.parametrize(
    "plain",
    [
        "110 N Example Ave",
        "110 north example avenue apt 2",
        "1510 W Elm St #4",
        "12 East Third Avenue, Sample City, IL 60601",
        "1234 North Ave",
        "100 Main St N",
        "77 Shore Ave Unit 5",
    ],
)
def test_the_fast_grammar_reads_plain_forms_as_usaddress_does(plain: str) -> None:
    assert _fast(plain) is not None
    assert _fast(plain) == _tagged(plain)


@pytest.mark.parametrize(
    ("written", "street"),
    [
        ("100 Oak St Springfield IL", Street("", "oak", "st", "")),
        ("100 W Oak St Sample City", Street("w", "oak", "st", "")),
        ("100 Main St N Springfield", Street("", "main", "st", "n")),
    ],
)
def test_words_after_the_street_type_are_read_by_usaddress_not_taken_as_the_name(written: str, street: Street) -> None:
    assert _fast(written) is None
    assert parse_address(written) == AddressParts(100, street)


def test_a_fuzzy_match_never_changes_a_direction_given_and_a_known_street_keeps_its_own_block() -> None:
    west_elm, east_elm = Street("w", "elm", "st", ""), Street("e", "elm", "st", "")
    index = AddressIndex(
        [
            AddressPoint("110 W Elm St", 41.877, -87.652, 110, west_elm),
            AddressPoint("104 E Elm St", 41.877, -87.648, 104, east_elm),
            AddressPoint("120 W Elme St", 41.870, -87.652, 120, Street("w", "elme", "st", "")),
        ]
    )
    east = index.locate("110 E Elm St")  # only W Elm St has 110: the east side's block says where instead
    assert isinstance(east, Placed) and east.how == "nearest" and east.long == -87.648
    assert isinstance(index.locate("310 E Elm St"), Unplaced)  # not W Elm St's 310 either
    # W Elm St is known but lacks 120: its own block, not W Elme St's 120 (a letter away)
    own_block = index.locate("120 W Elm St")
    assert isinstance(own_block, Placed) and own_block.how == "nearest" and own_block.lat == 41.877


def test_the_other_street_type_is_taken_only_when_no_street_of_that_name_has_the_type_given() -> None:
    found = INDEX.locate("110 N Example St")  # there is no Example St: Example Ave it is
    assert isinstance(found, Placed) and (found.lat, found.long) == N_EXAMPLE_110 and found.how == "fuzzy"


def _index(*addresses: str) -> AddressIndex:
    """A small city: each address a point of its own, 100 m apart."""
    points = []
    for i, address in enumerate(addresses):
        parts = parse_address(address)
        assert parts is not None
        points.append(AddressPoint(address, 41.9 + i * 0.001, -87.65, parts.number, parts.street))
    return AddressIndex(points)


@pytest.mark.parametrize("elsewhere", ["330 N 5th Ave", "330 N 6th Ave", "330 N 14th Ave", "125 N 5th Ave"])
def test_a_numbered_street_the_city_lacks_is_refused_not_placed_on_another_number(elsewhere: str) -> None:
    found = INDEX.locate(elsewhere)  # the sample city has 1st to 4th Ave, and 330 and 125 N 4th Ave's block
    assert isinstance(found, Unplaced), found
    assert found.reason == "no street of that name and number in the city's address file; check the street"


def test_a_different_number_in_a_street_name_is_never_a_typo() -> None:
    assert isinstance(_index("100 21st Ave").locate("100 1st Ave"), Unplaced)
    assert isinstance(_index("100 N 1st Ave").locate("100 N 10th Ave"), Unplaced)
    crossing = INDEX.locate("N 5th Ave & W Oak St")
    assert isinstance(crossing, Unplaced) and "first cross street" in crossing.reason
    # a typo around the same number is still a typo; a number alone is its ordinal's
    for written in ("110 N 4ht Ave", "110 N 4 Ave", "110 North Fourth Avenue"):
        found = INDEX.locate(written)
        assert isinstance(found, Placed) and found.matched == "110 N 4TH AVE", (written, found)


@pytest.mark.parametrize(
    ("city", "written"),
    [
        (("120 W 13th St", "310 W 12th St"), "120 W 12th St"),  # W 12th St has only its 300 block
        (("1500 Oak Ct", "100 Oak St"), "1500 Oak St"),  # Oak St has no 1500 block; Oak Ct is another street
        (("1500 W Elme St", "100 W Elm St"), "1500 W Elm St"),  # a letter away is another street too
    ],
)
def test_a_street_the_city_has_but_not_on_that_block_is_refused_not_placed_on_a_street_spelt_alike(
    city: tuple[str, ...], written: str
) -> None:
    found = _index(*city).locate(written)
    assert isinstance(found, Unplaced), found
    assert found.reason == (
        "the street is in the city's address file but not that house number's block; check the number"
    )


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 120),
    st.integers(1, 120),
    st.sampled_from(["", "N ", "W "]),
    st.sampled_from(["Ave", "Avenue", "St", ""]),
    st.sampled_from([100, 110, 250]),
)
def test_a_numbered_street_is_never_placed_on_another_numbered_street(
    have: int, asked: int, direction: str, kind: str, number: int
) -> None:
    assume(have != asked)
    index = _index(f"100 {direction}{ordinal(have)} Ave", f"120 {direction}{ordinal(have)} Ave")
    found = index.locate(f"{number} {direction}{ordinal(asked)} {kind}")
    assert isinstance(found, Unplaced), found


def test_a_typo_as_close_to_two_streets_is_refused_even_when_neither_has_the_number() -> None:
    index = _index("100 W Elmo St", "140 W Elmo St", "100 W Elma St", "140 W Elma St")
    found = index.locate("120 W Elmx St")  # as close to Elmo as to Elma, and both have the 100 block
    assert isinstance(found, Unplaced) and found.reason.startswith("matches 2 addresses"), found
    clear = index.locate("120 W Elmoo St")  # closer to Elmo by more than the margin
    assert isinstance(clear, Placed) and clear.how == "nearest" and clear.matched == "120 W Elmo St"
