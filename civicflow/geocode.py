"""Placing an address on the map: the port every service uses, so area rules apply to a request that gave
only an address. The implementation backed by a city's own address-point file lives beside it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, Protocol

# What a request may name as its place: a house number and street, two cross streets, or a place the city's
# address file lists by name (City Hall). Each service says which it takes (ServiceSpec.places).
PlaceKind = Literal["address", "intersection", "landmark"]
PLACE_KINDS: tuple[PlaceKind, ...] = ("address", "intersection", "landmark")


@dataclass(frozen=True)
class Placed:
    """Where an address is, and how sure the match is."""

    lat: float
    long: float
    matched: str  # the address-point file's own spelling of the address found
    # exact: as the file spells it; normalised: the same number and street however written; fuzzy: a street
    # named with a typo; nearest: a number the file lacks, between its neighbours; intersection; landmark
    how: Literal["exact", "normalised", "fuzzy", "nearest", "intersection", "landmark"]
    score: float  # 100 for exact and normalised matches; rapidfuzz's similarity for fuzzy ones


@dataclass(frozen=True)
class Unplaced:
    """Why an address could not be placed; said in words a call-taker can act on."""

    reason: str


class Geocoder(Protocol):
    def locate(self, address: str, kinds: Collection[PlaceKind] | None = None) -> Placed | Unplaced:
        """Where the address is; `kinds` limits what the text may be taken as (None: anything)."""
        ...


class NoGeocoder:
    """A city with no address-point file: no address can be placed, and every case says so."""

    def locate(self, address: str, kinds: Collection[PlaceKind] | None = None) -> Placed | Unplaced:
        return Unplaced("the city has no address-point file to place addresses with")
