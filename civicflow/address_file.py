"""A city's address-point file (a CSV of address, lat, long, as cities publish them) read tolerantly and
stored in PostgreSQL (city.address_points), replacing the set it had in one transaction.

Headers are found whatever their case and spelling (ADDRESS, Full_Address, Latitude, LAT, y, LONG, lon,
lng, x…; or named on the command line); a BOM, blank lines and spaces around values are fine. A row that
cannot be used is refused with its row number and why (no address, a coordinate that is not a number, a
point outside the city's service area, the same address as an earlier row…); the others load.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from civicflow.address_points import AddressPoint
from civicflow.addresses import MAX_ADDRESS_CHARS, parse_address
from civicflow.city import ServiceArea
from civicflow.db import libpq_url

ADDRESS_HEADERS = ("address", "full_address", "fulladdress", "addr", "street_address", "site_address", "address_full")
LAT_HEADERS = ("lat", "latitude", "y", "point_y", "lat_y")
LONG_HEADERS = ("long", "lon", "lng", "longitude", "x", "point_x", "long_x")
NAME_HEADERS = ("name", "place_name", "landmark", "place", "common_name")
MAX_FILE_BYTES = 512 * 1024 * 1024
_NAME_CHARS = 200


class AddressFileError(ValueError):
    """The file as a whole cannot be read (no such columns, not text); says what to do."""


@dataclass
class AddressFile:
    points: list[AddressPoint] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # each point's row in the file (1 is the header)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (row, why)
    blank: int = 0

    def report(self, shown: int = 20) -> str:
        lines = [f"{len(self.points)} address points read; {len(self.refused)} rows refused"]
        lines += [f"  row {row}: {why}" for row, why in self.refused[:shown]]
        if len(self.refused) > shown:
            lines.append(f"  … and {len(self.refused) - shown} more")
        return "\n".join(lines)


def _column(header: list[str], given: str | None, known: tuple[str, ...], what: str) -> int | None:
    names = [h.strip().lower().replace(" ", "_") for h in header]
    wanted = [given.strip().lower().replace(" ", "_")] if given else list(known)
    for name in wanted:
        if name in names:
            return names.index(name)
    if given:
        raise AddressFileError(f"no column {given!r} for the {what}; the file's columns are: {', '.join(header)}")
    return None


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _coordinate(value: str, low: float, high: float) -> float | str:
    try:
        number = float(value.strip())
    except ValueError:
        return "is not a number" if value.strip() else "is empty"
    if not math.isfinite(number):
        return "is not a finite number"
    if not low <= number <= high:
        return f"is not between {low:g} and {high:g}"
    return number


# No address, coordinate or place name is near this long; a longer field is a broken file, not a row.
MAX_FIELD_CHARS = 128 * 1024


def read_address_file(
    content: bytes,
    area: ServiceArea | None = None,
    address_column: str | None = None,
    lat_column: str | None = None,
    long_column: str | None = None,
    name_column: str | None = None,
) -> AddressFile:
    """The usable points of a file's bytes and every refused row with why. AddressFileError when the file
    as a whole cannot be read."""
    if len(content) > MAX_FILE_BYTES:
        raise AddressFileError(f"the file is over {MAX_FILE_BYTES // 2**20} MiB; split it or check it is the right one")
    text = content.decode("utf-8-sig", errors="replace")  # a bad byte costs its row (below), not the file
    # csv's limit is one for the whole process (the history import raises it for its own cells): set ours
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise AddressFileError("the file is empty or its first line has no column names")
    address_at = _column(header, address_column, ADDRESS_HEADERS, "address")
    lat_at = _column(header, lat_column, LAT_HEADERS, "latitude")
    long_at = _column(header, long_column, LONG_HEADERS, "longitude")
    name_at = _column(header, name_column, NAME_HEADERS, "place name")
    missing = [
        what for what, at in (("address", address_at), ("latitude", lat_at), ("longitude", long_at)) if at is None
    ]
    if missing:
        raise AddressFileError(
            f"no column for the {_listed(missing)};"
            f" the file's columns are: {', '.join(h.strip() for h in header)}."
            " Name them with --address-column, --lat-column and --long-column"
        )
    assert address_at is not None and lat_at is not None and long_at is not None
    found = AddressFile()
    seen: dict[str, int] = {}
    try:
        for row_number, row in enumerate(reader, start=2):
            _take_row(found, seen, row_number, row, area, address_at, lat_at, long_at, name_at)
    except csv.Error as exc:  # a field over MAX_FIELD_CHARS, a quote never closed: the reader cannot go on
        raise AddressFileError(f"line {reader.line_num}: {exc}; fix that line (the rows before it are fine)") from None
    return found


def _take_row(
    found: AddressFile,
    seen: dict[str, int],
    row_number: int,
    row: list[str],
    area: ServiceArea | None,
    address_at: int,
    lat_at: int,
    long_at: int,
    name_at: int | None,
) -> None:
    """Add the row's point to `found`, or its refusal."""
    if not any(cell.strip() for cell in row):
        found.blank += 1
        return
    why = _row_problem(row, address_at, lat_at, long_at, name_at)
    if why:
        found.refused.append((row_number, why))
        return
    address = " ".join(row[address_at].split())
    lat, long = _coordinate(row[lat_at], -90, 90), _coordinate(row[long_at], -180, 180)
    if isinstance(lat, str) or isinstance(long, str):
        problems = [f"{w} {p}" for w, p in (("latitude", lat), ("longitude", long)) if isinstance(p, str)]
        found.refused.append((row_number, "; ".join(problems)))
        return
    if area is not None and not area.covers(lat, long):
        found.refused.append((row_number, f"the point is outside {area.name}'s service area"))
        return
    name = " ".join(row[name_at].split()) if name_at is not None and name_at < len(row) else ""
    if len(name) > _NAME_CHARS or not name.isprintable():
        found.refused.append((row_number, f"the place name is not plain text of at most {_NAME_CHARS} characters"))
        return
    parts = parse_address(address)
    if parts is None and not name:
        found.refused.append((row_number, "the address has no house number and street, and the row no place name"))
        return
    key = parts.key if parts else f"place:{name.lower()}"
    if key in seen:
        found.refused.append((row_number, f"the same address as row {seen[key]}"))
        return
    seen[key] = row_number
    found.points.append(
        AddressPoint(address, lat, long, parts.number if parts else None, parts.street if parts else None, name or None)
    )
    found.rows.append(row_number)


