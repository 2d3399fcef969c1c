"""How an address is read for matching: its house number and street, in one spelling whatever was written.

"1234 north Main Street, Apt 4, Sample City IL 60601", "1234 N. MAIN ST" and "1234 n main st #4" all read
as `1234 n main st`. The unit, city, state and ZIP are dropped (an address point is a building's door);
directions, street types and ordinal words take their USPS abbreviations; case, punctuation and spacing
do not count. Plain forms ("1234 N Main St", then perhaps a unit, then after a comma anything) are read by
a small grammar here, because `usaddress`'s tagger takes ~100 µs an address and intake reads one per request
(`civicflow import` one per row); anything else goes to `usaddress`: words after the street type ("100 Oak St
Springfield IL", a city with no comma before it; or a type word inside the name, "100 Court St"), a unit word
the grammar does not know, another order. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import usaddress

# What a person may write for each direction and street type, as the USPS abbreviates it (Publication 28,
# the types a city's streets commonly have).
DIRECTIONS = {
    "n": "n", "north": "n", "s": "s", "south": "s", "e": "e", "east": "e", "w": "w", "west": "w",
    "ne": "ne", "northeast": "ne", "nw": "nw", "northwest": "nw", "se": "se", "southeast": "se",
    "sw": "sw", "southwest": "sw",
}  # fmt: skip
STREET_TYPES = {
    "st": "st", "street": "st", "str": "st", "stre": "st",
    "ave": "ave", "avenue": "ave", "av": "ave", "aven": "ave", "avn": "ave", "avenu": "ave",
    "blvd": "blvd", "boulevard": "blvd", "boul": "blvd", "boulv": "blvd",
    "rd": "rd", "road": "rd", "dr": "dr", "drive": "dr", "drv": "dr", "ln": "ln", "lane": "ln",
    "ct": "ct", "court": "ct", "pl": "pl", "place": "pl", "ter": "ter", "terrace": "ter",
    "pkwy": "pkwy", "parkway": "pkwy", "pky": "pkwy", "hwy": "hwy", "highway": "hwy",
    "way": "way", "wy": "way", "cir": "cir", "circle": "cir", "sq": "sq", "square": "sq",
    "trl": "trl", "trail": "trl", "aly": "aly", "alley": "aly", "plz": "plz", "plaza": "plz",
    "row": "row", "walk": "walk", "xing": "xing", "crossing": "xing",
}  # fmt: skip
_ORDINAL_WORDS = {
    "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th", "sixth": "6th",
    "seventh": "7th", "eighth": "8th", "ninth": "9th", "tenth": "10th", "eleventh": "11th", "twelfth": "12th",
    "thirteenth": "13th", "fourteenth": "14th", "fifteenth": "15th", "sixteenth": "16th",
    "seventeenth": "17th", "eighteenth": "18th", "nineteenth": "19th", "twentieth": "20th",
}  # fmt: skip
# Words that start what follows the street on a home's address (a unit): the fast grammar hands these over.
_UNIT_WORDS = {"apt", "apartment", "unit", "ste", "suite", "fl", "floor", "rm", "room", "bldg", "building", "lot"}
MAX_ADDRESS_CHARS = 300
_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"^(\d{1,6})(?:[a-z]|-?\d{0,2}[a-z]?)?$")  # 1234, 1234a, 12-34 (a lettered or split number)


@dataclass(frozen=True, slots=True)
class Street:
    """A street as matched: "N Main St" is Street("n", "main", "st", "")."""

    predir: str
    name: str
    suffix: str
    postdir: str

    @property
    def label(self) -> str:
        """One string for fuzzy comparison and for saying which street was meant."""
        return " ".join(p for p in (self.predir, self.name, self.suffix, self.postdir) if p)


@dataclass(frozen=True, slots=True)
class AddressParts:
    """A house number and its street; number None for a street alone (one side of an intersection)."""

    number: int | None
    street: Street

    @property
    def key(self) -> str:
        return f"{self.number} {self.street.label}" if self.number is not None else self.street.label


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: "N. Main St." -> ["n", "main", "st"]."""
    return _WORD.findall(text.lower())


def _name_word(word: str) -> str:
    return _ORDINAL_WORDS.get(word, word)


def street_of(tokens: list[str]) -> Street | None:
    """A street from its words, e.g. ["north", "main", "street"]; None when no name is left."""
    predir = postdir = suffix = ""
    rest = list(tokens)
    # from the end inwards, and never the last word left: "North Ave" is the avenue named North
    if len(rest) > 1 and rest[-1] in DIRECTIONS:
        postdir = DIRECTIONS[rest.pop()]
    if len(rest) > 1 and rest[-1] in STREET_TYPES:
        suffix = STREET_TYPES[rest.pop()]
    if len(rest) > 1 and rest[0] in DIRECTIONS:
        predir = DIRECTIONS[rest.pop(0)]
    if not rest:
        return None
    return Street(predir, " ".join(_name_word(w) for w in rest), suffix, postdir)


def _fast(text: str) -> AddressParts | None:
    """The plain forms, without the tagger: a number and a street, then perhaps a unit ("#4", "Apt 2B") and,
    after a comma, anything (a city, a ZIP). None when the text is anything else."""
    first = text.split(",", 1)[0].split("#", 1)[0]
    tokens = words(first)
    unit = next((i for i, t in enumerate(tokens) if i >= 2 and t in _UNIT_WORDS), None)
    if unit is not None:
        tokens = tokens[:unit]
    if len(tokens) < 2 or len(tokens) > 7 or not tokens[0].isdigit() or len(tokens[0]) > 6:
        return None
    if any(t in _UNIT_WORDS or t.isdigit() for t in tokens[1:]):
        return None
    core = tokens[1:-1] if tokens[-1] in DIRECTIONS else tokens[1:]
    if any(t in STREET_TYPES for t in core[:-1]):  # the type ends the street: what follows is a city, or a name
        return None
    street = street_of(tokens[1:])
    return AddressParts(int(tokens[0]), street) if street else None


def _tagged(text: str) -> AddressParts | None:
    try:
        tags, _ = usaddress.tag(text)
    except usaddress.RepeatedLabelError:
        return None
    found = _NUMBER.match(" ".join(words(tags.get("AddressNumber", ""))).replace(" ", ""))
    name_words = words(tags.get("StreetName", ""))
    if found is None or not name_words:
        return None
    tokens = [
        *words(tags.get("StreetNamePreDirectional", "")),
        *words(tags.get("StreetNamePreType", "")),
        *name_words,
        *words(tags.get("StreetNamePostType", "")),
        *words(tags.get("StreetNamePostDirectional", "")),
    ]
    street = street_of(tokens)
    return AddressParts(int(found.group(1)), street) if street else None


@lru_cache(maxsize=65536)
def parse_address(text: str) -> AddressParts | None:
    """The house number and street of an address as people write it; None when it has no house number and
    street (a landmark's name, an intersection, nothing). The caller checks size and control characters."""
    return _fast(text) or _tagged(text)


def parse_street(text: str) -> Street | None:
    """A street named alone ("N Main St", "main street", "First Ave")."""
    return street_of(words(text))


def place_name(text: str) -> str:
    """A landmark's name for matching: "The City Hall!" -> "city hall"."""
    tokens = words(text)
    if tokens and tokens[0] == "the":
        tokens = tokens[1:]
    return " ".join(tokens)
