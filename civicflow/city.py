"""What every service may know of the jurisdiction from its city file: its name, where it serves, and how
precisely each service's location may be shown in public. The router reads the whole file (rules.py);
intake and query read only this part, through this module, so no service imports another.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
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
    # the resolution is a phone call (with "press 2 if not fixed") for any resident who gave a phone
    call_back_when_resolved: bool = False


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
    return CityProfile(name, area, services, points_file, phone_region, str(zone) if zone else None)
