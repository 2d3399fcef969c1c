"""What intake accepts, and the field-by-field reasons it gives when it does not."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from civicflow.city import load_city
from civicflow.geocode import NoGeocoder, Placed, Unplaced
from civicflow.pii import ResidentContact
from civicflow.settings import SAMPLE_CITY
from services.intake.domain import ContactDetails, ServiceRequest, place, reason_violations, validate_request
from services.intake.handlers import Accepted, Intake, Submission

SAMPLE_AREA = load_city(SAMPLE_CITY)

GOOD: dict[str, Any] = {
    "service_code": "POTHOLE",
    "description": "Deep pothole",
    "location": {"lat": 41.88, "long": -87.63},
}


def fields(raw: dict[str, Any]) -> dict[str, str]:
    result = validate_request(raw)
    assert isinstance(result, list), "expected the request to be refused"
    return dict(result)


def test_a_complete_request_is_accepted() -> None:
    accepted = validate_request({**GOOD, "contact": {"email": "r@example.org"}, "preferred_channel": "email"})
    assert isinstance(accepted, ServiceRequest)
    assert accepted.channel == "web"


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"service_code": ""}, "service_code", "give the service code"),
        ({"service_code": "POT HOLE"}, "service_code", "give the service code"),
        ({"description": "x" * 4001}, "description", "at most 4000 characters"),
        ({"location": {"lat": 91, "long": 0}}, "location.lat", "less than or equal to 90"),
        ({"location": {"lat": 41.0}}, "location", "both lat and long"),
        ({"location": {}}, "location", "POTHOLE needs to know where: give a point (lat and long), the address"),
        ({"contact": {"email": "not-an-email"}}, "contact.email", "email"),
        ({"contact": {"phone": "call me"}}, "contact.phone", "not a phone number in international form"),
        ({"contact": {"phone": "+1 555 0100"}}, "contact.phone", "not a phone number"),
        ({"language": "fr"}, "language", "en (English) or es (Spanish)"),
        ({"updates": "some"}, "updates", "all (every stage) or outcome"),
        ({"preferred_channel": "email"}, "request", "no email address"),
        ({"preferred_channel": "sms", "contact": {"email": "a@b.org"}}, "request", "no phone number"),
        ({"channel": "fax"}, "channel", "'fax' is not a channel; use one of phone, web, app, email, sms"),
    ],
)
def test_each_problem_is_named_with_its_field(change: dict[str, Any], field: str, says: str) -> None:
    problems = fields({**GOOD, **change})
    assert field in problems, problems
    assert says in problems[field]


def test_a_missing_location_is_reported_with_every_other_problem_at_once() -> None:
    problems = fields({"service_code": "", "description": "x" * 4001})
    assert set(problems) == {"service_code", "description", "location"}


def test_the_fingerprint_tells_a_retry_from_a_different_request() -> None:
    first = ServiceRequest.model_validate(GOOD)
    same = ServiceRequest.model_validate(dict(GOOD))
    other = ServiceRequest.model_validate({**GOOD, "description": "Two potholes"})
    assert first.fingerprint("k1") == same.fingerprint("k1")
    assert first.fingerprint("k1") != other.fingerprint("k1")


def inside(raw: dict[str, Any]) -> ServiceRequest:
    result = validate_request(raw, SAMPLE_AREA)
    assert isinstance(result, ServiceRequest), result
    return result


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"location": {"lat": float("nan"), "long": -87.65}}, "location.lat", "must be a number"),
        ({"location": {"lat": 41.88, "long": float("-inf")}}, "location.long", "must be a number"),
        ({"location": {"lat": 0.0, "long": 0.0}}, "location", "without a position fix"),
        ({"location": {"lat": 41.0, "long": -87.0}}, "location", "outside Sample City's service area"),
        ({"location": {"address": "1 Main St\x00"}}, "location.address", "U+0000"),
        ({"location": {"address": "x" * 301}}, "location.address", "at most 300"),
        ({"location": {"address": "1 Main St", "point_source": "geocoded"}}, "location.point_source", "said by intake"),
        ({"location": {"lat": 41.9, "long": -87.61, "unplaced": "no"}}, "location.unplaced", "said by intake"),
        ({"description": "light out\x1b[2J"}, "description", "U+001B"),
        ({"description": "x" * 4001}, "description", "at most 4000"),
        ({"contact": {"name": "Ada\u2028Resident"}}, "contact.name", "U+2028"),
        ({"contact": {"name": "A" * 201}}, "contact.name", "at most 200"),
        ({"contact": {"email": "ü@exämple.org"}}, "contact.email", "the part before @ must be ASCII"),
        ({"contact": {"email": ("a" * 250) + "@example.org"}}, "contact.email", "at most 254"),
        ({"contact": {"phone": "5" * 33}}, "contact.phone", "at most 32"),
        ({"attributes": {"dog_behaviour": "\x00"}}, "attributes.dog_behaviour", "U+0000"),
        ({"attributes": {"\x00" * 3: "calm"}}, "attributes", "U+0000"),
        ({"attributes": {"k" * 65: "calm"}}, "attributes", "at most 64"),
        ({"attributes": {f"q{n}": "a" for n in range(51)}}, "attributes", "at most 50"),
        ({"flags": ["hazard\x00"]}, "flags.0", "match pattern"),
        ({"flags": ["hazard"] * 11}, "flags", "at most 10"),
    ],
)
def test_sizes_control_characters_and_places_are_checked_field_by_field(
    change: dict[str, Any], field: str, says: str
) -> None:
    result = validate_request({**GOOD, **change}, SAMPLE_AREA)
    assert isinstance(result, list), "expected the request to be refused"
    problems = dict(result)
    assert field in problems, problems
    assert says in problems[field]
    assert "\x00" not in "".join(f + d for f, d in result), "a violation echoed a control character"


def test_line_breaks_and_tabs_are_fine_in_a_description_and_crlf_becomes_lf() -> None:
    accepted = inside({**GOOD, "description": "two holes:\r\n\t- one\n\t- two"})
    assert accepted.description == "two holes:\n\t- one\n\t- two"


def test_an_internationalised_domain_is_kept_in_the_ascii_form_smtp_can_send_to() -> None:
    accepted = inside({**GOOD, "contact": {"email": "ada@exämple.org"}, "preferred_channel": "email"})
    assert accepted.contact == ContactDetails(email="ada@xn--exmple-cua.org")
    # and stays so when the notifier unseals it (pydantic's EmailStr would turn it back into Unicode)
    assert accepted.contact is not None
    unsealed = ResidentContact.model_validate_json(accepted.contact.model_dump_json())
    assert unsealed.email == "ada@xn--exmple-cua.org"
    assert ResidentContact(email="ada@exämple.org").email == "ada@xn--exmple-cua.org"


def test_a_phone_number_is_kept_in_e164_read_in_the_city_region_unless_it_starts_with_a_country_code() -> None:
    assert SAMPLE_AREA.phone_region == "US"
    local = inside({**GOOD, "contact": {"phone": "(312) 555-0100"}, "preferred_channel": "sms"})
    assert local.contact is not None and local.contact.phone == "+13125550100"
    abroad = inside({**GOOD, "contact": {"phone": "+34 612 34 56 78"}, "preferred_channel": "sms"})
    assert abroad.contact is not None and abroad.contact.phone == "+34612345678"
    # without a region only the international form is taken
    assert "contact.phone" in fields({**GOOD, "contact": {"phone": "(312) 555-0100"}})
    refused = validate_request({**GOOD, "contact": {"phone": "312 555"}}, SAMPLE_AREA)
    assert isinstance(refused, list)
    assert dict(refused)["contact.phone"] == "not a phone number in US or international form (+…)"


def test_language_and_updates_are_taken_with_defaults() -> None:
    plain = inside(GOOD)
    assert (plain.language, plain.updates) == ("en", "all")
    chosen = inside({**GOOD, "language": "es", "updates": "outcome"})
    assert (chosen.language, chosen.updates) == ("es", "outcome")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_a_refused_phone_number_is_never_echoed(phone: str) -> None:
    result = validate_request({**GOOD, "contact": {"phone": phone}}, SAMPLE_AREA)
    if isinstance(result, list):
        said = " ".join(f"{f} {d}" for f, d in result)
        digits = "".join(ch for ch in phone if ch.isdigit())
        assert len(digits) < 3 or digits not in "".join(ch for ch in said if ch.isdigit())
    else:
        assert result.contact is not None and (result.contact.phone or "").startswith("+")


def test_a_point_inside_the_city_or_an_address_alone_is_accepted_and_no_area_still_refuses_null_island() -> None:
    inside({**GOOD, "location": {"lat": 41.88, "long": -87.65}})
    inside({**GOOD, "location": {"address": "1200 W Madison St"}})
    assert isinstance(validate_request({**GOOD, "location": {"lat": 41.0, "long": -87.0}}), ServiceRequest)
    assert dict(fields({**GOOD, "location": {"lat": 0, "long": 0}})).keys() == {"location"}


def test_a_reason_is_plain_text_of_bounded_length() -> None:
    assert reason_violations("caller meant the party\nnext door") == []
    assert reason_violations("  ") == [("reason", "say why, for the case's history")]
    assert "at most 500" in dict(reason_violations("x" * 501))["reason"]
    assert "U+0000" in dict(reason_violations("why\x00"))["reason"]


# --- what each service needs: a location (required, optional, none), a description (required, optional) -----


@pytest.mark.parametrize(
    ("raw", "field", "says"),
    [
        ({"service_code": "POTHOLE", "description": "deep"}, "location", "POTHOLE needs to know where: give a point"),
        (
            {"service_code": "MISSED_PICKUP", "description": "missed"},
            "location",
            "give a point (lat and long) or the address",  # its places are [address]: no cross streets offered
        ),
        (
            {"service_code": "INFO_QUESTION", "description": "leaf pickup?", "location": {"address": "1 Main St"}},
            "location",
            "INFO_QUESTION takes no location (it is not about a place); leave it out",
        ),
        ({"service_code": "INFO_QUESTION", "description": "  "}, "description", "INFO_QUESTION needs a description"),
        ({"service_code": "BILLING_DISPUTE"}, "description", "BILLING_DISPUTE needs a description"),
    ],
)
def test_a_request_gives_what_its_service_needs(raw: dict[str, Any], field: str, says: str) -> None:
    result = validate_request(raw, SAMPLE_AREA)
    assert isinstance(result, list), result
    assert says in dict(result)[field]
    if raw["service_code"] == "MISSED_PICKUP":
        assert "cross streets" not in dict(result)[field]


def test_optional_and_absent_locations_and_descriptions_are_accepted_where_the_service_allows() -> None:
    no_place = inside({"service_code": "INFO_QUESTION", "description": "When is leaf pickup?"})
    assert no_place.location is None
    optional = inside({"service_code": "ACCOUNT_START_STOP"})
    assert optional.location is None and optional.description == ""
    wordless_pothole = inside({"service_code": "POTHOLE", "location": {"address": "110 N Example Ave"}})
    assert wordless_pothole.description == ""
    # a code the catalogue lacks is accepted (the router triages it) and, like most services, needs a place
    assert isinstance(validate_request({"service_code": "UFO_SIGHTING"}, SAMPLE_AREA), list)
    assert isinstance(
        inside({"service_code": "UFO_SIGHTING", "location": {"lat": 41.9, "long": -87.61}}), ServiceRequest
    )


class FixedPoints:
    """A geocoder that knows one address and counts its calls."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, object]] = []

    def locate(self, address: str, kinds: object = None) -> Placed | Unplaced:
        self.asked.append((address, kinds))
        if address == "110 N Example Ave":
            return Placed(41.887, -87.6099, "110 N EXAMPLE AVE", "normalised", 100.0)
        return Unplaced("no street of that name in the city's address file; check the street's spelling")


