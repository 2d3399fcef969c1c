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


@settings(max_examples=300)
@given(
    st.lists(st.integers(0, 600), max_size=20),
    st.lists(st.sampled_from([3600, 86_400 * 400, 86_400 * 365 * 70]), min_size=1, max_size=3),
    st.integers(2, 6),
)
def test_an_update_stamped_far_ahead_cannot_stall_polling(ordinary: list[int], ahead: list[int], polls: int) -> None:
    """A server that stamps one update 2099 (or an hour ahead): the cursor goes no further than each poll's end, so
    every poll still reaches back to now, and an update made after the odd one is handed on all the same."""
    catch_up = timedelta(minutes=5)
    feed = [(f"o{n}", T0 + timedelta(seconds=s)) for n, s in enumerate(ordinary)]
    feed += [(f"ahead{n}", T0 + timedelta(seconds=s)) for n, s in enumerate(ahead)]
    cursor, handed = Cursor.load(None).dump(), []
    for poll in range(polls):
        now = T0 + timedelta(minutes=10 * (poll + 1))
        later = (f"later{poll}", now - timedelta(seconds=30))  # made since the last poll, at an ordinary time
        feed.append(later)
        state = Cursor.load(cursor)
        start = state.window_start(now, catch_up)
        end = max(now, start)
        assert start <= now - catch_up, "each poll reaches back from now, never from the future"
        shown = [(key, at, key) for key, at in feed if at >= start]  # a lax server: everything after start
        fresh, following = state.take(shown, start, catch_up, end)
        assert following.at is not None and following.at <= end
        assert later[0] in fresh or later[0] in handed
        handed += fresh
        cursor = following.dump()
    assert len(handed) == len(set(handed)), "nothing handed on twice"


def test_a_cursor_stored_ahead_of_the_clock_polls_from_now_again() -> None:
    stalled = Cursor(datetime(2099, 1, 1, tzinfo=UTC), {"ahead": datetime(2099, 1, 1, tzinfo=UTC)})
    start = stalled.window_start(T0, timedelta(minutes=5))
    assert start == T0 - timedelta(minutes=5)
    fresh, following = stalled.take([("new", T0 - timedelta(minutes=1), "new")], start, timedelta(minutes=5), T0)
    assert fresh == ["new"] and following.at == T0


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


@st.composite
def written_feeds(draw: st.DrawFn) -> tuple[bytes, str, list[tuple[str, str, datetime]]]:
    """A feed of updates (id, status, time) written as some server would: JSON bare, wrapped or one object; XML with
    or without a namespace; ids as numbers or strings; times in any of the forms servers use; extra fields and
    empty strings for absent ones."""
    count = draw(st.integers(1, 4))
    updates = [
        (
            str(draw(st.integers(1, 10**9))),
            draw(st.sampled_from(["open", "fixed", "action_scheduled", "Not Councils Responsibility"])),
            T0
            + timedelta(seconds=draw(st.integers(-86_400, 86_400)), microseconds=draw(st.sampled_from([0, 250_000]))),
        )
        for _ in range(count)
    ]

    def when(moment: datetime) -> str:
        style = draw(st.sampled_from(["offset", "z", "naive", "ms", "ns", "space"]))
        if style == "offset":
            return moment.astimezone(timezone(timedelta(hours=-6))).isoformat()
        if style == "z":
            return moment.isoformat().replace("+00:00", "Z")
        if style == "naive":
            return moment.replace(tzinfo=None).isoformat()
        if style == "ms":
            return moment.isoformat(timespec="milliseconds")
        if style == "ns":
            return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "000Z"
        return moment.isoformat(sep=" ")

    rows: list[dict[str, Any]] = []
    for request_id, status, moment in updates:
        row: dict[str, Any] = {
            "service_request_id": int(request_id) if draw(st.booleans()) else request_id,
            "status": status,
            "updated_datetime": when(moment),
            "description": draw(st.sampled_from(["", "Filled", None])),
            "media_url": "",
        }
        if draw(st.booleans()):
            row["extras"] = {"crew": "4"}
        rows.append(row)
    fmt = draw(st.sampled_from(["json", "xml"]))
    if fmt == "json":
        shape = draw(st.sampled_from(["bare", "wrapped", "object"] if count == 1 else ["bare", "wrapped"]))
        data: Any = rows if shape == "bare" else {"service_request_updates": rows[0] if shape == "object" else rows}
        return json.dumps(data).encode(), fmt, updates
    space = ' xmlns="urn:georeport"' if draw(st.booleans()) else ""
    items = "".join(
        "<request_update>"
        + "".join(
            f"<{k}>{v if not isinstance(v, dict) else ''.join(f'<{a}>{b}</{a}>' for a, b in v.items())}</{k}>"
            if v is not None
            else f"<{k}/>"
            for k, v in row.items()
        )
        + "</request_update>"
        for row in rows
    )
    return (
        f'<?xml version="1.0"?><service_request_updates{space}>{items}</service_request_updates>'.encode(),
        fmt,
        updates,
    )


@given(written_feeds())
def test_a_feed_reads_alike_whatever_dialect_it_is_written_in(
    feed: tuple[bytes, str, list[tuple[str, str, datetime]]],
) -> None:
    body, fmt, updates = feed
    found = records(body, fmt)
    read = [(r["service_request_id"], r["status"], parse_time(r["updated_datetime"])) for r in found]
    assert read == updates
    assert all(r.get("description") in (None, "Filled") and "media_url" not in r for r in found)


def test_the_city_files_open311_settings_are_checked() -> None:
    import pytest
    from pydantic import ValidationError

    from civicflow.department_systems import ConnectorSpec

    base = {"kind": "open311", "endpoint": "https://311.example/open311/v2"}
    spec = ConnectorSpec.model_validate(base | {"timezone": "America/Chicago", "key_attribute": "fms_id"})
    assert (spec.timezone, spec.key_attribute, spec.lookup_by_key) == ("America/Chicago", "fms_id", True)
    assert ConnectorSpec.model_validate(base | {"key_attribute": None}).key_attribute is None
    assert spec.theirs("cancelled") == "closed", "mySociety's updates take no CANCELLED"
    for wrong, words in (
        ({"timezone": "Mars/Olympus"}, "IANA time zone"),
        ({"key_attribute": "key]&x=1"}, "key_attribute"),
    ):
        with pytest.raises(ValidationError, match=words):
            ConnectorSpec.model_validate(base | wrong)
    with pytest.raises(ValidationError, match="timezone: not a setting of a rest_webhook connector"):
        ConnectorSpec.model_validate({"kind": "rest_webhook", "timezone": "UTC"})
