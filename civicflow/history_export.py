"""Reading a city's old system's CSV export row by row through the import mapping (`civicflow.history`). Each
data row becomes a `HistoricalRow` (the raw request in the shape intake's `validate_request` takes, with its
original times and the old department) or a `RowRefused` saying which field is wrong and why. Refusals never
quote a resident's words: only values that look categorical (a type, a channel, a status, a date), and of
anything else its length and kind, since a row whose columns shifted holds descriptions and addresses where
the type should be. Pure but for reading the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, NamedTuple
from zoneinfo import ZoneInfo

from civicflow.codes import CHANNELS, CODE, channel_of, channel_problem, derive_code
from civicflow.history import HistoryMapping, HistoryStatus, name_key

# A cell larger than this is not a 311 field; the row is still read whole, so intake refuses it by name.
MAX_CELL_BYTES = 16 * 1024 * 1024
_PLAIN_STATUSES: dict[str, HistoryStatus] = {"open": "open", "closed": "closed"}
_SHOWN = 40  # a value longer than this is not categorical, and is not shown back in a refusal
_WORDS = 5  # nor one of more words than this ("Noise - Residential/Loud Party" has four)
# The range of a past request's times: the router's own API takes no time before 2000, an old system's
# "never" (9999-12-31) overflows the due-date arithmetic, and nothing was submitted after the import began.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_AFTER_START = timedelta(days=1)


@dataclass(frozen=True)
class HistoricalRow:
    """One past request: what intake is asked to accept, and what only the import and the backtest need."""

    row_number: int  # the data row's number in the file, the header not counted
    external_id: str
    request: dict[str, Any]  # the shape services.intake.domain.validate_request takes
    submitted_at: datetime  # aware
    closed_at: datetime | None
    status: HistoryStatus
    old_department: str | None  # our department id for the old system's agency, when the mapping names it
    old_agency: str | None  # the agency as the old system wrote it


@dataclass(frozen=True)
class RowRefused:
    """A row that cannot be used as it stands: which field and why (never the resident's words)."""

    row_number: int
    external_id: str | None
    field: str
    reason: str


@dataclass(frozen=True)
class ExportProblem(Exception):
    """The file itself cannot be read as the mapping says (no header, a column the mapping names is missing)."""

    message: str

    def __str__(self) -> str:
        return self.message


class _Line(NamedTuple):  # a tuple: one is made for every line of the file
    number: int  # the physical line's number in the file, from 1
    offset: int  # of its first byte
    text: str


class _Lines:
    """The file's physical lines, decoded so that an invalid UTF-8 byte survives (as a lone surrogate) and
    can be found again with its byte offset; counts the bytes read for a progress bar. The csv reader takes
    exactly a record's lines, so the lines held are those of the record being read; lines given back with
    `read_again` are read before the rest of the file (to resynchronise after an unclosed quote)."""

    def __init__(self, binary: BinaryIO) -> None:
        self._binary = binary
        self.bytes_read = 0
        self.held: list[_Line] = []  # the current record's lines
        self._again: list[_Line] = []  # lines to read again, last first

    def __iter__(self) -> Iterator[str]:
        physical = self._physical()
        while True:
            line = self._again.pop() if self._again else next(physical, None)
            if line is None:
                return
            self.held.append(line)
            yield line.text

    def _physical(self) -> Iterator[_Line]:
        for number, raw in enumerate(self._binary, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                self.bytes_read += 3
                raw = raw[3:]
            yield _Line(number, self.bytes_read, raw.decode("utf-8", "surrogateescape"))
            self.bytes_read += len(raw)

    def read_again(self, lines: list[_Line]) -> None:
        self._again.extend(reversed(lines))

    def bad_byte_offset(self) -> int | None:
        """The file offset of the first byte of the current record that is not UTF-8, or None."""
        for start, text in ((line.offset, line.text) for line in self.held):
            found = _SURROGATE.search(text)
            if found:
                return start + len(text[: found.start()].encode("utf-8", "surrogateescape"))
        return None

    def record_done(self) -> None:
        self.held.clear()


_SURROGATE = re.compile("[\udc80-\udcff]")


def read_export(
    binary: BinaryIO, mapping: HistoryMapping, started_at: datetime | None = None
) -> Iterator[HistoricalRow | RowRefused]:
    """Each data row of the export as a past request, or why it cannot be one (ExportReader.rows)."""
    return ExportReader(binary, mapping, started_at).rows()


class ExportReader:
    """Reads an export row by row; `bytes_read` says how far it got (for a progress bar). A time after
    `started_at` (the import's start; the clock when not given) plus a day is refused."""

    def __init__(self, binary: BinaryIO, mapping: HistoryMapping, started_at: datetime | None = None) -> None:
        self.mapping = mapping
        self.lines = _Lines(binary)
        self.zone = mapping.zone
        self.latest = (started_at or datetime.now(UTC)) + LATEST_AFTER_START

    @property
    def bytes_read(self) -> int:
        return self.lines.bytes_read

    def rows(self) -> Iterator[HistoricalRow | RowRefused]:
        """A missing column the mapping names stops the reading (ExportProblem); anything wrong in one row
        refuses that row and the reading goes on."""
        csv.field_size_limit(MAX_CELL_BYTES)
        reader = csv.reader(self.lines, strict=False)
        try:
            header = next(reader)
        except StopIteration:
            raise ExportProblem("the file is empty: the first line should name the columns") from None
        except csv.Error as exc:
            if _cr_alone(self.lines.held):
                raise ExportProblem(_CR_ONLY) from None
            raise ExportProblem(f"the header line cannot be read as CSV ({exc})") from None
        if _cr_alone(self.lines.held):
            raise ExportProblem(_CR_ONLY)
        if self.lines.bad_byte_offset() is not None:
            raise ExportProblem("the header line is not UTF-8 text; save the export as UTF-8 (CSV UTF-8)")
        names = [name.strip() for name in header]
        index = {name: i for i, name in enumerate(names) if name}
        missing = sorted({c for c in self.mapping.columns.used().values() if c not in index})
        if missing:
            raise ExportProblem(
                f"the mapping names columns the file does not have: {', '.join(missing)};"
                f" its columns are: {', '.join(n for n in names if n)[:500]}"
            )
        fields = {name: index[column] for name, column in self.mapping.columns.used().items()}
        self.lines.record_done()
        row_number = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row_number += 1
                lone_cr = _cr_alone(self.lines.held)
                self.lines.record_done()
                reason = (
                    "has a carriage return (CR) alone inside a cell that is not quoted; save the export with CRLF or"
                    " LF line ends"
                    if lone_cr
                    else f"cannot be read as CSV: {exc}"
                )
                yield RowRefused(row_number, None, "row", reason)
                continue
            if not any(cell.strip() for cell in cells):
                self.lines.record_done()
                continue  # a blank line is not a row
            row_number += 1
            runaway = _runaway_quote(self.lines.held, len(header))
            if runaway is not None:
                # the rows a quote left open swallowed are read again, each on its own
                start = self.lines.held[0].number
                self.lines.read_again(self.lines.held[runaway:])
                self.lines.record_done()
                yield RowRefused(
                    row_number,
                    None,
                    "row",
                    f"has an unclosed quote starting on line {start}: its cell ran on into the rows after it, which"
                    " are read again on their own; close the quote, or double a quote that is part of the text",
                )
                continue
            offset = self.lines.bad_byte_offset()
            self.lines.record_done()
            if offset is not None:
                yield RowRefused(
                    row_number,
                    None,
                    "row",
                    f"is not UTF-8 text: an invalid byte at byte offset {offset} of the file; save the export"
                    " as UTF-8 (CSV UTF-8) or fix that byte",
                )
            else:
                values = {name: _cell(cells, i) for name, i in fields.items()}
                yield row_from_cells(row_number, values, self.mapping, self.zone, self.latest)


_CR_ONLY = (
    "its lines end with a carriage return (CR) alone, as old Mac spreadsheets save CSV; save it again with"
    " CRLF (Windows) or LF line ends, as CSV UTF-8"
)


def _cr_alone(lines: list[_Line]) -> bool:
    """Whether a record's lines hold a carriage return that does not end a line (a CR-only file reads as one
    line)."""
    return any("\r" in line.text.rstrip("\r\n") for line in lines)


def _runaway_quote(lines: list[_Line], width: int) -> int | None:
    """Where the rows swallowed by a quote never closed begin among a record's lines: the first line after
    its first that reads on its own as a whole row (a cell per column, its quotes balanced). A description's
    own lines hold text, not a row's worth of separated cells, and its last line closes its quote."""
    if len(lines) < 2 or width < 2:
        return None
    for index in range(1, len(lines)):
        text = lines[index].text
        balanced = text.count('"') % 2 == 0  # the line that closes a quoted cell has an odd number of quotes
        if balanced and text.count(",") >= width - 1 and len(next(csv.reader([text]), [])) == width:
            return index
    return None


def _cell(cells: list[str], index: int) -> str | None:
    """A cell's text, None when blank or when a short row has no cell there."""
    if index >= len(cells):
        return None
    value = cells[index].strip()
    return value or None


def row_from_cells(
    row_number: int, values: dict[str, str | None], mapping: HistoryMapping, zone: ZoneInfo, latest: datetime
) -> HistoricalRow | RowRefused:
    """One row's cells (by field; None = blank) as a past request, or the first thing wrong with it. A time
    after `latest` or before 2000 is refused."""
    columns = mapping.columns
    external_id = values.get("external_id") or content_id(values)

    def refused(field: str, reason: str) -> RowRefused:
        column = columns.used().get(field)
        return RowRefused(row_number, external_id, field, f"{reason} (column {column!r})" if column else reason)

    service_name = values.get("service")
    if service_name is None:
        return refused("service", "is blank; every request needs its type")
    code = mapping.services.get(name_key(service_name))
    if code is None:
        if CODE.match(service_name) and not mapping.services:
            code = service_name  # the export already uses codes
        elif mapping.derive_unmapped_services:
            code = derive_code(service_name)
        else:
            example = f" (for example {derive_code(service_name)!r})" if _categorical(service_name) else ""
            return refused(
                "service",
                f"{_shown(service_name)} is not in the mapping's services; add it there with our code{example}"
                " or set derive_unmapped_services: true",
            )

    submitted_text = values.get("submitted_at")
    if submitted_text is None:
        return refused("submitted_at", "is blank; an imported request keeps its original submitted time")
    submitted_at = parse_time(submitted_text, mapping, zone, latest)
    if isinstance(submitted_at, str):
        return refused("submitted_at", submitted_at)
    closed_at: datetime | None = None
    if (closed_text := values.get("closed_at")) is not None:
        closed = parse_time(closed_text, mapping, zone, latest, closing=True)
        if isinstance(closed, str):
            return refused("closed_at", closed)
        closed_at = None if closed.date() in mapping.not_closed_dates else closed
        if closed_at is not None and closed_at < submitted_at:
            return refused("closed_at", "is before the submitted time; check the two columns")

    status_text = values.get("status")
    if status_text is None:
        status: HistoryStatus = "closed" if closed_at is not None else "open"
    else:
        found = mapping.statuses.get(name_key(status_text)) or _PLAIN_STATUSES.get(name_key(status_text))
        if found is None:
            return refused(
                "status",
                f"{_shown(status_text)} is not in the mapping's statuses; add it there as open or closed",
            )
        status = found

    request: dict[str, Any] = {"service_code": code}
    description = values.get("description") or mapping.description_when_blank
    if description is not None:
        request["description"] = description

    location: dict[str, Any] = {}
    if values.get("address") is not None:
        location["address"] = values["address"]
    for axis in ("lat", "long"):
        if (number := values.get(axis)) is not None:
            try:
                location[axis] = float(number)
            except ValueError:
                return refused(axis, "is not a number of degrees")
            if not math.isfinite(location[axis]):
                return refused(axis, "must be a number of degrees, not NaN or infinity")
    if location:
        request["location"] = location

    channel_text = values.get("channel")
    if channel_text is not None:
        channel = mapping.channels.get(name_key(channel_text)) or channel_of(channel_text)
        if channel is None:
            problem = (
                channel_problem(channel_text)
                if _categorical(channel_text)
                else f"{_shown(channel_text)} is not a channel; use one of {', '.join(CHANNELS)}"
            )
            return refused("channel", f"{problem}; or map it under the mapping's channels")
        request["channel"] = channel
    elif mapping.default_channel is not None:
        request["channel"] = mapping.default_channel

    contact = {
        part: values[f"contact_{part}"]
        for part in ("name", "email", "phone")
        if values.get(f"contact_{part}") is not None
    }
    if contact:
        request["contact"] = contact
    attributes = {
        name.removeprefix("attributes."): value
        for name, value in values.items()
        if name.startswith("attributes.") and value is not None
    }
    if attributes:
        request["attributes"] = attributes

    agency = values.get("department")
    return HistoricalRow(
        row_number=row_number,
        external_id=external_id,
        request=request,
        submitted_at=submitted_at,
        closed_at=closed_at,
        status=status,
        old_department=mapping.departments.get(name_key(agency)) if agency else None,
        old_agency=agency,
    )


def content_id(values: dict[str, str | None]) -> str:
    """The external id of a row that has none: a digest of its mapped cells (not its contact's, and not of its
    place in the file, so a re-export sorted another way gives each row the same id). Two rows alike in
    every cell are one request."""
    content = sorted(
        (name, value)
        for name, value in values.items()
        if value is not None and name != "external_id" and not name.startswith("contact_")
    )
    return "content-" + hashlib.blake2b(json.dumps(content).encode(), digest_size=16).hexdigest()


def parse_time(
    text: str, mapping: HistoryMapping, zone: ZoneInfo, latest: datetime, closing: bool = False
) -> datetime | str:
    """The instant a cell names (a naive time is the city's wall clock), or what is wrong with it, also when it
    is before 2000 or after `latest`. A `closing` time on a date among the mapping's `not_closed_dates` is
    given back whatever its year, for the caller to read as blank."""
    moment = None
    for form in mapping.timestamp_formats:
        try:
            moment = datetime.strptime(text, form)
            break
        except ValueError:
            continue
    if moment is None:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return (
                f"{_shown(text)} is not a time in any of the mapping's timestamp_formats"
                f" ({', '.join(mapping.timestamp_formats)}) nor ISO 8601"
            )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    if closing and moment.date() in mapping.not_closed_dates:
        return moment
    try:
        instant = moment.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or 9999, which no request is
        instant = None
    if instant is None or not EARLIEST <= instant <= latest:
        return (
            f"{_shown(text)} is outside the times an imported request may have ({EARLIEST:%Y-%m-%d} to"
            f" {latest:%Y-%m-%d}); an old system's 'never' date (like 9999-12-31) in the closing column can be"
            " listed under the mapping's not_closed_dates"
        )
    return moment


_DATE_LIKE = re.compile(
    r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}"  # the date
    r"([ T]\d{1,2}(:\d{1,2}){0,2}(\.\d+)?( ?[AaPp][Mm])?)?([+-]\d\d:?\d\d|Z)?"  # the time and its offset
)


def _categorical(value: str) -> bool:
    """Whether a value looks like a name an export files requests under (a type, a channel, a status) or a
    date, not like a resident's words, an address, a phone number or an e-mail address."""
    if len(value) > _SHOWN or "@" in value or not value.isprintable():
        return False
    if sum(any(ch.isalnum() for ch in word) for word in value.split()) > _WORDS:
        return False  # a sentence
    return not any(ch.isdigit() for ch in value) or _DATE_LIKE.fullmatch(value) is not None


def _shown(value: str) -> str:
    """A value as a refusal may show it: quoted when categorical, otherwise only its length and kind."""
    if _categorical(value):
        return repr(value)
    kinds = [
        kind
        for kind, present in (
            ("letters", any(ch.isalpha() for ch in value)),
            ("digits", any(ch.isdigit() for ch in value)),
            ("spaces", any(ch.isspace() for ch in value)),
            ("an @", "@" in value),
            ("control characters", any(not ch.isprintable() and not ch.isspace() for ch in value)),
        )
        if present
    ]
    return f"a value of {len(value)} characters ({', '.join(kinds) or 'punctuation'}; not shown)"


def field_column(mapping: HistoryMapping, field: str) -> str | None:
    """The column(s) a request field (as intake names it: location.address, contact.email…) came from."""
    used = mapping.columns.used()
    if field == "location":
        return ", ".join(used[name] for name in ("address", "lat", "long") if name in used) or None
    name = {
        "service_code": "service",
        "location.address": "address",
        "location.lat": "lat",
        "location.long": "long",
        "contact.name": "contact_name",
        "contact.email": "contact_email",
        "contact.phone": "contact_phone",
    }.get(field, field)
    return used.get(name)


def refused_rows_header() -> list[str]:
    return ["row", "external_id", "field", "reason"]


def refused_row_cells(refusal: RowRefused) -> list[str]:
    """A refusal as a line of the refused-rows CSV (an external id that is not plain text is shown escaped)."""
    external = refusal.external_id or ""
    if not external.isprintable() or len(external) > 128:
        external = repr(external[:128])
    return [str(refusal.row_number), external, refusal.field, refusal.reason]