def test_place_says_where_the_point_came_from_and_why_there_is_none() -> None:
    geocoder = FixedPoints()
    given = place(inside({**GOOD, "location": {"lat": 41.9, "long": -87.61, "address": "x"}}), geocoder, SAMPLE_AREA)
    assert given.location is not None and given.location.point_source == "given" and not geocoder.asked
    found = place(inside({**GOOD, "location": {"address": "110 N Example Ave"}}), geocoder, SAMPLE_AREA)
    assert found.location is not None
    assert (found.location.lat, found.location.long, found.location.point_source) == (41.887, -87.6099, "geocoded")
    assert found.location.address == "110 N Example Ave"  # as the resident gave it
    lost = place(inside({**GOOD, "location": {"address": "9 Nowhere Rd"}}), geocoder, SAMPLE_AREA)
    assert lost.location is not None and lost.location.lat is None
    assert lost.location.unplaced is not None and "check the street" in lost.location.unplaced
    pickup = inside({"service_code": "MISSED_PICKUP", "location": {"address": "110 N Example Ave"}})
    place(pickup, geocoder, SAMPLE_AREA)
    assert geocoder.asked[-1][1] == ("address",)  # the service's places limit what the text may be taken as
    none = inside({"service_code": "INFO_QUESTION", "description": "?"})
    assert place(none, geocoder, SAMPLE_AREA) is none


