"""What intake accepts, and the field-by-field reasons it gives when it does not."""

from __future__ import annotations

from typing import Any

import pytest

from services.intake.domain import ServiceRequest, validate_request

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
        ({"service_code": ""}, "service_code", "at least 1 character"),
        ({"service_code": "POT HOLE"}, "service_code", "match pattern"),
        ({"description": "   "}, "description", "at least 1 character"),
        ({"location": {"lat": 91, "long": 0}}, "location.lat", "less than or equal to 90"),
        ({"location": {"lat": 41.0}}, "location", "both lat and long"),
        ({"location": {}}, "location", "lat and long or an address"),
        ({"contact": {"email": "not-an-email"}}, "contact.email", "email"),
        ({"contact": {"phone": "call me"}}, "contact", "phone must be"),
        ({"preferred_channel": "email"}, "request", "no email address"),
        ({"preferred_channel": "sms", "contact": {"email": "a@b.org"}}, "request", "no phone number"),
        ({"channel": "fax"}, "channel", "'phone', 'web', 'app' or 'system'"),
    ],
)
def test_each_problem_is_named_with_its_field(change: dict[str, Any], field: str, says: str) -> None:
    problems = fields({**GOOD, **change})
    assert field in problems, problems
    assert says in problems[field]


def test_a_missing_location_is_reported_with_every_other_problem_at_once() -> None:
    problems = fields({"service_code": "", "description": ""})
    assert set(problems) == {"service_code", "description", "location"}


def test_the_fingerprint_tells_a_retry_from_a_different_request() -> None:
    first = ServiceRequest.model_validate(GOOD)
    same = ServiceRequest.model_validate(dict(GOOD))
    other = ServiceRequest.model_validate({**GOOD, "description": "Two potholes"})
    assert first.fingerprint("k1") == same.fingerprint("k1")
    assert first.fingerprint("k1") != other.fingerprint("k1")
