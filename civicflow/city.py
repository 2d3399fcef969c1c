"""What every service may know of the jurisdiction from its city file: its name, where it serves, how
precisely each service's location may be shown in public, and who is on call for each department. The router
reads the whole file (rules.py); intake, query and the notifier read only this part, through this module, so
no service imports another.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
import yaml
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
from shapely import prepared
from shapely.geometry import Point, box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from civicflow.geocode import PLACE_KINDS, PlaceKind

# exact: the point and address as given (a pothole, a streetlight: things in the street);
# block: the address as its hundred block and the point rounded to about 100 m (a home, a yard);
# hidden: no location at all in public views.
PublicLocation = Literal["exact", "block", "hidden"]
DEFAULT_PUBLIC_LOCATION: PublicLocation = "block"
# Whether a request of the service must say where (a pothole), may (a noise complaint), or has no place
# at all (a benefit card, a question).
LocationNeed = Literal["required", "optional", "none"]
DescriptionNeed = Literal["required", "optional"]
# How long after resolution a resident is asked how the city did: whole hours (at most 90 days), or "none".
MAX_SURVEY_HOURS = 90 * 24
SurveyHours = Annotated[int, Field(ge=1, le=MAX_SURVEY_HOURS, strict=True)]
SurveyAfter = SurveyHours | Literal["none"]


def _known_region(value: str) -> str:
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"phone_region {value!r} is not a region code; use two capital letters such as US, CA or ES")
    return value


# The region a phone number written without +country code is read in (ISO 3166 letters, "US").
PhoneRegion = Annotated[str, AfterValidator(_known_region)]


class ServiceSpec(BaseModel):
    """One entry of the city file's service catalogue, as every service reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    group: str
    # how precisely the public case view may show where it is
    public_location: PublicLocation = DEFAULT_PUBLIC_LOCATION
    location: LocationNeed = "required"
    # what a request may name as its place besides a point: a street address, two cross streets ("Main St &
    # 1st Ave"), a place the city's address file lists by name ("City Hall"); all three unless the city says
    places: tuple[PlaceKind, ...] = PLACE_KINDS
    description: DescriptionNeed = "optional"
    # hours after resolution the satisfaction survey goes, or "none"; absent: the city file's survey_after_hours
    survey_after_hours: SurveyAfter | None = None
    # the resolution is a phone call (with "press 2 if not fixed") for any resident who gave a phone
    call_back_when_resolved: bool = False


def on_call_number(value: str, region: str | None) -> str:
    """A staff number in E.164, read in the city's phone_region unless it starts with +; ValueError naming
    the forms taken, never the number (staff numbers stay out of logs and messages too)."""
    forms = f"{region} or international form (+…)" if region else "international form (+ and country code)"
    problem = f"not a phone number in {forms}; write it as the on-call phone dials, e.g. +1 312 555 0100"
    try:
        number = phonenumbers.parse(value, region if region in phonenumbers.SUPPORTED_REGIONS else None)
    except phonenumbers.NumberParseException:
        raise ValueError(problem) from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(problem)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_MOST_PHONE_CHARS = 40


