"""What makes a request acceptable, and what a call-taker is told when it is not. Pure: no I/O."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Annotated, Any, Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from civicflow.city import UNKNOWN_SERVICE, CityProfile, ServiceSpec
from civicflow.codes import CODE, CODE_RULE, Channel, channel_of, channel_problem
from civicflow.events import Location
from civicflow.geocode import Geocoder, Placed, PlaceKind
from civicflow.pii import ResidentContact
from civicflow.plain_text import control_character_problem

PreferredChannel = Literal["email", "sms", "voice", "none"]
# The languages the notifier has message templates in; the resident chooses.
Language = Literal["en", "es"]
# Which stages the resident wants to hear about: every one, or only the outcome (resolved).
Updates = Literal["all", "outcome"]
SERVICE_CODE = CODE
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
# A whole SubmitRequest, serialized. Every field's own limit together stays under this; anything larger
# is not a resident's request, and would sit in every event, topic and read model that carries the case.
MAX_REQUEST_BYTES = 64 * 1024
MAX_REASON_CHARS = 500
# Longest text a person might type for a tracking number (spaces and dashes included); more is not one.
MAX_TRACKING_NUMBER_CHARS = 32
_NON_ASCII_MAILBOX = (
    "the part before @ must be ASCII letters, digits or . _ + - ; this server cannot deliver to it"
    " (internationalised domains after @ are fine)"
)


def _plain(allowed: str) -> Any:
    def check(value: str) -> str:
        problem = control_character_problem(value, allowed)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _deliverable(value: str) -> str:
    """The address as our SMTP client can send to it: an internationalised domain in its ASCII (IDNA) form.
    The notifier's client may not speak SMTPUTF8, so a mailbox name outside ASCII is refused here, where
    the caller can still give another address, rather than failing silently at the first email."""
    if not value.rpartition("@")[0].isascii():
        raise ValueError(_NON_ASCII_MAILBOX)
    try:
        parts = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return str(parts.ascii_email)


def e164(value: str, region: str | None) -> str:
    """The number in E.164 (+13125550100), read in the city's region unless it starts with +; ValueError
    naming the forms taken, never the number, when it is not a number that can be dialled."""
    forms = f"{region} or international form (+…)" if region else "international form (+ and country code)"
    problem = f"not a phone number in {forms}"
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise ValueError(problem) from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(problem)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


OneLine = _plain("")
# Values: at most ~1 KiB each in UTF-8, so the largest request stays well under the broker's 1 MB.
AttributeKey = Annotated[str, Field(min_length=1, max_length=64), OneLine]
AttributeValue = Annotated[str, Field(max_length=500), OneLine]
Flag = Annotated[str, Field(max_length=40, pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class ReportedLocation(Location):
    """Where the resident says the problem is: a real place, described in plain text."""

    address: Annotated[str, Field(max_length=300), OneLine] | None = None

    @field_validator("lat", "long", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        # before the range check, which would otherwise say "≤ 90" of a NaN
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a number of degrees, not NaN or infinity")
        return value

    @field_validator("point_source", "unplaced", mode="before")
    @classmethod
    def _intakes_to_say(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("is said by intake when it places the request; leave it out")
        return value

    @model_validator(mode="after")
    def _not_null_island(self) -> ReportedLocation:
        if self.lat == 0 and self.long == 0:
            raise ValueError(
                "lat 0, long 0 is a device without a position fix, not a place in a city;"
                " give the point where the problem is, or only the address"
            )
        return self


class ContactDetails(ResidentContact):
    """A resident's contact as intake takes it: bounded, plain text, an email the notifier can deliver."""

    name: Annotated[str, Field(max_length=200), OneLine] | None = None
    email: Annotated[str, Field(max_length=254), OneLine, AfterValidator(_deliverable)] | None = None
    phone: Annotated[str, Field(max_length=32), OneLine] | None = None

    @field_validator("phone")
    @classmethod
    def _dialable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        city = (info.context or {}).get("city")
        return e164(value, city.phone_region if isinstance(city, CityProfile) else None)


class ServiceRequest(BaseModel):
    """A resident's request as intake accepts it."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    service_code: str
    # required or not per service (ServiceSpec.description, checked by validate_request)
    description: Annotated[str, Field(max_length=4000), _plain("\n\t")] = ""
    location: ReportedLocation | None = None  # required, optional or refused per service (ServiceSpec.location)
    contact: ContactDetails | None = None
    preferred_channel: PreferredChannel | None = None
    language: Language = "en"
    updates: Updates = "all"
    channel: Channel = "web"
    attributes: dict[AttributeKey, AttributeValue] = Field(default_factory=dict, max_length=50)
    flags: list[Flag] = Field(default_factory=list, max_length=10)

    @field_validator("service_code")
    @classmethod
    def _a_code(cls, value: str) -> str:
        if not CODE.match(value):
            raise ValueError(f"give the service code: {CODE_RULE}")
        return value

    @field_validator("channel", mode="before")
    @classmethod
    def _known_channel(cls, value: Any) -> Any:
        if isinstance(value, str):
            channel = channel_of(value)
            if channel is None:
                raise ValueError(channel_problem(value))
            return channel
        return value

    @field_validator("language", mode="before")
    @classmethod
    def _known_language(cls, value: Any) -> Any:
        if value not in ("en", "es"):
            raise ValueError("the resident hears back in en (English) or es (Spanish); give one of them")
        return value

    @field_validator("updates", mode="before")
    @classmethod
    def _known_updates(cls, value: Any) -> Any:
        if value not in ("all", "outcome"):
            raise ValueError("give all (every stage) or outcome (only when the case is resolved)")
        return value

    @field_validator("description", mode="before")
    @classmethod
    def _one_kind_of_line_break(cls, value: Any) -> Any:
        return value.replace("\r\n", "\n") if isinstance(value, str) else value  # a web form's CRLF is fine

    @field_validator("location")
    @classmethod
    def _inside_the_city(cls, location: ReportedLocation | None, info: ValidationInfo) -> ReportedLocation | None:
        city = (info.context or {}).get("city")
        area = city.service_area if isinstance(city, CityProfile) else None
        if area is not None and location is not None and location.lat is not None and location.long is not None:
            if not area.covers(location.lat, location.long):
                raise ValueError(
                    f"the point is outside {area.name}'s service area; give a point inside it, or only the"
                    " address if the problem is in the city"
                )
        return location

    @model_validator(mode="after")
    def _preferred_channel_is_reachable(self) -> ServiceRequest:
        contact = self.contact or ContactDetails()
        if self.preferred_channel == "email" and not contact.email:
            raise ValueError("preferred channel is email but no email address was given")
        if self.preferred_channel in ("sms", "voice") and not contact.phone:
            raise ValueError(f"preferred channel is {self.preferred_channel} but no phone number was given")
        return self

    def fingerprint(self, idempotency_key: str) -> str:
        """A digest that tells whether a retried key carries the same request. The contact is left out:
        a digest of it would let someone holding the key guess a forgotten resident's phone number."""
        return hashlib.blake2b(
            self.model_dump_json(exclude={"contact"}).encode(), key=idempotency_key.encode()[:64], digest_size=16
        ).hexdigest()


