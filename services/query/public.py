"""Where a case is, as the public may see it: exact for things in the street, a hundred block for homes.

Anyone holding a tracking number sees the case view, so the location in it must not lead to a
resident's door. The city file says per service how precise it may be (civicflow.city.PublicLocation):
exact (a pothole is where it is), block (a missed pickup is at someone's home: the address becomes its
hundred block and the point is rounded to 3 decimals, about 110 m north-south), or hidden. Applied when
the view is read, not in the projection, so a change of the city file applies to every case from the
next lookup without rebuilding the read model (cityfile.py). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from civicflow.city import PublicLocation
from services.query.projection import CaseRecord

BLOCK_DECIMALS = 3

# "1234 W Madison St", "1234-B W Madison St", "1234 1/2 W Madison St": a house number first.
_NUMBERED = re.compile(r"^(?P<number>\d{1,6})(?:-?[A-Za-z]\b|\s+1/2\b)?\s+(?P<street>.+)$")
# What follows the street on a home's address: a unit, a floor, a city or post code after a comma.
_UNIT = re.compile(r"(?:\s|^)(?:#|apt\b|apartment\b|unit\b|suite\b|ste\b|fl\b|floor\b|rm\b|room\b|bldg\b).*$", re.I)
# A street name reads as words, which may be ordinals ("W 115th St"); a bare number of 3 or more digits
# in it (a post code, another house number) is something we must not show.
_STREET = re.compile(r"^(?!.*\b\d{3,}\b)[A-Za-z0-9][A-Za-z0-9.'\- ]*[A-Za-z.]$")


@dataclass(frozen=True)
class PublicPlace:
    lat: float | None
    long: float | None
    address: str


def hundred_block(address: str | None) -> str | None:
    """ "1234 W Madison St" -> "1200 block of W Madison St"; None for anything that is not a house number
    and a street (an intersection, a landmark, a unit first), so nothing unparsed is shown."""
    if not address:
        return None
    first_part = address.split(",", 1)[0].strip()
    found = _NUMBERED.match(" ".join(first_part.split()))
    if found is None:
        return None
    street = _UNIT.sub("", found["street"]).strip(" .-")
    if not _STREET.match(street):
        return None
    return f"{int(found['number']) // 100 * 100} block of {street}"


def public_place(
    precision: PublicLocation, lat: float | None, long: float | None, address: str | None
) -> PublicPlace | None:
    """The location to show for a case whose service has this precision; None: show none."""
    if precision == "exact":
        return PublicPlace(lat, long, address or "") if lat is not None or address else None
    if precision == "block":
        rounded_lat = round(lat, BLOCK_DECIMALS) if lat is not None else None
        rounded_long = round(long, BLOCK_DECIMALS) if long is not None else None
        block = hundred_block(address) or ""
        if rounded_lat is None and not block:
            return None
        return PublicPlace(rounded_lat, rounded_long, block)
    return None


def point_said(record: CaseRecord) -> tuple[str, str]:
    """(point_source, unplaced) for the view: where the point came from, or why the address found none. The
    reason names no part of the address (civicflow.address_points), so it may be shown wherever the location is."""
    if record.lat is not None:
        return record.point_source or "given", ""  # a case recorded before intake said so had its point given
    return "", record.unplaced or ""
