"""The geocoder backed by the city's own address-point file: an index in memory, built once at a service's start.

An address is read into its house number and street (civicflow.addresses), then looked for in this order,
first hit wins:
1. the address exactly as the file spells it (case and spacing aside);
2. the street meant: the street named once normalised ("north Main Street" = "N Main St"), or with parts left
   out ("Main St" for "N Main St"); else, when no street of that name has the type given, the same name of
   another type ("Example St" for Ave); else a typo: rapidfuzz's ratio, at least FUZZY_CUTOFF, over the
   streets with the same numbers in their names (5th is never 4th's typo, nor 1st 21st's), keeping every
   street within FUZZY_MARGIN of the best. A fuzzy match may fill in a direction left out but never changes
   one given (110 E Elm St is not 110 W Elm St);
3. on the streets meant, the number's own door; else the point between the number's listed neighbours of the
   same side and hundred block (a new building, a number skipped on the map); else refused. A street found
   is never given up for another street that has the number: "1500 Oak St" is not 1500 Oak Ct, and a wrong
   point (the wrong ward, the wrong crew) is worse than none; the case is still routed by its other facts.
Two or more different points at one step are refused, saying what would tell them apart ("matches 2
addresses: give the direction (N/S)"). Text with no house number is an intersection ("Main St & 1st Ave",
"Main and 1st", "Oak at Elm": the midpoint of the closest pair of the two streets' address points, refused
when they are over MEET_WITHIN_M apart) or the name of a place the file lists (its `name` column; misspelt,
refused when another place's name is within FUZZY_MARGIN).
Reasons never quote the address: they are recorded in the case and may be logged.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import structlog
from rapidfuzz import fuzz, process
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.addresses import MAX_ADDRESS_CHARS, Street, parse_address, parse_street, place_name
from civicflow.db import make_engine
from civicflow.geocode import PLACE_KINDS, Geocoder, NoGeocoder, Placed, PlaceKind, Unplaced

log = structlog.get_logger(__name__)
FUZZY_CUTOFF = 80.0  # rapidfuzz ratio, 0-100: "w madsion st" ~ "w madison st" scores 92, "oak st" ~ "elm st" 67
PLACE_CUTOFF = 85.0  # the same for a place's name, which has no house number to narrow it
FUZZY_MARGIN = 3.0  # a fuzzy match must lead the next street with another point by this much
MEET_WITHIN_M = 150.0  # two streets' closest address points further apart than this: the streets do not meet
_INTERSECTION = re.compile(r"\s*(?:&|@|/|\+|\band\b|\bat\b|\bx\b)\s*", re.IGNORECASE)
_CORNER_OF = re.compile(r"^\s*(?:(?:the\s+)?corner\s+of|intersection\s+of)\s+", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class AddressPoint:
    """One row of the city's address-point file, read: the address as published and where its door is."""

    address: str
    lat: float
    long: float
    number: int | None = None
    street: Street | None = None
    name: str | None = None  # a landmark's name: "City Hall"


@dataclass
class _StreetPoints:
    street: Street
    doors: dict[int, AddressPoint] = field(default_factory=dict)
    numbers: list[int] = field(default_factory=list)  # sorted, for the nearest-number fallback
    xy: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))  # metres, for intersections


def _differences(streets: Iterable[Street]) -> str:
    """What to add to tell these streets apart, for a call-taker."""
    found = list(streets)
    directions = sorted({s.predir or s.postdir for s in found} - {""})
    if len({(s.predir, s.postdir) for s in found}) > 1 and directions:
        return f"give the direction ({'/'.join(d.upper() for d in directions)})"
    types = sorted({s.suffix for s in found} - {""})
    if len({s.suffix for s in found}) > 1 and types:
        return f"give the street type ({'/'.join(t.capitalize() for t in types)})"
    return "give the street's full name"


def _same_directions(given: Street, found: Street) -> bool:
    """A fuzzy match may fill in a direction left out, never change one given."""
    return (not given.predir or given.predir == found.predir) and (not given.postdir or given.postdir == found.postdir)


def _numbers(name: str) -> tuple[str, ...]:
    """The numbers in a street's name: ("4",) for "4th", () for "main"."""
    return tuple(_DIGITS.findall(name))


def _title(street: Street) -> str:
    return " ".join(p.upper() if p in (street.predir, street.postdir) else p.capitalize() for p in street.label.split())


