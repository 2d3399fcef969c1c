"""Department business calendars: opening hours, holidays and the due dates computed on them.

Pure domain code: no framework, no I/O. A `CalendarSpec` is what the rule-set file holds; a
`BusinessCalendar` is its validated, precomputed form that the router asks "is it open?" and
"when is this due?".

Opening hours are local wall-clock intervals. To turn them into real instants on a given local
date, a wall-clock time that does not exist (the spring-forward gap) maps forward to the moment
the clocks jump, and an ambiguous one (the fall-back repeat) takes its first occurrence. Every
question the calendar answers is decided on those instants, so `is_open`, `next_open` and
`add_business_hours` always agree with each other, even on DST-change days.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)  # index == date.weekday()

# A walk that finds no open time for this long is a misconfigured calendar, not a long wait.
MAX_CLOSED_DAYS = 3 * 366
# No due date is a century away; stops absurd budgets from walking towards date.max.
MAX_WALK_DAYS = 100 * 366

_US = 1_000_000  # microseconds per second: all instants inside the calendar are int µs since the epoch
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_DAY_CACHE_LIMIT = 4096
_CLOCK_RANGE = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})")

_Span = tuple[int, int]  # [start, end) as µs since the epoch


class CalendarError(ValueError):
    """A business calendar cannot answer: it is never open, or no open time is reachable."""


def _clock_minutes(hh: str, mm: str, *, allow_24: bool) -> int | None:
    hour, minute = int(hh), int(mm)
    if allow_24 and hour == 24 and minute == 0:
        return 24 * 60
    if hour > 23 or minute > 59:
        return None
    return hour * 60 + minute


def _parse_clock_range(text: str, *, allow_24_end: bool) -> tuple[int, int]:
    """'HH:MM-HH:MM' -> (start, end) in minutes after local midnight; ValueError says what is wrong."""
    match = _CLOCK_RANGE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time range; write 'HH:MM-HH:MM', e.g. '08:00-17:00'")
    start = _clock_minutes(match[1], match[2], allow_24=False)
    end = _clock_minutes(match[3], match[4], allow_24=allow_24_end)
    end_rule = "00:00-23:59, or 24:00 for the end of the day" if allow_24_end else "00:00-23:59"
    if start is None:
        raise ValueError(f"{text!r} has an invalid start time {match[1]}:{match[2]}; use 00:00-23:59")
    if end is None:
        raise ValueError(f"{text!r} has an invalid end time {match[3]}:{match[4]}; use {end_rule}")
    return start, end


def _parse_day_hours(day: Weekday, intervals: list[str]) -> list[tuple[int, int]]:
    """One weekday's intervals, sorted, as minutes; ValueError names the weekday and the interval."""
    parsed: list[tuple[int, int, str]] = []
    for text in intervals:
        try:
            start, end = _parse_clock_range(text, allow_24_end=True)
        except ValueError as exc:
            raise ValueError(f"hours.{day}: {exc}") from None
        if end == start:
            raise ValueError(f"hours.{day}: {text!r} is empty; the start must be before the end")
        if end < start:
            raise ValueError(
                f"hours.{day}: {text!r} ends before it starts; overnight intervals are not allowed, "
                f"split them across two days (e.g. '{text[:5]}-24:00' and '00:00-{text[6:]}' on the next day)"
            )
        parsed.append((start, end, text))
    parsed.sort()
    for (_, prev_end, prev_text), (start, _, text) in pairwise(parsed):
        if start < prev_end:
            raise ValueError(f"hours.{day}: {prev_text!r} overlaps {text!r}; intervals within a day must not overlap")
    return [(start, end) for start, end, _ in parsed]


