"""Placing an address on the map: the port every service uses, so area rules apply to a request that gave
only an address. The implementation backed by a city's own address-point file lives beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class Placed:
    """Where an address is, and how sure the match is."""

    lat: float
    long: float
    matched: str  # the address-point file's own spelling of the address found
    how: Literal["exact", "normalised", "fuzzy"]
    score: float  # 100 for exact and normalised matches; rapidfuzz's similarity for fuzzy ones


@dataclass(frozen=True)
class Unplaced:
    """Why an address could not be placed; said in words a call-taker can act on."""

    reason: str


class Geocoder(Protocol):
    def locate(self, address: str) -> Placed | Unplaced: ...


class NoGeocoder:
    """A city with no address-point file: no address can be placed, and every case says so."""

    def locate(self, address: str) -> Placed | Unplaced:
        return Unplaced("the city has no address-point file to place addresses with")