class OnCallContact(BaseModel):
    """Someone a department puts on call: alerted at once, day or night, about its urgent and hazard cases.
    The city file's `phone_region` reads numbers written without +country code (validation context
    "phone_region"; rules.py and load_city pass it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=80, description="Who takes it, as staff know them: a role.")
    phone: str = Field(repr=False, description="Normalised to E.164; never logged.")
    by: Literal["sms", "voice"] = "sms"

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not value.isprintable() or not value.strip():
            raise ValueError("a name on one line of printable characters, such as 'Streets duty officer'")
        return " ".join(value.split())

    @field_validator("phone", mode="before")
    @classmethod
    def _dialable(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            raise ValueError('a phone number as text in quotes, such as "+1 312 555 0100"')
        if len(value) > _MOST_PHONE_CHARS:
            raise ValueError(f"at most {_MOST_PHONE_CHARS} characters; write the number as the phone dials it")
        if not value.isprintable():  # phonenumbers would read past a NUL or a line break
            raise ValueError("not a phone number: it has control characters; write digits, spaces, +, - and ()")
        region = (info.context or {}).get("phone_region")
        return on_call_number(value, region if isinstance(region, str) else None)


UNKNOWN_SERVICE = ServiceSpec(name="(not in the catalogue)", group="")


class ServiceAreaSpec(BaseModel):
    """Where the jurisdiction takes requests: the union of a GeoJSON file's features, or a bounding box."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str | None = Field(
        default=None, description="GeoJSON file (relative to the city file) whose features' union is the area"
    )
    bounds: tuple[float, float, float, float] | None = Field(
        default=None, description="[west, south, east, north] in degrees of longitude and latitude"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ServiceAreaSpec:
        if (self.file is None) == (self.bounds is None):
            raise ValueError("give the service area as either `file` (GeoJSON) or `bounds` [west, south, east, north]")
        if self.bounds is not None:
            west, south, east, north = self.bounds
            if not all(math.isfinite(v) for v in self.bounds):
                raise ValueError("bounds must be finite numbers")
            if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
                raise ValueError(
                    "bounds are [west, south, east, north]: west < east within ±180, south < north within ±90"
                )
        return self


class ServiceArea:
    """The jurisdiction's area, prepared for fast point-in-area checks."""

    def __init__(self, name: str, geometry: BaseGeometry) -> None:
        self.name = name
        self.geometry = geometry
        self._prepared = prepared.prep(geometry)

    def covers(self, lat: float, long: float) -> bool:
        return bool(self._prepared.covers(Point(long, lat)))


@dataclass(frozen=True)
class CityProfile:
    """The jurisdiction as intake and query see it."""

    name: str
    service_area: ServiceArea | None
    services: dict[str, ServiceSpec]
    address_points: Path | None = None  # the city's address-point file (CSV), if the city file names one
    # where a phone number written without +country code is read; None: only international form is taken
    phone_region: str | None = None
    timezone: str | None = None  # the city's IANA zone, for times told to residents
    # each department's on-call contacts, by department id (departments with none are left out)
    on_call: dict[str, tuple[OnCallContact, ...]] = field(default_factory=dict)
    survey_after_hours: SurveyAfter = "none"  # the city-wide default of ServiceSpec.survey_after_hours

    def survey_delay(self, service_code: str) -> timedelta | None:
        """How long after resolution a case of this service gets its survey; None: no survey."""
        spec = self.services.get(service_code)
        hours = spec.survey_after_hours if spec and spec.survey_after_hours is not None else self.survey_after_hours
        return None if hours == "none" else timedelta(hours=hours)

    def service(self, service_code: str) -> ServiceSpec:
        """The catalogue's entry; a code the catalogue lacks gets the defaults (the router triages it)."""
        return self.services.get(service_code) or UNKNOWN_SERVICE

    def public_location(self, service_code: str) -> PublicLocation:
        """How precisely a case of this service may be located in public; unknown codes get the default."""
        spec = self.services.get(service_code)
        return spec.public_location if spec else DEFAULT_PUBLIC_LOCATION


def _display_name(jurisdiction: str) -> str:
    return " ".join(part.capitalize() for part in re.split(r"[-_\s]+", jurisdiction) if part)


def area_geometry(spec: ServiceAreaSpec, base_dir: Path) -> BaseGeometry:
    """The area a spec describes; ValueError saying what is wrong with its file."""
    if spec.bounds is not None:
        return box(*spec.bounds)
    assert spec.file is not None
    path = base_dir / spec.file
    try:
        collection = json.loads(path.read_text())
        geometries = [shape(feature["geometry"]) for feature in collection["features"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"service_area.file {spec.file}: not a readable GeoJSON FeatureCollection ({type(exc).__name__})"
        ) from exc
    if not geometries:
        raise ValueError(f"service_area.file {spec.file}: has no features")
    return unary_union(geometries)


def load_city(path: Path) -> CityProfile:
    """Read the city file's name, service area and service catalogue (the router checks the file in full)."""
    raw: Any = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a city file (expected a mapping at the top)")
    name = str(raw.get("name") or _display_name(str(raw.get("jurisdiction", "the city"))))
    area = None
    if raw.get("service_area") is not None:
        spec = ServiceAreaSpec.model_validate(raw["service_area"])
        area = ServiceArea(name, area_geometry(spec, path.parent))
    services = {
        str(code): ServiceSpec.model_validate(definition)
        for code, definition in (raw.get("services") or {}).items()
        if isinstance(definition, dict)
    }
    address_points = raw.get("address_points")
    points_file = path.parent / str(address_points) if address_points else None
    region = raw.get("phone_region")
    phone_region = _known_region(str(region)) if region is not None else None
    zone = raw.get("timezone")
    on_call = on_call_contacts(raw.get("departments"), phone_region)
    survey = _SurveyDefault.model_validate({"survey_after_hours": raw.get("survey_after_hours", "none")})
    return CityProfile(
        name,
        area,
        services,
        points_file,
        phone_region,
        str(zone) if zone else None,
        on_call=on_call,
        survey_after_hours=survey.survey_after_hours,
    )


def on_call_contacts(departments: Any, phone_region: str | None) -> dict[str, tuple[OnCallContact, ...]]:
    """Each department's `on_call` list; ValueError naming the department and entry when one is wrong."""
    found: dict[str, tuple[OnCallContact, ...]] = {}
    for department_id, definition in (departments or {}).items() if isinstance(departments, dict) else ():
        entries = definition.get("on_call") if isinstance(definition, dict) else None
        if not entries:
            continue
        if not isinstance(entries, list):
            raise ValueError(f"departments.{department_id}.on_call: expected a list of {{name, phone, by}}")
        contacts = []
        for n, entry in enumerate(entries):
            try:
                contacts.append(OnCallContact.model_validate(entry, context={"phone_region": phone_region}))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False)
                )
                raise ValueError(f"departments.{department_id}.on_call.{n}: {problems}") from None
        found[str(department_id)] = tuple(contacts)
    return found


class _SurveyDefault(BaseModel):
    survey_after_hours: SurveyAfter