async def test_the_idempotency_fingerprint_is_of_the_request_as_given_not_as_placed() -> None:
    recorded: list[Submission] = []

    class Recording(Intake):
        async def _write_group(self, group: Sequence[Submission]) -> list[Accepted | Exception]:
            recorded.extend(group)
            return [Accepted(uuid4(), "ABCD-EFG", datetime.now(UTC), replayed=False) for _ in group]

    intake = Recording(None, None, None, group_window_s=0)  # type: ignore[arg-type]
    as_given = inside({**GOOD, "location": {"address": "110 N Example Ave"}})
    placed_then = place(as_given, FixedPoints(), SAMPLE_AREA)
    placed_now = place(as_given, NoGeocoder(), SAMPLE_AREA)  # the address file changed between two tries
    await intake.submit(as_given, "key-1", placed=placed_then)
    await intake.submit(as_given, "key-1", placed=placed_now)
    await intake.close()
    assert recorded[0].request == placed_then and recorded[1].request == placed_now
    assert recorded[0].fingerprint == recorded[1].fingerprint == as_given.fingerprint("key-1")


@settings(max_examples=200, deadline=None)
@given(
    code=st.sampled_from(["POTHOLE", "INFO_QUESTION", "MISSED_PICKUP", "ACCOUNT_START_STOP", "UFO_SIGHTING"]),
    description=st.one_of(st.none(), st.text(max_size=50)),
    address=st.one_of(st.none(), st.text(max_size=400)),
    lat=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_any_mix_of_messy_fields_is_accepted_or_refused_by_field_never_an_error(
    code: str, description: str | None, address: str | None, lat: float | None
) -> None:
    raw: dict[str, Any] = {"service_code": code}
    if description is not None:
        raw["description"] = description
    if address is not None or lat is not None:
        raw["location"] = {"address": address, "lat": lat, "long": -87.61 if lat is not None else None}
    result = validate_request(raw, SAMPLE_AREA)
    if isinstance(result, list):
        assert result and all(isinstance(f, str) and isinstance(m, str) for f, m in result)
    else:
        placed = place(result, FixedPoints(), SAMPLE_AREA)
        assert placed.service_code == code


def test_a_city_file_phone_region_must_be_a_region_code(tmp_path: Path) -> None:
    city_file = tmp_path / "city.yaml"
    city_file.write_text("jurisdiction: x\nphone_region: USA\n")
    with pytest.raises(ValueError, match="phone_region 'USA' is not a region code; use two capital letters"):
        load_city(city_file)
    city_file.write_text("jurisdiction: x\nphone_region: CA\n")
    assert load_city(city_file).phone_region == "CA"
    city_file.write_text("jurisdiction: x\n")
    assert load_city(city_file).phone_region is None