_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _field_name(loc: tuple[int | str, ...]) -> str:
    """The request's field as a client names it. A map key is shown only when it is a plain word: the
    key itself may be what is wrong (a NUL, 60 KB), and the name goes back in the reply."""
    if loc and loc[0] == "attributes":
        key = loc[1] if len(loc) > 1 else None
        return f"attributes.{key}" if isinstance(key, str) and _SAFE_KEY.match(key) else "attributes"
    path = ".".join(str(part) for part in loc) or "request"
    return {"long": "location.long", "lat": "location.lat"}.get(path, path)


def field_violations(error: ValidationError) -> list[tuple[str, str]]:
    violations = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        message = item["msg"].removeprefix("Value error, ")
        violations.append((_field_name(item["loc"]), message))
    return list(dict.fromkeys(violations))  # one bad map key can fail twice (as a key and by its value)


_PLACE_WORDS: dict[PlaceKind, str] = {
    "address": "the address",
    "intersection": "two cross streets (Main St & 1st Ave)",
    "landmark": "the name of a place (City Hall)",
}


def service_needs(raw: dict[str, Any], spec: ServiceSpec) -> list[tuple[str, str]]:
    """What the service's catalogue entry asks of a request that this one lacks (or gives and must not):
    a location (required, optional or none) and a description (required or optional)."""
    code = raw.get("service_code") if isinstance(raw.get("service_code"), str) else "this service"
    problems = []
    location = raw.get("location")
    given = isinstance(location, dict) and any(v not in (None, "") for v in location.values())
    if spec.location == "required" and not given:
        ways = ["a point (lat and long)", *(_PLACE_WORDS[k] for k in spec.places)]
        ways_said = f"{', '.join(ways[:-1])} or {ways[-1]}"
        problems.append(("location", f"{code} needs to know where: give {ways_said}"))
    if spec.location == "none" and given:
        problems.append(("location", f"{code} takes no location (it is not about a place); leave it out"))
    description = raw.get("description")
    if spec.description == "required" and not (isinstance(description, str) and description.strip()):
        problems.append(("description", f"{code} needs a description: say what the problem is"))
    return problems


def validate_request(raw: dict[str, Any], city: CityProfile | None = None) -> ServiceRequest | list[tuple[str, str]]:
    """The accepted request, or every (field, what is wrong) at once so the caller can fix them together.
    With the city's profile, a point must lie in its service area, and the request gives what its service
    needs (a location, a description); a code not in the catalogue needs a location, as most do."""
    code = raw.get("service_code")
    spec = city.service(code) if city is not None and isinstance(code, str) else UNKNOWN_SERVICE
    needs = service_needs(raw, spec)
    try:
        accepted = ServiceRequest.model_validate(raw, context={"city": city})
    except ValidationError as exc:
        return list(dict.fromkeys([*field_violations(exc), *needs]))
    return needs or accepted


def reason_violations(reason: str) -> list[tuple[str, str]]:
    """What is wrong with a call-taker's reason for a correction (it stays in the case's history)."""
    if not reason.strip():
        return [("reason", "say why, for the case's history")]
    if len(reason) > MAX_REASON_CHARS:
        return [("reason", f"has {len(reason)} characters; say why in at most {MAX_REASON_CHARS}")]
    problem = control_character_problem(reason, "\n\t")
    return [("reason", problem)] if problem else []


def place(request: ServiceRequest, geocoder: Geocoder, city: CityProfile | None = None) -> ServiceRequest:
    """The request with its point's source said: given with the request, or found from its address (or the
    intersection or place named there, where the service takes them) by the geocoder; an address that cannot
    be placed keeps no point and records why, and is accepted: routing goes on with the case's other facts."""
    location = request.location
    if location is None:
        return request
    if location.lat is not None:
        return request.model_copy(update={"location": location.model_copy(update={"point_source": "given"})})
    if not location.address:
        return request
    spec = city.service(request.service_code) if city is not None else UNKNOWN_SERVICE
    found = geocoder.locate(location.address, spec.places)
    if isinstance(found, Placed):
        update: dict[str, Any] = {"lat": found.lat, "long": found.long, "point_source": "geocoded"}
    else:
        update = {"unplaced": found.reason}
    return request.model_copy(update={"location": location.model_copy(update=update)})
