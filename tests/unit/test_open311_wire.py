"""How Open311 answers are read (services/workorder_bridge/kinds/open311_wire.py): whatever bytes a server sends,
the reading either gives records or says the answer is malformed; and the updates cursor hands every update on
exactly once, however polls and late arrivals interleave."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.workorder_bridge.kinds.open311_wire import MAX_SEEN, Cursor, MalformedAnswer, parse_time, records

T0 = datetime(2030, 3, 4, 12, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=30,
)


def _read(body: bytes, fmt: str) -> list[dict[str, Any]] | None:
    try:
        return records(body, fmt)
    except MalformedAnswer:
        return None


def _well_formed(found: list[dict[str, Any]], depth: int = 0) -> bool:
    for record in found:
        for value in record.values():
            if isinstance(value, dict):
                assert depth < 3 and _well_formed([value], depth + 1)
            else:
                assert isinstance(value, str) and value.strip() == value and value
    return True


@given(st.binary(max_size=400), st.sampled_from(["json", "xml"]))
def test_any_bytes_are_records_or_malformed(body: bytes, fmt: str) -> None:
    found = _read(body, fmt)
    assert found is None or _well_formed(found)


@given(json_values)
def test_any_json_is_records_or_malformed(value: Any) -> None:
    found = _read(json.dumps(value).encode(), "json")
    assert found is None or _well_formed(found)


@given(st.text(max_size=60))
def test_any_text_is_a_time_or_none(value: str) -> None:
    moment = parse_time(value)
    assert moment is None or moment.tzinfo is not None


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_a_time_reads_the_same_however_it_is_written(naive: datetime, offset_minutes: int) -> None:
    moment = naive.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    seconds = moment.replace(microsecond=0)
    written = [
        seconds.isoformat(),
        seconds.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        seconds.astimezone(UTC).replace(tzinfo=None).isoformat(),  # no zone: UTC unless the connector says
        seconds.isoformat(sep=" "),
        seconds.isoformat(timespec="milliseconds"),
    ]
    assert {parse_time(w) for w in written} == {seconds}
    assert (
        parse_time(moment.isoformat().replace("+", "000+", 1) if moment.microsecond else moment.isoformat()) == moment
    )


def test_a_time_without_a_zone_is_in_the_connectors_zone() -> None:
    chicago = timezone(timedelta(hours=-6))
    assert parse_time("2030-03-04T06:00:00", chicago) == T0


# An update: (key, seconds after T0, the poll round from which the server shows it).
feeds = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=0, max_size=40).map(
    lambda rows: [(f"u{n}", T0 + timedelta(seconds=s), r) for n, (s, r) in enumerate(rows)]
)


@settings(max_examples=300)
@given(feeds, st.integers(1, 6))
def test_every_update_is_handed_on_exactly_once(feed: list[tuple[str, datetime, int]], rounds: int) -> None:
    """Few distinct instants (many updates share one) and updates that show up rounds after their time: as long
    as they are no later than the catch-up window, each is handed on once, whatever the order."""
    catch_up = timedelta(minutes=1)
    now = T0 + timedelta(seconds=10)
    cursor, handed = Cursor.load(None).dump(), []
    for poll in range(max(rounds, 5)):
        state = Cursor.load(cursor)
        start = state.window_start(now, catch_up)
        shown = [(key, at, key) for key, at, appears in feed if appears <= poll and at >= start]
        fresh, following = state.take(reversed(shown), start, catch_up)
        handed += fresh
        cursor = following.dump()
    assert sorted(handed) == sorted(key for key, _, _ in feed)


def test_a_cursor_forgets_beyond_its_bound_but_never_the_latest_instant() -> None:
    many = [(f"u{n}", T0 - timedelta(seconds=n % 50), n) for n in range(MAX_SEEN + 500)]
    _, following = Cursor().take(many, T0 - timedelta(hours=1), timedelta(hours=1))
    assert len(following.seen) == MAX_SEEN and following.at == T0
    assert all(key in following.seen for key, at, _ in many if at == T0)


def test_a_cursor_that_cannot_be_read_is_a_first_poll() -> None:
    for raw in ("", "{", "[]", '{"at": "yesterday"}', '{"at": "2030-03-04T12:00:00"}', '{"at": null}'):
        assert Cursor.load(raw) == Cursor()
    kept = Cursor(T0, {"a": T0})
    assert Cursor.load(kept.dump()) == kept


def test_a_name_too_long_or_garbled_is_no_name_while_words_are_cut() -> None:
    from services.workorder_bridge.kinds.open311_wire import identifier, text

    record = {"service_request_id": "7" * 201, "status": "fi\x00xed", "update_id": "u-1", "description": "x" * 3000}
    assert identifier(record, "service_request_id") is None, "a cut id would name another request"
    assert identifier(record, "status", 64) is None
    assert identifier(record, "update_id") == "u-1"
    assert text(record, "description") == "x" * 2000