class AddressIndex:
    """The city's address points, indexed for `locate`. Pure: build it from points (AddressPointGeocoder.load
    reads them from PostgreSQL)."""

    def __init__(self, points: Iterable[AddressPoint]) -> None:
        self._exact: dict[str, AddressPoint] = {}
        self._streets: dict[Street, _StreetPoints] = {}
        self._by_name: dict[str, list[Street]] = defaultdict(list)
        self._places: dict[str, AddressPoint] = {}
        lats: list[float] = []
        for point in points:
            lats.append(point.lat)
            self._exact.setdefault(" ".join(point.address.lower().split()), point)
            if point.name:
                self._places.setdefault(place_name(point.name), point)
            if point.number is None or point.street is None:
                continue
            entry = self._streets.get(point.street)
            if entry is None:
                entry = self._streets[point.street] = _StreetPoints(point.street)
                self._by_name[point.street.name].append(point.street)
            entry.doors.setdefault(point.number, point)
        # metres east and north of the city's middle: fine for closest-point questions within a city
        self._lat0 = sum(lats) / len(lats) if lats else 0.0
        self._metres_per_degree_long = 111_320.0 * math.cos(math.radians(self._lat0))
        for entry in self._streets.values():
            entry.numbers = sorted(entry.doors)
            entry.xy = np.array([self._xy(p.lat, p.long) for p in entry.doors.values()]).reshape(-1, 2)
        # the streets by the numbers in their names, for fuzzy matching: ((labels), (streets)) of each
        self._by_numbers: dict[tuple[str, ...], tuple[list[str], list[Street]]] = {}
        for street in self._streets:
            labels, streets = self._by_numbers.setdefault(_numbers(street.name), ([], []))
            labels.append(street.label)
            streets.append(street)
        self._place_names = list(self._places)
        self._intersections: dict[tuple[str, str], Placed | Unplaced] = {}

    def __len__(self) -> int:
        return len(self._exact)

    def _xy(self, lat: float, long: float) -> tuple[float, float]:
        return (long * self._metres_per_degree_long, (lat - self._lat0) * 110_574.0)

    def locate(self, address: str, kinds: Collection[PlaceKind] = PLACE_KINDS) -> Placed | Unplaced:
        """Where the address (or, where `kinds` allows, the intersection or place) is, or why it cannot be said."""
        if not isinstance(address, str) or not address.strip():
            return Unplaced("no address was given")
        if len(address) > MAX_ADDRESS_CHARS:
            return Unplaced(f"the address is over {MAX_ADDRESS_CHARS} characters; give the house number and street")
        if _CONTROL.search(address):
            return Unplaced("the address has control characters; give the house number and street as plain text")
        exact = self._exact.get(" ".join(address.lower().split()))
        if exact is not None and ("address" if exact.number is not None else "landmark") in kinds:
            return Placed(exact.lat, exact.long, exact.address, "exact", 100.0)
        parts = parse_address(address)
        if parts is not None and parts.number is not None:
            if "address" not in kinds:
                return Unplaced("this service takes no street address; give the intersection or the place")
            return self._house(parts.number, parts.street)
        if "landmark" in kinds and (place := self._places.get(place_name(address))):
            return Placed(place.lat, place.long, place.name or place.address, "landmark", 100.0)
        sides = _INTERSECTION.split(_CORNER_OF.sub("", address))
        if len(sides) == 2 and all(s.strip() for s in sides) and "intersection" in kinds:
            return self._crossing(sides[0], sides[1])
        if "landmark" in kinds and self._place_names:
            return self._place_spelt_like(address) or Unplaced(self._what_to_give(kinds))
        return Unplaced(self._what_to_give(kinds))

    def _place_spelt_like(self, address: str) -> Placed | Unplaced | None:
        """A place's name with a typo: the closest name (ratio at least PLACE_CUTOFF), refused when another place
        comes within FUZZY_MARGIN of it; None when no name is that close."""
        found = process.extract(
            place_name(address), self._place_names, scorer=fuzz.ratio, limit=None, score_cutoff=PLACE_CUTOFF
        )
        if not found:
            return None
        top = found[0][1]
        close = [self._places[name] for name, score, _ in found if score > top - FUZZY_MARGIN]
        if len({(p.lat, p.long) for p in close}) > 1:
            return Unplaced(f"matches {len(close)} places the city lists: give the place's full name")
        return Placed(close[0].lat, close[0].long, close[0].name or close[0].address, "landmark", float(top))

    @staticmethod
    def _what_to_give(kinds: Collection[PlaceKind]) -> str:
        options = {
            "address": "a house number and street",
            "intersection": "two cross streets (Main St & 1st Ave)",
            "landmark": "the name of a place the city lists",
        }
        wanted = [options[k] for k in PLACE_KINDS if k in kinds]
        return "not found in the city's address file; give " + ", or ".join(wanted)

    def _candidates(self, street: Street) -> list[Street]:
        """The streets this one names: itself, or every street of its name that agrees with the parts given."""
        if street in self._streets:
            return [street]
        return [
            s
            for s in self._by_name.get(street.name, ())
            if (not street.predir or s.predir == street.predir)
            and (not street.suffix or s.suffix == street.suffix)
            and (not street.postdir or s.postdir == street.postdir)
        ]

    def _spelt_like(self, street: Street) -> tuple[list[Street], float]:
        """The streets whose spelling is closest to this one's (rapidfuzz ratio, at least FUZZY_CUTOFF) and
        those within FUZZY_MARGIN of it, with the best score. Only streets with the same numbers in their
        name are compared: to a ratio "5th" is a typo of "4th", to a city it is another street."""
        labels, streets = self._by_numbers.get(_numbers(street.name), ([], []))
        found = process.extract(street.label, labels, scorer=fuzz.ratio, limit=None, score_cutoff=FUZZY_CUTOFF)
        # a direction given is never overruled: "110 E Elm St" is not 110 W Elm St, a mile away
        kept = [(streets[i], score) for _, score, i in found if _same_directions(street, streets[i])]
        if not kept:
            return [], 0.0
        top = kept[0][1]
        return [s for s, score in kept if score > top - FUZZY_MARGIN], float(top)

    def _streets_meant(self, street: Street) -> tuple[list[Street], Literal["normalised", "fuzzy"], float]:
        """The streets a street named may be, and how sure that is: the street itself or with parts left out;
        else the same name with another type, when no street of the name has the type given (the type is
        what people get wrong); else the closest spellings. None found: an empty list."""
        named = self._candidates(street)
        if named:
            return named, "normalised", 100.0
        if street.suffix and (other_type := self._candidates(replace(street, suffix=""))):
            return other_type, "fuzzy", 90.0
        alike, score = self._spelt_like(street)
        return alike, "fuzzy", score

    def _one(
        self, doors: list[AddressPoint], streets: list[Street], how: Literal["normalised", "fuzzy"], score: float
    ) -> Placed | Unplaced:
        distinct = {(d.lat, d.long) for d in doors}
        if len(distinct) > 1:
            return Unplaced(f"matches {len(distinct)} addresses: {_differences(streets)}")
        return Placed(doors[0].lat, doors[0].long, doors[0].address, how, score)

    def _house(self, number: int, street: Street) -> Placed | Unplaced:
        """A house number on the street meant: its own door, else its block; never another street's (the street
        found is the street meant, or none is: a wrong point is worse than none)."""
        streets, how, score = self._streets_meant(street)
        if not streets:
            if _numbers(street.name):
                return Unplaced("no street of that name and number in the city's address file; check the street")
            return Unplaced("no street of that name in the city's address file; check the street's spelling")
        having = [s for s in streets if number in self._streets[s].doors]
        if having:
            return self._one([self._streets[s].doors[number] for s in having], having, how, score)
        nearby = self._on_the_block(number, streets)
        return nearby or Unplaced(
            "the street is in the city's address file but not that house number's block; check the number"
        )

    def _on_the_block(self, number: int, streets: list[Street]) -> Placed | Unplaced | None:
        """The number placed between its neighbours on one of these streets; refused if on several; None if none."""
        nearby = [p for s in streets if (p := self._between_neighbours(number, self._streets[s])) is not None]
        if not nearby:
            return None
        if len({(p.lat, p.long) for p in nearby}) > 1:
            return Unplaced(f"matches {len(nearby)} addresses: {_differences(streets)}")
        return nearby[0]

    @staticmethod
    def _between_neighbours(number: int, entry: _StreetPoints) -> Placed | None:
        """A number missing from a street: the point between its nearest listed neighbours on the same side and
        the same hundred block (or the one neighbour there is). None if the block has none."""
        block = [n for n in entry.numbers if n // 100 == number // 100 and n % 2 == number % 2]
        if not block:
            return None
        below = max((n for n in block if n < number), default=None)
        above = min((n for n in block if n > number), default=None)
        if below is None or above is None:
            door = entry.doors[below if below is not None else above]  # type: ignore[index]
            lat, long = door.lat, door.long
        else:
            share = (number - below) / (above - below)
            low, high = entry.doors[below], entry.doors[above]
            lat, long = low.lat + share * (high.lat - low.lat), low.long + share * (high.long - low.long)
        return Placed(lat, long, f"{number} {_title(entry.street)}", "nearest", 90.0)

    def _street_named(self, side: str) -> list[Street]:
        """One side of an intersection: the streets of the one name it means, or none (spellings of two names
        come as close as each other: it is not known which)."""
        street = parse_street(side)
        if street is None:
            return []
        streets, _, _ = self._streets_meant(street)
        return streets if len({s.name for s in streets}) == 1 else []

    def _crossing(self, first: str, second: str) -> Placed | Unplaced:
        """Two cross streets: the midpoint of the closest pair of their address points. Both streets' every
        spelling (all directions of a name given without one) count as the street."""
        key = (" ".join(first.lower().split()), " ".join(second.lower().split()))
        if key in self._intersections:
            return self._intersections[key]
        a, b = self._street_named(first), self._street_named(second)
        result: Placed | Unplaced
        if not a or not b:
            which = "first" if not a else "second"
            result = Unplaced(f"the {which} cross street is not in the city's address file; check its name")
        elif set(a) & set(b):
            result = Unplaced("both sides name the same street; give two streets that cross")
        else:
            xa = np.vstack([self._streets[s].xy for s in a])
            xb = np.vstack([self._streets[s].xy for s in b])
            distances = ((xa[:, None, :] - xb[None, :, :]) ** 2).sum(axis=-1)
            i, j = np.unravel_index(int(np.argmin(distances)), distances.shape)
            apart = math.sqrt(float(distances[i, j]))
            if apart > MEET_WITHIN_M:
                result = Unplaced(
                    f"those streets do not meet (their nearest addresses are {apart:.0f} m apart);"
                    " check the cross street"
                )
            else:
                pa = [d for s in a for d in self._streets[s].doors.values()][int(i)]
                pb = [d for s in b for d in self._streets[s].doors.values()][int(j)]
                label = f"{_title(pa.street or a[0])} & {_title(pb.street or b[0])}"
                result = Placed((pa.lat + pb.lat) / 2, (pa.long + pb.long) / 2, label, "intersection", 100.0)
        if len(self._intersections) < 10_000:
            self._intersections[key] = result
        return result


_SELECT = text("SELECT address, name, number, predir, street_name, suffix, postdir, lat, long FROM city.address_points")


class AddressPointGeocoder:
    """The Geocoder port over the city's address points, read from PostgreSQL once at a service's start."""

    def __init__(self, index: AddressIndex, kinds: Collection[PlaceKind] = PLACE_KINDS) -> None:
        self.index = index
        self._kinds = kinds

    @classmethod
    async def load(cls, engine: AsyncEngine) -> AddressPointGeocoder:
        async with engine.connect() as conn:
            rows = (await conn.execute(_SELECT)).all()
        return cls(AddressIndex(point_of_row(*row) for row in rows))

    def locate(self, address: str, kinds: Collection[PlaceKind] | None = None) -> Placed | Unplaced:
        return self.index.locate(address, self._kinds if kinds is None else kinds)


def point_of_row(
    address: str,
    name: str | None,
    number: int | None,
    predir: str,
    street_name: str | None,
    suffix: str,
    postdir: str,
    lat: float,
    long: float,
) -> AddressPoint:
    street = Street(predir, street_name, suffix, postdir) if street_name else None
    return AddressPoint(address, lat, long, number, street, name)


async def address_geocoder(database_url: str) -> Geocoder:
    """The geocoder a service starts with: the city's address points, or NoGeocoder when none are loaded."""
    engine = make_engine(database_url, pool_size=1)
    try:
        geocoder = await AddressPointGeocoder.load(engine)
    finally:
        await engine.dispose()
    if not len(geocoder.index):
        return NoGeocoder()
    log.info("address points loaded", points=len(geocoder.index))
    return geocoder