def _row_problem(row: list[str], address_at: int, lat_at: int, long_at: int, name_at: int | None) -> str | None:
    if len(row) <= max(address_at, lat_at, long_at):
        return (
            f"has {len(row)} columns; the address, latitude and longitude need {max(address_at, lat_at, long_at) + 1}"
        )
    # only the columns read count: a notes column may hold anything. Any run of spaces (the non-breaking ones
    # of a spreadsheet's export, a line break inside a quoted cell) reads as one space.
    used = [row[at] for at in (address_at, lat_at, long_at, name_at) if at is not None and at < len(row)]
    if any("\ufffd" in cell for cell in used):
        return "is not UTF-8 text; save the file as UTF-8"
    if any(not " ".join(cell.split()).isprintable() for cell in used):
        return "has control characters in its address, coordinates or place name"
    address = row[address_at].strip()
    if not address:
        return "has no address"
    if len(address) > MAX_ADDRESS_CHARS:
        return f"the address is over {MAX_ADDRESS_CHARS} characters"
    return None


def digest_of(content: bytes, columns: Sequence[str | None] = ()) -> str:
    """Which file and column choice is loaded: a blake2b of its bytes and the columns named (the address,
    latitude, longitude and place name's), the same whoever loads it: none named is the usual names'."""
    options = "|".join(c or "" for c in columns) if any(columns) else ""
    return hashlib.blake2b(content + b"\0" + options.encode(), digest_size=16).hexdigest()


async def loaded_digest(database_url: str) -> str | None:
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        digest: str | None = await conn.fetchval("SELECT digest FROM city.address_file")
        return digest
    finally:
        await conn.close()


_COLUMNS = ["row_number", "address", "name", "number", "predir", "street_name", "suffix", "postdir", "lat", "long"]


async def replace_address_points(database_url: str, found: AddressFile, digest: str, source: str) -> None:
    """The city's address points become exactly these, in one transaction: a service starting meanwhile reads
    the old set or the new one, never a mixture. COPY, so a city's half a million rows take seconds."""
    records = [
        (
            row,
            p.address,
            p.name,
            p.number,
            p.street.predir if p.street else "",
            p.street.name if p.street else None,
            p.street.suffix if p.street else "",
            p.street.postdir if p.street else "",
            p.lat,
            p.long,
        )
        for row, p in zip(found.rows, found.points, strict=True)
    ]
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM city.address_points")
            await conn.copy_records_to_table(
                "address_points",
                schema_name="city",
                records=records,
                columns=_COLUMNS,
            )
            await conn.execute(
                "INSERT INTO city.address_file (digest, source, points) VALUES ($1, $2, $3)"
                " ON CONFLICT (only_one) DO UPDATE SET digest = $1, source = $2, points = $3, loaded_at = now()",
                digest,
                source,
                len(records),
            )
    finally:
        await conn.close()


@dataclass(frozen=True)
class Loaded:
    found: AddressFile | None  # None: the same file was loaded already, nothing read
    path: Path

    @property
    def replaced(self) -> bool:
        """Whether the file's points are now the city's: a file with no usable row changes nothing."""
        return self.found is not None and bool(self.found.points)


async def load_if_changed(database_url: str, path: Path, area: ServiceArea | None) -> Loaded:
    """Load the file unless the database already holds this very file (its digest). A file whose every row
    is refused (the service area changed, the wrong file) keeps the points loaded: none would leave intake
    placing nothing."""
    content = path.read_bytes()  # noqa: ASYNC240 (once, at start, before anything is served)
    digest = digest_of(content)
    if await loaded_digest(database_url) == digest:
        return Loaded(None, path)
    found = read_address_file(content, area)
    if found.points:
        await replace_address_points(database_url, found, digest, path.name)
    return Loaded(found, path)
