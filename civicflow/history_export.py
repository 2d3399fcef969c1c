"""Reading a city's old system's CSV export row by row through the import mapping (`civicflow.history`). Each
data row becomes a `HistoricalRow` (the raw request in the shape intake's `validate_request` takes, with its
original times and the old department) or a `RowRefused` saying which field is wrong and why. Refusals never
quote a resident's words: only the kinds of values an export files under a few fixed names (a type, a
channel, a status, a date). Pure but for reading the file.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from civicflow.codes import CODE, channel_of, channel_problem, derive_code
from civicflow.history import HistoryMapping, HistoryStatus, name_key

# A cell larger than this is not a 311 field; the row is still read whole, so intake refuses it by name.
MAX_CELL_BYTES = 16 * 1024 * 1024
_PLAIN_STATUSES: dict[str, HistoryStatus] = {"open": "open", "closed": "closed"}
_SHOWN = 40  # characters of a categorical value shown back in a refusal


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


class _Lines:
    """The file's physical lines, decoded so that an invalid UTF-8 byte survives (as a lone surrogate) and
    can be found again with its byte offset; counts the bytes read for a progress bar. The csv reader takes
    exactly a record's lines, so the lines held are those of the record being read."""

    def __init__(self, binary: BinaryIO) -> None:
        self._binary = binary
        self.bytes_read = 0
        self._held: list[tuple[int, str]] = []  # (byte offset, text) of the current record's lines

    def __iter__(self) -> Iterator[str]:
        first = True
        for raw in self._binary:
            if first and raw.startswith(b"\xef\xbb\xbf"):
                self.bytes_read += 3
                raw = raw[3:]
            first = False
            line = raw.decode("utf-8", "surrogateescape")
            self._held.append((self.bytes_read, line))
            self.bytes_read += len(raw)
            yield line

    def bad_byte_offset(self) -> int | None:
        """The file offset of the first byte of the current record that is not UTF-8, or None."""
        for start, text in self._held:
            found = _SURROGATE.search(text)
            if found:
                return start + len(text[: found.start()].encode("utf-8", "surrogateescape"))
        return None

    def record_done(self) -> None:
        self._held.clear()


_SURROGATE = re.compile("[\udc80-\udcff]")


def read_export(binary: BinaryIO, mapping: HistoryMapping) -> Iterator[HistoricalRow | RowRefused]:
    """Each data row of the export as a past request, or why it cannot be one (ExportReader.rows)."""
    return ExportReader(binary, mapping).rows()


class ExportReader:
    """Reads an export row by row; `bytes_read` says how far it got (for a progress bar)."""

    def __init__(self, binary: BinaryIO, mapping: HistoryMapping) -> None:
        self.mapping = mapping
        self.lines = _Lines(binary)
        self.zone = mapping.zone

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
            raise ExportProblem(f"the header line cannot be read as CSV ({exc})") from None
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
                self.lines.record_done()
                yield RowRefused(row_number, None, "row", f"cannot be read as CSV: {exc}")
                continue
            if not any(cell.strip() for cell in cells):
                self.lines.record_done()
                continue  # a blank line is not a row
            row_number += 1
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
                yield row_from_cells(row_number, values, self.mapping, self.zone)


def _cell(cells: list[str], index: int) -> str | None:
    """A cell's text, None when blank or when a short row has no cell there."""
    if index >= len(cells):
        return None
    value = cells[index].strip()
    return value or None


def row_from_cells(
    row_number: int, values: dict[str, str | None], mapping: HistoryMapping, zone: ZoneInfo
) -> HistoricalRow | RowRefused:
    """One row's cells (by field; None = blank) as a past request, or the first thing wrong with it."""
    columns = mapping.columns
    external_id = values.get("external_id") or f"row-{row_number}"

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
            return refused(
                "service",
                f"{_shown(service_name)} is not in the mapping's services; add it there with our code"
                f" (for example {derive_code(service_name)!r}) or set derive_unmapped_services: true",
            )

    submitted_text = values.get("submitted_at")
    if submitted_text is None:
        return refused("submitted_at", "is blank; an imported request keeps its original submitted time")
    submitted_at = parse_time(submitted_text, mapping, zone)
    if isinstance(submitted_at, str):
        return refused("submitted_at", submitted_at)
    closed_at: datetime | None = None
    if (closed_text := values.get("closed_at")) is not None:
        closed = parse_time(closed_text, mapping, zone)
        if isinstance(closed, str):
            return refused("closed_at", closed)
        closed_at = closed
        if closed_at < submitted_at:
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
            return refused("channel", f"{channel_problem(channel_text)}; or map it under the mapping's channels")
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


def parse_time(text: str, mapping: HistoryMapping, zone: ZoneInfo) -> datetime | str:
    """The instant a cell names (a naive time is the city's wall clock), or what is wrong with it."""
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
    return moment


def _shown(value: str) -> str:
    """A categorical value as a refusal may quote it: short, control characters visible."""
    cut = value if len(value) <= _SHOWN else value[:_SHOWN] + "…"
    return repr(cut)


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
