"""The import mapping and the reading of an old system's export: tolerant of what exports hold, exact about
what it refuses, and never quoting a resident's words back."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicflow.city import load_city
from civicflow.geocode import NoGeocoder
from civicflow.history import HistoryMapping, MappingError, load_mapping, parse_mapping
from civicflow.history_export import ExportProblem, HistoricalRow, RowRefused, read_export
from civicflow.settings import SAMPLE_CITY
from samples.history.export import export_bytes
from services.intake.domain import ServiceRequest
from services.intake.handlers import Submission
from services.intake.importer import HistoryImport, ImportSummary, admit, changed_parts, closed_since, import_key

SAMPLE_MAPPING = Path(__file__).resolve().parents[2] / "samples" / "history" / "mapping.yaml"
CITY = load_city(SAMPLE_CITY)
STARTED = datetime(2027, 1, 10, tzinfo=UTC)  # when the import began: the latest time a row may have is a day on

MAPPING = """
source: oldcrm
timezone: America/Chicago
timestamp_formats: ["%m/%d/%Y %I:%M %p"]
columns:
  external_id: ID
  service: Type
  description: Text
  address: Address
  lat: Lat
  long: Lon
  channel: Source
  submitted_at: Opened
  closed_at: Closed
  status: Status
  department: Agency
  contact_email: Email
  attributes: {bin_type: Bin}
services:
  "Noise - Street/Sidewalk": NOISE_COMPLAINT
  "Pothole in Street": POTHOLE