class CalendarSpec(BaseModel):
    """A department's business calendar as the rule-set file writes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str
    hours: dict[Weekday, list[str]]
    holidays: list[date] = []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {name!r}; use an IANA zone name such as 'America/Chicago'") from None
        return name

    @field_validator("hours")
    @classmethod
    def _valid_intervals(cls, hours: dict[Weekday, list[str]]) -> dict[Weekday, list[str]]:
        normalised: dict[Weekday, list[str]] = {}
        for day in WEEKDAYS:
            if day in hours:
                minutes = _parse_day_hours(day, hours[day])
                normalised[day] = [f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in minutes]
        return normalised

    @model_validator(mode="after")
    def _open_at_some_point(self) -> CalendarSpec:
        if not any(self.hours.values()):
            raise ValueError(
                "calendar is never open: hours has no interval on any weekday; "
                "give at least one, e.g. hours: {mon: ['08:00-17:00']}"
            )
        return self


def _to_us(at: datetime, what: str) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {at.isoformat()}")
    return (at - _EPOCH) // _ONE_US


def _from_us(instant: int) -> datetime:
    return _EPOCH + timedelta(microseconds=instant)


def _offset_seconds(at: datetime) -> int:
    offset = at.utcoffset()
    assert offset is not None  # every ZoneInfo datetime has an offset
    return int(offset.total_seconds())


def _wall_to_us(tz: ZoneInfo, wall: datetime) -> int:
    """Naive local wall-clock time -> µs since the epoch: gaps map forward to the jump, repeats take the first."""
    naive_us = (wall - _NAIVE_EPOCH) // _ONE_US
    before = _offset_seconds(wall.replace(tzinfo=tz))  # fold=0: the offset before any transition here
    after = _offset_seconds(wall.replace(tzinfo=tz, fold=1))
    if after <= before:  # unambiguous, or a fall-back repeat where fold=0 is the first occurrence
        return naive_us - before * _US
    # Spring-forward gap: this wall time never shows on a clock. It maps to the jump itself, the
    # first instant whose wall clock reads later than `wall`, so an interval opening at 02:30 on
    # that day is open from 03:00, exactly when its clocks show a time inside the interval.
    lo, hi = naive_us // _US - after, naive_us // _US - before  # epoch seconds before / after the jump
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_seconds(datetime.fromtimestamp(mid, tz)) == before:
            lo = mid
        else:
            hi = mid
    return hi * _US


class BusinessCalendar:
    """When a department works, as real instants; answers open/closed and due-date questions."""

    __slots__ = ("_closed", "_day_cache", "_spec", "_tz", "_week")

    def __init__(self, spec: CalendarSpec) -> None:
        week = tuple(tuple(_parse_day_hours(day, spec.hours.get(day, []))) for day in WEEKDAYS)
        if not any(week):
            raise CalendarError("calendar is never open: hours has no interval on any weekday")
        self._spec = spec
        self._tz = ZoneInfo(spec.timezone)
        self._week: tuple[tuple[tuple[int, int], ...], ...] = week
        self._closed = frozenset(holiday.toordinal() for holiday in spec.holidays)
        # Memo of local date ordinal -> open spans; derived data only, so the calendar stays immutable.
        self._day_cache: dict[int, tuple[_Span, ...]] = {}

    @classmethod
    def from_spec(cls, spec: CalendarSpec) -> BusinessCalendar:
        return cls(spec)

    @property
    def spec(self) -> CalendarSpec:
        return self._spec

    @property
    def timezone(self) -> ZoneInfo:
        return self._tz

    def __repr__(self) -> str:
        return f"BusinessCalendar({self._spec!r})"

    def is_open(self, at: datetime) -> bool:
        """True iff `at` (aware, any zone) falls in an open interval [start, end) on a non-holiday."""
        instant = _to_us(at, "at")
        ordinal = at.astimezone(self._tz).toordinal()
        # Neighbouring days too: around a DST change at midnight one day's spans can reach past the date line.
        for day in (ordinal - 1, ordinal, ordinal + 1):
            for start, end in self._open_spans(day):
                if start <= instant < end:
                    return True
        return False

    def next_open(self, at: datetime) -> datetime:
        """`at` itself if open, else the next opening instant; always returned in UTC."""
        cursor = _to_us(at, "at")
        for start, end in self._spans_from(cursor, at):
            if end > cursor:
                return _from_us(max(start, cursor))
        raise AssertionError("unreachable: _spans_from never ends, it raises")  # pragma: no cover

    def add_business_hours(self, start: datetime, hours: float) -> datetime:
        """The instant when `hours` of open time, counted from `start`, have been used up (UTC).

        A closed start counts from the next opening. A budget that runs out exactly at a closing time
        is due at that closing time, not at the next opening.
        """
        if not (math.isfinite(hours) and hours > 0):
            raise ValueError(f"business hours must be a positive number, got {hours!r}")
        cursor = _to_us(start, "start")
        remaining = round(hours * 3600 * _US)
        for span_start, span_end in self._spans_from(cursor, start):
            if span_end <= cursor:
                continue
            span_start = max(span_start, cursor)
            available = span_end - span_start
            if remaining <= available:
                return _from_us(span_start + remaining)
            remaining -= available
            cursor = span_end
        raise AssertionError("unreachable: _spans_from never ends, it raises")  # pragma: no cover

    def add_calendar_days(self, start: datetime, days: float) -> datetime:
        """The same local wall-clock time `days` later in the calendar's zone (UTC result).

        Fractional days are wall-clock hours (0.5 = 12 hours on the clock), so a day across a DST change
        is 23 or 25 real hours; a resulting wall time in a gap maps forward, a repeated one takes the first.
        """
        if not (math.isfinite(days) and days > 0):
            raise ValueError(f"calendar days must be a positive number, got {days!r}")
        start_us = _to_us(start, "start")
        local = start.astimezone(self._tz)
        wall = local.replace(tzinfo=None) + timedelta(days=days)
        due = _wall_to_us(self._tz, wall)
        if due < start_us:
            # Only when `start` is in the second pass of a fall-back repeat and the result lands in it
            # too: the first occurrence would precede the start, so the second one is meant.
            due = (wall.replace(tzinfo=self._tz, fold=1) - _EPOCH) // _ONE_US
        return _from_us(due)

    def _spans_from(self, cursor: int, at: datetime) -> Iterator[_Span]:
        """Open spans day by day from `at`'s local date; a calendar closed for years fails loudly."""
        first = ordinal = at.astimezone(self._tz).toordinal()
        closed_days = 0
        while True:
            if closed_days >= MAX_CLOSED_DAYS:
                raise CalendarError(
                    f"calendar has no open time in the {MAX_CLOSED_DAYS} days after {at.isoformat()}; "
                    "check its holidays and hours"
                )
            if ordinal - first >= MAX_WALK_DAYS:
                raise CalendarError(
                    f"due date lies more than {MAX_WALK_DAYS} days after {at.isoformat()}; the budget is too large"
                )
            spans = self._open_spans(ordinal)
            ordinal += 1
            if spans and spans[-1][1] > cursor:
                closed_days = 0
                yield from spans
            else:
                closed_days += 1

    def _open_spans(self, ordinal: int) -> tuple[_Span, ...]:
        spans = self._day_cache.get(ordinal)
        if spans is None:
            spans = self._compute_open_spans(ordinal)
            if len(self._day_cache) >= _DAY_CACHE_LIMIT:
                self._day_cache.clear()
            self._day_cache[ordinal] = spans
        return spans

    def _compute_open_spans(self, ordinal: int) -> tuple[_Span, ...]:
        if ordinal in self._closed:
            return ()
        day = date.fromordinal(ordinal)
        intervals = self._week[day.weekday()]
        if not intervals:
            return ()
        midnight = datetime(day.year, day.month, day.day)
        spans: list[_Span] = []
        for start_min, end_min in intervals:
            start = _wall_to_us(self._tz, midnight + timedelta(minutes=start_min))
            end = _wall_to_us(self._tz, midnight + timedelta(minutes=end_min))
            if end <= start:  # the whole interval fell into a spring-forward gap
                continue
            if spans and spans[-1][1] >= start:  # touching intervals are one open period
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((start, end))
        return tuple(spans)


def parse_window(window: str) -> tuple[time, time]:
    """A daily window 'HH:MM-HH:MM' as (start, end); it may wrap past midnight ('18:00-06:00')."""
    return _parse_window(window)


@lru_cache(maxsize=1024)
def _parse_window(window: str) -> tuple[time, time]:
    try:
        start, end = _parse_clock_range(window, allow_24_end=False)
    except ValueError as exc:
        raise ValueError(f"daily window {exc}; write midnight as 00:00") from None
    if start == end:
        raise ValueError(
            f"daily window {window!r} is empty; start and end must differ (it may wrap past midnight, "
            "e.g. '18:00-06:00')"
        )
    return time(start // 60, start % 60), time(end // 60, end % 60)


def within_daily_window(at_local: time, window: str) -> bool:
    """Whether a local time of day is in [start, end) of `window`, wrapping past midnight if end < start."""
    start, end = _parse_window(window)
    clock = at_local.replace(tzinfo=None, fold=0)
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end