channels: {Twitter: social}
statuses: {"Closed - Completed": closed, "In Progress": open}
departments: {"Dept. of Streets": streets}
"""
HEADER = [
    "ID",
    "Type",
    "Text",
    "Address",
    "Lat",
    "Lon",
    "Source",
    "Opened",
    "Closed",
    "Status",
    "Agency",
    "Email",
    "Bin",
]
GOOD_ROW = {
    "ID": "SR-1",
    "Type": "Pothole in Street",
    "Text": "Deep pothole",
    "Address": "1200 N Main St",
    "Lat": "41.88",
    "Lon": "-87.63",
    "Source": "Text",
    "Opened": "11/28/2026 11:30 PM",
    "Closed": "12/01/2026 09:00 AM",
    "Status": "Closed - Completed",
    "Agency": "Dept. of Streets",
    "Email": "resident@example.org",
    "Bin": "",
}


def mapping(text: str = MAPPING) -> HistoryMapping:
    return parse_mapping(text)


def export(*rows: dict[str, str], header: list[str] = HEADER, bom: bool = False) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(name, "") for name in header])
    return ("\ufeff" if bom else "").encode() + buffer.getvalue().encode()


def read(data: bytes, the_mapping: HistoryMapping | None = None) -> list[HistoricalRow | RowRefused]:
    return list(read_export(io.BytesIO(data), the_mapping or mapping(), STARTED))


def one(data: bytes) -> HistoricalRow | RowRefused:
    rows = read(data)
    assert len(rows) == 1
    return rows[0]


def refusal(**changes: str) -> RowRefused:
    row = one(export({**GOOD_ROW, **changes}))
    assert isinstance(row, RowRefused), row
    return row


# --- the mapping file ---------------------------------------------------------------------------


def test_the_sample_mapping_loads() -> None:
    sample = load_mapping(SAMPLE_MAPPING)
    assert sample.source == "oldcrm" and sample.services["pothole in street"] == "POTHOLE"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("timezone: America/Chicago", "timezone: Mars/Olympus"), "not an IANA time zone"),
        (("source: oldcrm", "source: old crm"), "source is part of every imported key"),
        (('"Pothole in Street": POTHOLE', '"Pothole in Street": Pothole In Street'), "write 'POTHOLE_IN_STREET'"),
        (('"Pothole in Street": POTHOLE', '"Pothole in Street": yes'), "YAML read this service code as true"),
        (("{Twitter: social}", "{Twitter: pigeon}"), "'pigeon' is not a channel"),
        (('closed, "In', 'shut, "In'), "'open' or 'closed'"),
        (("  service: Type\n", ""), "columns.service"),
        (("  long: Lon\n", ""), "name both lat and long"),
        (('["%m/%d/%Y %I:%M %p"]', '["%H:%M"]'), "does not read back the date it writes"),
        (
            ('departments: {"Dept. of Streets": streets}', 'departments: {"Dept. of Streets": Streets Dept}'),
            "not a department id",
        ),
        (("columns:", "not_closed_dates: [someday]\ncolumns:"), "not_closed_dates.0"),
        (("columns:", "location_for_services_without_place: keep\ncolumns:"), "'drop' or 'refuse'"),
    ],
)
def test_a_wrong_mapping_says_which_field_and_what_to_write(change: tuple[str, str], says: str) -> None:
    old, new = change
    assert old in MAPPING
    with pytest.raises(MappingError, match=None) as raised:
        parse_mapping(MAPPING.replace(old, new), "map.yaml")
    assert says in str(raised.value)
    assert str(raised.value).startswith("map.yaml")


def test_a_mapping_error_names_its_line() -> None:
    with pytest.raises(MappingError) as raised:
        parse_mapping(MAPPING.replace("America/Chicago", "Nowhere/Town"), "map.yaml")
    assert "timezone (line 3)" in str(raised.value)


def test_broken_yaml_is_refused_with_its_line() -> None:
    with pytest.raises(MappingError, match="line 2"):
        parse_mapping("source: a\ncolumns: @x\nstatuses: {}\n", "map.yaml")


# --- reading rows ---------------------------------------------------------------------------------


def test_a_row_becomes_the_request_intake_takes_with_its_original_times() -> None:
    row = one(export(GOOD_ROW, bom=True))
    assert isinstance(row, HistoricalRow)
    assert row.external_id == "SR-1" and row.row_number == 1
    assert row.request == {
        "service_code": "POTHOLE",
        "description": "Deep pothole",
        "location": {"address": "1200 N Main St", "lat": 41.88, "long": -87.63},
        "channel": "sms",
        "contact": {"email": "resident@example.org"},
    }
    # a naive time is the city's wall clock: 23:30 CST is 05:30 UTC the next day
    assert row.submitted_at.astimezone(UTC) == datetime(2026, 11, 29, 5, 30, tzinfo=UTC)
    assert row.closed_at is not None and row.closed_at.astimezone(UTC) == datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    assert row.status == "closed" and row.old_department == "streets" and row.old_agency == "Dept. of Streets"


def test_blank_cells_are_absent_and_names_compare_without_case_or_spacing() -> None:
    row = one(
        export(
            {
                **GOOD_ROW,
                "Type": "  POTHOLE   in street ",
                "Lat": "",
                "Lon": "",
                "Email": " ",
                "Status": "",
                "Closed": "",
                "Source": "twitter",
                "Bin": "recycling",
                "ID": "",
            }
        )
    )
    assert isinstance(row, HistoricalRow)
    assert row.request["service_code"] == "POTHOLE"
    assert row.request["location"] == {"address": "1200 N Main St"}  # an address only
    assert "contact" not in row.request and row.request["channel"] == "social"
    assert row.request["attributes"] == {"bin_type": "recycling"}
    assert row.status == "open" and row.closed_at is None
    assert row.external_id.startswith("content-")  # no id: a digest of the row's cells stands in


def test_quoted_commas_and_line_breaks_stay_in_their_cell() -> None:
    rows = read(export({**GOOD_ROW, "Text": 'Deep, "very" deep\nsecond line'}, {**GOOD_ROW, "ID": "SR-2"}))
    assert [r.external_id for r in rows] == ["SR-1", "SR-2"]
    assert isinstance(rows[0], HistoricalRow) and rows[0].request["description"] == 'Deep, "very" deep\nsecond line'


def test_an_iso_time_with_an_offset_keeps_it() -> None:
    row = one(export({**GOOD_ROW, "Opened": "2026-11-28T23:30:00-05:00", "Closed": ""}))
    assert isinstance(row, HistoricalRow)
    assert row.submitted_at.astimezone(UTC) == datetime(2026, 11, 29, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"Type": ""}, "service", "is blank"),
        ({"Type": "Misc. Other (see notes)"}, "service", "for example 'MISC_OTHER_SEE_NOTES'"),
        ({"Opened": "13/45/2026 25:61 PM"}, "submitted_at", "not a time in any of the mapping's timestamp_formats"),
        ({"Opened": ""}, "submitted_at", "keeps its original submitted time"),
        ({"Closed": "11/01/2026 09:00 AM"}, "closed_at", "before the submitted time"),
        ({"Status": "Pending review"}, "status", "add it there as open or closed"),
        ({"Source": "fax"}, "channel", "'fax' is not a channel"),
        ({"Lat": "north-ish"}, "lat", "not a number"),
        ({"Lon": "NaN"}, "long", "not NaN"),
    ],
)
def test_a_row_refused_says_field_and_column(changes: dict[str, str], field: str, says: str) -> None:
    refused = refusal(**changes)
    assert refused.field == field and says in refused.reason and refused.external_id == "SR-1"
    assert "(column '" in refused.reason


def test_an_unmapped_type_may_derive_its_code_when_the_mapping_says_so() -> None:
    derived = mapping(MAPPING + "derive_unmapped_services: true\n")
    row = one_with(derived, {**GOOD_ROW, "Type": "Snow Removal, Sidewalk"})
    assert isinstance(row, HistoricalRow) and row.request["service_code"] == "SNOW_REMOVAL_SIDEWALK"


def one_with(the_mapping: HistoryMapping, row: dict[str, str]) -> HistoricalRow | RowRefused:
    (only,) = read(export(row), the_mapping)
    return only


def test_invalid_utf8_refuses_the_row_with_its_byte_offset_and_reading_goes_on() -> None:
    data = export(GOOD_ROW, {**GOOD_ROW, "ID": "SR-2", "Text": "MARK"}, {**GOOD_ROW, "ID": "SR-3"}, bom=True)
    bad = data.replace(b"MARK", b"Caf\xe9")
    rows = read(bad)
    assert [type(r).__name__ for r in rows] == ["HistoricalRow", "RowRefused", "HistoricalRow"]
    refused = rows[1]
    assert isinstance(refused, RowRefused) and refused.row_number == 2
    offset = bad.index(b"\xe9")
    assert f"byte offset {offset}" in refused.reason


def test_a_missing_column_stops_before_any_row() -> None:
    with pytest.raises(ExportProblem, match="does not have: Agency"):
        read(export(GOOD_ROW, header=[h for h in HEADER if h != "Agency"]))


def test_an_empty_file_says_so() -> None:
    with pytest.raises(ExportProblem, match="empty"):
        read(b"")


def test_blank_lines_are_not_rows_and_a_short_row_has_blank_cells() -> None:
    data = export(GOOD_ROW) + b"\r\n\r\nSR-9,Pothole in Street,short row\r\n"
    rows = read(data)
    assert len(rows) == 2 and isinstance(rows[1], RowRefused) and rows[1].field == "submitted_at"


def test_a_megabyte_cell_is_read_and_refused_by_intake_naming_the_field() -> None:
    row = one(export({**GOOD_ROW, "Text": "x" * 1_000_000}))
    assert isinstance(row, HistoricalRow)
    refused = admit(row, mapping(), CITY, NoGeocoder())
    assert isinstance(refused, list) and refused[0].field == "description" and "4000" in refused[0].reason
    assert "(column 'Text')" in refused[0].reason


# --- hostile cells --------------------------------------------------------------------------------

HOSTILE = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["\x00", "NaN", "inf", "-0", "  ", "\u2028", "'; DROP TABLE x;--", "\ufeff", "\r", "\x07bell"]),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(column=st.sampled_from(HEADER), value=HOSTILE)
def test_any_cell_gives_a_row_or_a_refusal_naming_a_field(column: str, value: str) -> None:
    """Whatever one cell holds, the row is read or refused by field, and intake accepts it or says which
    field is wrong; the refusal never quotes a free-text cell."""
    rows = read(export({**GOOD_ROW, column: value}))
    assert len(rows) <= 1  # a cell of blanks only (and a blank line) is no row at all
    for row in rows:
        if isinstance(row, RowRefused):
            assert row.field in {"service", "submitted_at", "closed_at", "status", "channel", "lat", "long", "row"}
            continue
        admitted = admit(row, mapping(), CITY, NoGeocoder())
        if isinstance(admitted, list):
            assert admitted and all(r.field and r.reason for r in admitted)
            if column in ("Text", "Address", "Email") and value.strip() and len(value.strip()) > 3:
                assert all(value.strip() not in r.reason for r in admitted)
        else:
            assert isinstance(admitted.request, ServiceRequest)
            assert admitted.submitted_at == row.submitted_at


def test_the_sample_export_is_messy_as_its_readme_says_and_mostly_imports() -> None:
    sample = load_mapping(SAMPLE_MAPPING)
    rows = list(read_export(io.BytesIO(export_bytes(1000)), sample, STARTED))
    assert len(rows) == 1000
    admitted = [admit(r, sample, CITY, NoGeocoder()) if isinstance(r, HistoricalRow) else [r] for r in rows]
    refused_fields = {a[0].field for a in admitted if isinstance(a, list)}
    assert {"service", "channel", "location", "description"} <= refused_fields
    assert sum(not isinstance(a, list) for a in admitted) > 850


def test_the_sample_export_is_the_same_for_the_same_seed() -> None:
    assert export_bytes(200, seed=7) == export_bytes(200, seed=7) != export_bytes(200, seed=8)


@pytest.mark.parametrize(
    ("external", "fits"),
    [("SR-1", True), ("id with spaces", False), ("ü-1", False), ("x" * 200, False)],
)
def test_an_import_key_is_a_valid_idempotency_key_for_any_external_id(external: str, fits: bool) -> None:
    key = import_key("oldcrm", external)
    assert len(key) <= 128 and key.isascii() and " " not in key
    assert (key == f"import:oldcrm:{external}") is fits
    assert import_key("oldcrm", external) == key


def test_a_phone_number_the_city_cannot_read_is_left_out_not_the_request() -> None:
    """A past request is never texted: its old system's phone number, unreadable in the city's region, is
    dropped and the request kept; a readable one is kept in E.164."""
    row = one(export(GOOD_ROW))
    assert isinstance(row, HistoricalRow)
    unreadable = replace(row, request={**row.request, "contact": {"email": "resident@example.org", "phone": "ext 12"}})
    admitted = admit(unreadable, mapping(), CITY, NoGeocoder())
    assert not isinstance(admitted, list) and admitted.request.contact is not None
    assert admitted.request.contact.phone is None and admitted.request.contact.email == "resident@example.org"
    alone = replace(row, request={**row.request, "contact": {"phone": "555"}})
    admitted = admit(alone, mapping(), CITY, NoGeocoder())
    assert not isinstance(admitted, list) and admitted.request.contact is None
    readable = replace(row, request={**row.request, "contact": {"phone": "(312) 555-0142"}})
    admitted = admit(readable, mapping(), CITY, NoGeocoder())
    assert not isinstance(admitted, list) and admitted.request.contact is not None
    assert admitted.request.contact.phone == "+13125550142"


def test_a_row_without_an_id_keeps_its_key_when_the_export_is_sorted_another_way() -> None:
    first = {**GOOD_ROW, "ID": ""}
    second = {**GOOD_ROW, "ID": " ", "Text": "Another pothole", "Email": "other@example.org"}
    one_way = read(export(first, second))
    other_way = read(export(second, first))
    assert [r.external_id for r in one_way] == [r.external_id for r in reversed(other_way)]
    assert one_way[0].external_id != one_way[1].external_id
    # the contact is no part of it: a digest of the rest would let the key's holder guess an e-mail address
    assert read(export({**first, "Email": "x@example.org"}))[0].external_id == one_way[0].external_id
    without_column = mapping(MAPPING.replace("  external_id: ID\n", ""))
    assert read(export(first), without_column)[0].external_id == one_way[0].external_id


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"Opened": "12/31/9999 10:00 PM", "Closed": ""}, "submitted_at"),  # overflows in UTC
        ({"Opened": "12/31/9999 10:00 AM", "Closed": ""}, "submitted_at"),
        ({"Closed": "12/31/9999 11:59 PM"}, "closed_at"),
        ({"Opened": "06/30/1999 11:59 PM", "Closed": ""}, "submitted_at"),
        ({"Opened": "2027-01-11T00:00:01+00:00", "Closed": ""}, "submitted_at"),  # a day after the start
        ({"Opened": "0001-01-01T00:00:00", "Closed": ""}, "submitted_at"),
    ],
)
def test_a_time_outside_2000_to_a_day_after_the_start_is_refused(changes: dict[str, str], field: str) -> None:
    refused = refusal(**changes)
    assert refused.field == field and "outside the times an imported request may have" in refused.reason
    assert "2000-01-01 to 2027-01-11" in refused.reason


def test_a_day_after_the_start_is_the_latest_time_taken() -> None:
    row = one(export({**GOOD_ROW, "Opened": "2027-01-11T00:00:00+00:00", "Closed": ""}))
    assert isinstance(row, HistoricalRow)


def test_the_old_systems_never_closed_date_reads_as_open_only_when_the_mapping_says_so() -> None:
    never = {**GOOD_ROW, "Closed": "12/31/9999 11:00 PM", "Status": ""}
    assert isinstance(one(export(never)), RowRefused)
    never_closed = mapping(MAPPING + "not_closed_dates: [9999-12-31]\n")
    row = one_with(never_closed, never)
    assert isinstance(row, HistoricalRow) and row.closed_at is None and row.status == "open"
    opened_never = one_with(never_closed, {**never, "Opened": "12/31/9999 11:00 PM"})
    assert isinstance(opened_never, RowRefused) and opened_never.field == "submitted_at"  # only a closing


def test_an_unclosed_quote_refuses_its_row_and_the_rows_after_it_are_read_on_their_own() -> None:
    rows = [{**GOOD_ROW, "ID": f"SR-{n}", "Text": f"pothole {n}"} for n in range(1, 8)]
    rows[4]["Text"] = "a description\nover two lines"  # a quoted line break after the broken row stays fine
    data = export(*rows).replace(b"pothole 3", b'"pothole 3')
    read_back = read(data)
    assert [r.external_id for r in read_back] == ["SR-1", "SR-2", None, "SR-4", "SR-5", "SR-6", "SR-7"]
    broken = read_back[2]
    assert isinstance(broken, RowRefused) and broken.field == "row"
    assert "unclosed quote starting on line 4" in broken.reason
    assert all(isinstance(r, HistoricalRow) for r in read_back[3:])
    assert read_back[4].request["description"] == "a description\nover two lines"  # type: ignore[union-attr]


def test_a_file_with_cr_alone_line_ends_says_to_save_it_with_crlf_or_lf() -> None:
    data = export(GOOD_ROW, {**GOOD_ROW, "ID": "SR-2"}).replace(b"\r\n", b"\r")
    with pytest.raises(ExportProblem, match="save it again with CRLF"):
        read(data)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"Type": "water coming up at 1200 N Main St"}, "service", ["1200", "Main", "WATER"]),
        ({"Status": "resident@example.org"}, "status", ["resident", "example"]),
        ({"Source": "call 312-555-0142"}, "channel", ["312", "555"]),
        ({"Opened": "my neighbour Jo since 2019"}, "submitted_at", ["neighbour", "2019"]),
        ({"Type": "x" * 41}, "service", ["xxxx"]),
        ({"Status": "the dog next door bit my son"}, "status", ["dog", "son"]),
    ],
)
def test_a_shifted_cell_holding_a_residents_words_is_described_not_quoted(
    changes: dict[str, str], field: str, words: list[str]
) -> None:
    refused = refusal(**changes)
    assert refused.field == field and "characters (" in refused.reason
    assert not any(word in refused.reason for word in words)


def test_a_categorical_value_and_a_date_are_still_quoted() -> None:
    assert "'Pending review'" in refusal(Status="Pending review").reason
    assert "'13/45/2026 25:61 PM'" in refusal(Opened="13/45/2026 25:61 PM").reason


QUESTION = {**GOOD_ROW, "Type": "General Information Request", "Text": "when is bulk pickup?", "Lat": "", "Lon": ""}
QUESTIONS = MAPPING.replace(
    '"Pothole in Street": POTHOLE', '"Pothole in Street": POTHOLE\n  "General Information Request": INFO_QUESTION'
)


def test_a_question_with_the_callers_address_is_imported_without_it_by_default() -> None:
    row = one_with(mapping(QUESTIONS), QUESTION)
    assert isinstance(row, HistoricalRow)
    submission = admit(row, mapping(QUESTIONS), CITY, NoGeocoder())
    assert isinstance(submission, Submission) and submission.request.location is None


def test_a_question_with_an_address_is_refused_when_the_mapping_says_refuse() -> None:
    refusing = mapping(QUESTIONS + "location_for_services_without_place: refuse\n")
    row = one_with(refusing, QUESTION)
    assert isinstance(row, HistoricalRow)
    refused = admit(row, refusing, CITY, NoGeocoder())
    assert isinstance(refused, list) and refused[0].field.startswith("location")


def admitted(changes: dict[str, str]) -> Submission:
    row = one(export({**GOOD_ROW, "Lat": "", "Lon": "", **changes}))
    assert isinstance(row, HistoricalRow)
    submission = admit(row, mapping(), CITY, NoGeocoder())
    assert isinstance(submission, Submission)
    return submission


def test_an_import_fingerprint_covers_the_times_status_and_old_department() -> None:
    base = admitted({}).fingerprint
    assert changed_parts(base, admitted({"Opened": "11/28/2026 11:31 PM"}).fingerprint) == ["submitted"]
    assert changed_parts(base, admitted({"Closed": "12/02/2026 09:00 AM"}).fingerprint) == ["closing"]
    assert changed_parts(base, admitted({"Agency": "Water"}).fingerprint) == ["department"]
    assert changed_parts(base, admitted({"Text": "Deeper"}).fingerprint) == ["request"]
    assert changed_parts(base, admitted({"Email": "other@example.org"}).fingerprint) == []  # the contact is not in it
    assert changed_parts("a live request's digest", base) == ["request", "submitted", "closing", "department"]


def test_only_a_row_imported_open_and_closed_since_is_closed_since() -> None:
    was_open = admitted({"Closed": "", "Status": "In Progress"}).fingerprint
    assert closed_since(was_open, admitted({}))
    assert not closed_since(admitted({}).fingerprint, admitted({"Closed": "", "Status": "In Progress"}))  # reopened
    assert not closed_since(was_open, admitted({"Text": "Deeper"}))  # closed, and its text changed
    was_closed = admitted({"Closed": "12/02/2026 09:00 AM"}).fingerprint
    assert not closed_since(was_closed, admitted({}))  # closed at another time


PROSE = st.text(alphabet=st.sampled_from(list("abc XYZ 019.!?'\"\n\r,;")), max_size=80).filter(
    lambda text: text.count(",") < 6
)


@settings(max_examples=200, deadline=None)
@given(descriptions=st.lists(PROSE, min_size=1, max_size=5))
def test_quoted_line_breaks_commas_and_quotes_are_never_taken_for_an_unclosed_quote(descriptions: list[str]) -> None:
    rows = [{**GOOD_ROW, "ID": f"SR-{n}", "Text": text} for n, text in enumerate(descriptions)]
    read_back = read(export(*rows))
    assert [r.external_id for r in read_back] == [f"SR-{n}" for n in range(len(descriptions))]
    assert not any(isinstance(r, RowRefused) and r.field == "row" for r in read_back)


@settings(max_examples=200, deadline=None)
@given(column=st.sampled_from(["Type", "Status", "Source", "Opened", "Closed"]), value=st.text(min_size=4))
def test_a_refusal_never_quotes_a_value_with_an_at_or_over_40_characters(column: str, value: str) -> None:
    resident_like = value.strip()
    if "@" not in resident_like and len(resident_like) <= 40:
        resident_like += "@example.org"
    rows = read(export({**GOOD_ROW, column: resident_like}))
    for row in rows:
        if isinstance(row, RowRefused):
            assert resident_like not in row.reason and resident_like[:40] not in row.reason


def test_the_summary_groups_unclosed_quotes_and_bad_bytes_whatever_their_line_or_offset() -> None:
    summary = ImportSummary()
    for line in (4, 90):
        reason = f"has an unclosed quote starting on line {line}: its cell ran on"
        HistoryImport._refuse(summary, [RowRefused(1, None, "row", reason)], lambda _: None)
        reason = f"is not UTF-8 text: an invalid byte at byte offset {line * 7} of the file"
        HistoryImport._refuse(summary, [RowRefused(1, None, "row", reason)], lambda _: None)
    assert sorted(summary.refused.values()) == [2, 2]
    assert "row: has an unclosed quote starting on line …: its cell ran on" in summary.refused
