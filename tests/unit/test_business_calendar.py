"""Business calendars: open/closed, due dates in business hours and calendar days, DST, validation."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.router.calendar import (
    WEEKDAYS,
    BusinessCalendar,
    CalendarError,
    CalendarSpec,
    Weekday,
    parse_window,
    within_daily_window,
)

CHICAGO = ZoneInfo("America/Chicago")
BERLIN = ZoneInfo("Europe/Berlin")
WORKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
HOLIDAYS = [date(2026, 7, 3), date(2026, 11, 26), date(2026, 12, 25), date(2027, 1, 1), date(2027, 11, 25)]


def calendar(
    hours: dict[Weekday, list[str]], zone: str = "America/Chicago", holidays: list[date] | None = None
) -> BusinessCalendar:
    return BusinessCalendar.from_spec(CalendarSpec(timezone=zone, hours=hours, holidays=holidays or []))


NINE_TO_FIVE = calendar({day: ["08:00-17:00"] for day in WORKDAYS}, holidays=HOLIDAYS)
LUNCH_BREAK = calendar({day: ["13:00-17:00", "08:00-12:00"] for day in WORKDAYS})
ALL_DAY = calendar({day: ["00:00-24:00"] for day in WEEKDAYS})
SUNDAYS = calendar({"sun": ["00:00-24:00"]})
BERLIN_OFFICE = calendar({day: ["09:00-17:00"] for day in WORKDAYS}, zone="Europe/Berlin")
EARLY_SUNDAY = calendar({"sun": ["02:30-04:00"]})  # on 2026-03-08 02:30 never happens in Chicago
REPEATED_SUNDAY = calendar({"sun": ["01:30-03:00"]})  # on 2026-11-01 01:30 happens twice in Chicago


def chicago(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=CHICAGO, fold=fold)


def berlin(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=BERLIN)


# -- due dates in business hours ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("cal", "start", "hours", "due"),
    [
        pytest.param(
            NINE_TO_FIVE, chicago(2026, 11, 20, 16), 4, chicago(2026, 11, 23, 11), id="fri-afternoon-over-weekend"
        ),
        pytest.param(NINE_TO_FIVE, chicago(2026, 11, 25, 16), 2, chicago(2026, 11, 27, 9), id="over-thanksgiving"),
        pytest.param(
            NINE_TO_FIVE, chicago(2026, 11, 25, 16), 10, chicago(2026, 11, 27, 17), id="ends-at-close-after-holiday"
        ),
        pytest.param(NINE_TO_FIVE, chicago(2026, 11, 23, 6), 1, chicago(2026, 11, 23, 9), id="before-opening"),
        pytest.param(NINE_TO_FIVE, chicago(2026, 11, 23, 20), 1, chicago(2026, 11, 24, 9), id="after-closing"),
        pytest.param(NINE_TO_FIVE, chicago(2026, 11, 23, 8), 9, chicago(2026, 11, 23, 17), id="exactly-at-close-stays"),
        pytest.param(NINE_TO_FIVE, chicago(2026, 11, 23, 17), 0.5, chicago(2026, 11, 24, 8, 30), id="starts-at-close"),
        pytest.param(NINE_TO_FIVE, chicago(2026, 11, 26, 10), 1, chicago(2026, 11, 27, 9), id="starts-on-holiday"),
        pytest.param(NINE_TO_FIVE, chicago(2026, 11, 21, 12), 9, chicago(2026, 11, 23, 17), id="starts-on-saturday"),
        pytest.param(NINE_TO_FIVE, chicago(2026, 11, 23, 8), 36, chicago(2026, 11, 27, 17), id="a-week-with-a-holiday"),
        pytest.param(
            NINE_TO_FIVE, chicago(2026, 11, 23, 10, 15), 0.25, chicago(2026, 11, 23, 10, 30), id="quarter-hour"
        ),
        pytest.param(LUNCH_BREAK, chicago(2026, 11, 23, 11), 2, chicago(2026, 11, 23, 14), id="over-lunch"),
        pytest.param(LUNCH_BREAK, chicago(2026, 11, 23, 11), 1, chicago(2026, 11, 23, 12), id="ends-at-lunch"),
        pytest.param(LUNCH_BREAK, chicago(2026, 11, 23, 12, 30), 1, chicago(2026, 11, 23, 14), id="starts-at-lunch"),
        pytest.param(LUNCH_BREAK, chicago(2026, 11, 23, 16), 8, chicago(2026, 11, 24, 16), id="two-days-two-lunches"),
        pytest.param(ALL_DAY, chicago(2026, 3, 8), 23, chicago(2026, 3, 9), id="spring-forward-day-has-23h"),
        pytest.param(ALL_DAY, chicago(2026, 11, 1), 25, chicago(2026, 11, 2), id="fall-back-day-has-25h"),
        pytest.param(ALL_DAY, chicago(2026, 3, 7, 12), 24, chicago(2026, 3, 8, 13), id="24h-across-spring-forward"),
        pytest.param(SUNDAYS, chicago(2026, 3, 8), 23, chicago(2026, 3, 9), id="whole-short-sunday-ends-at-midnight"),
        pytest.param(SUNDAYS, chicago(2026, 3, 8), 23.5, chicago(2026, 3, 15, 0, 30), id="past-short-sunday"),
        pytest.param(SUNDAYS, chicago(2026, 11, 1), 24.5, chicago(2026, 11, 1, 23, 30), id="long-sunday"),
        pytest.param(EARLY_SUNDAY, chicago(2026, 3, 8), 1, chicago(2026, 3, 8, 4), id="gap-opening-maps-to-the-jump"),
        pytest.param(EARLY_SUNDAY, chicago(2026, 3, 1), 1.5, chicago(2026, 3, 1, 4), id="same-hours-normal-sunday"),
        pytest.param(
            REPEATED_SUNDAY, chicago(2026, 11, 1), 2.5, chicago(2026, 11, 1, 3), id="repeat-opens-at-first-0130"
        ),
        pytest.param(BERLIN_OFFICE, berlin(2026, 3, 27, 15), 4, berlin(2026, 3, 30, 11), id="berlin-over-its-dst"),
        pytest.param(
            BERLIN_OFFICE, chicago(2026, 3, 27, 8), 1, berlin(2026, 3, 27, 15), id="berlin-calendar-chicago-start"
        ),
    ],
)
def test_due_dates_in_business_hours(cal: BusinessCalendar, start: datetime, hours: float, due: datetime) -> None:
    result = cal.add_business_hours(start, hours)
    assert result == due.astimezone(UTC)
    assert result.tzinfo is UTC


def test_a_start_in_utc_and_the_same_instant_in_local_time_give_the_same_due_date() -> None:
    start_utc = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)  # Fri 16:00 in Chicago
    assert NINE_TO_FIVE.add_business_hours(start_utc, 4) == datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
    assert NINE_TO_FIVE.add_business_hours(start_utc.astimezone(CHICAGO), 4) == datetime(2026, 11, 23, 17, tzinfo=UTC)
    assert NINE_TO_FIVE.add_business_hours(start_utc.astimezone(BERLIN), 4) == datetime(2026, 11, 23, 17, tzinfo=UTC)


def test_touching_intervals_are_one_open_period() -> None:
    cal = calendar({"mon": ["08:00-12:00", "12:00-17:00"]})
    assert cal.is_open(chicago(2026, 11, 23, 12))
    assert cal.add_business_hours(chicago(2026, 11, 23, 8), 9) == chicago(2026, 11, 23, 17)


# -- open / next open --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cal", "at", "expected"),
    [
        (NINE_TO_FIVE, chicago(2026, 11, 23, 8), True),
        (NINE_TO_FIVE, chicago(2026, 11, 23, 16, 59, 59), True),
        (NINE_TO_FIVE, chicago(2026, 11, 23, 17), False),
        (NINE_TO_FIVE, chicago(2026, 11, 23, 7, 59, 59), False),
        (NINE_TO_FIVE, chicago(2026, 11, 21, 12), False),  # Saturday
        (NINE_TO_FIVE, chicago(2026, 11, 26, 12), False),  # Thanksgiving
        (NINE_TO_FIVE, datetime(2026, 11, 23, 14, 0, tzinfo=UTC), True),  # 08:00 CST
        (NINE_TO_FIVE, datetime(2026, 11, 23, 13, 59, tzinfo=UTC), False),
        (NINE_TO_FIVE, datetime(2026, 7, 6, 13, 0, tzinfo=UTC), True),  # 08:00 CDT
        (LUNCH_BREAK, chicago(2026, 11, 23, 12, 30), False),
        (ALL_DAY, chicago(2026, 3, 8, 3), True),
        (EARLY_SUNDAY, chicago(2026, 3, 8, 3, 10), True),  # clocks read 03:10, inside 02:30-04:00
        (EARLY_SUNDAY, chicago(2026, 3, 8, 1, 59), False),
        (BERLIN_OFFICE, chicago(2026, 11, 23, 8), True),  # 15:00 in Berlin
        (BERLIN_OFFICE, chicago(2026, 11, 23, 10), False),  # 17:00 in Berlin
    ],
)
def test_is_open(cal: BusinessCalendar, at: datetime, expected: bool) -> None:
    assert cal.is_open(at) is expected


@pytest.mark.parametrize(
    ("cal", "at", "expected"),
    [
        (NINE_TO_FIVE, chicago(2026, 11, 23, 10, 30), chicago(2026, 11, 23, 10, 30)),
        (NINE_TO_FIVE, chicago(2026, 11, 20, 17), chicago(2026, 11, 23, 8)),
        (NINE_TO_FIVE, chicago(2026, 11, 25, 18), chicago(2026, 11, 27, 8)),
        (LUNCH_BREAK, chicago(2026, 11, 23, 12, 30), chicago(2026, 11, 23, 13)),
        (EARLY_SUNDAY, chicago(2026, 3, 7), chicago(2026, 3, 8, 3)),
    ],
)
def test_next_open(cal: BusinessCalendar, at: datetime, expected: datetime) -> None:
    result = cal.next_open(at)
    assert result == expected
    assert result.tzinfo is UTC


# -- calendar days ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "due", "real_hours"),
    [
        pytest.param(chicago(2026, 3, 7, 12), 1, chicago(2026, 3, 8, 12), 23, id="over-spring-forward"),
        pytest.param(chicago(2026, 10, 31, 12), 1, chicago(2026, 11, 1, 12), 25, id="over-fall-back"),
        pytest.param(chicago(2026, 3, 7, 12), 0.5, chicago(2026, 3, 8, 0), 12, id="half-a-day"),
        pytest.param(chicago(2026, 3, 8, 0), 0.125, chicago(2026, 3, 8, 3), 2, id="three-wall-hours-in-two"),
        pytest.param(chicago(2026, 3, 1, 9), 14, chicago(2026, 3, 15, 9), 14 * 24 - 1, id="two-weeks"),
        pytest.param(chicago(2026, 3, 7, 2, 30), 1, chicago(2026, 3, 8, 3), 23.5, id="lands-in-gap-maps-forward"),
        pytest.param(
            chicago(2026, 10, 31, 1, 30), 1, chicago(2026, 11, 1, 1, 30), 24, id="lands-in-repeat-takes-first"
        ),
        pytest.param(datetime(2026, 3, 7, 18, tzinfo=UTC), 1, chicago(2026, 3, 8, 12), 23, id="utc-start"),
        pytest.param(
            berlin(2026, 3, 28, 12), 1, datetime(2026, 3, 29, 11, tzinfo=UTC), 24, id="chicago-zone-berlin-start"
        ),
    ],
)
def test_calendar_days_keep_the_local_wall_clock(
    start: datetime, days: float, due: datetime, real_hours: float
) -> None:
    result = ALL_DAY.add_calendar_days(start, days)
    # Compared in UTC: Python never calls an instant in a repeated hour equal to one in another zone.
    assert result == due.astimezone(UTC)
    assert result.tzinfo is UTC
    assert result - start == timedelta(hours=real_hours)


def test_calendar_days_on_a_berlin_calendar_follow_berlins_dst() -> None:
    result = BERLIN_OFFICE.add_calendar_days(berlin(2026, 3, 28, 12), 1)
    assert result == berlin(2026, 3, 29, 12)
    assert result - berlin(2026, 3, 28, 12) == timedelta(hours=23)


def test_calendar_days_from_the_second_pass_of_a_repeated_hour_never_go_backwards() -> None:
    start = chicago(2026, 11, 1, 1, 10, fold=1)  # 01:10 CST, after the clocks went back
    # Plain `start + timedelta` would be wall-clock arithmetic inside the zone, so add in UTC.
    assert ALL_DAY.add_calendar_days(start, 0.01) == start.astimezone(UTC) + timedelta(minutes=14.4)


# -- properties ---------------------------------------------------------------------------------


def open_seconds_nine_to_five(start: datetime, end: datetime) -> float:
    """Reference: open time of NINE_TO_FIVE between two instants, summed day by day."""
    total = 0.0
    day = start.astimezone(CHICAGO).date() - timedelta(days=1)
    while day <= end.astimezone(CHICAGO).date() + timedelta(days=1):
        if day.weekday() < 5 and day not in HOLIDAYS:
            opens = datetime.combine(day, time(8), tzinfo=CHICAGO)
            closes = datetime.combine(day, time(17), tzinfo=CHICAGO)
            total += max(0.0, (min(end, closes) - max(start, opens)).total_seconds())
        day += timedelta(days=1)
    return total


def inside_nine_to_five_hours(at: datetime) -> bool:
    """Reference: on a working day between 08:00 and 17:00 local, both ends included."""
    local = at.astimezone(CHICAGO)
    working_day = local.weekday() < 5 and local.date() not in HOLIDAYS
    return working_day and time(8) <= local.time() <= time(17)


starts = st.datetimes(
    min_value=datetime(2026, 1, 1),
    max_value=datetime(2027, 12, 31, 23, 59, 59),
    timezones=st.sampled_from([UTC, CHICAGO, BERLIN]),
)
budgets = st.floats(min_value=0.1, max_value=200, allow_nan=False, allow_infinity=False)


@given(starts, budgets)
def test_a_due_date_uses_exactly_the_budget_of_open_time(start: datetime, hours: float) -> None:
    due = NINE_TO_FIVE.add_business_hours(start, hours)
    assert due >= start
    assert NINE_TO_FIVE.is_open(due) or due.astimezone(CHICAGO).time() == time(17)
    assert inside_nine_to_five_hours(due)
    assert open_seconds_nine_to_five(start, due) == pytest.approx(hours * 3600, abs=1)


@given(starts, budgets, budgets)
def test_a_bigger_budget_is_never_due_earlier(start: datetime, first: float, second: float) -> None:
    smaller, bigger = sorted((first, second))
    due_smaller = NINE_TO_FIVE.add_business_hours(start, smaller)
    due_bigger = NINE_TO_FIVE.add_business_hours(start, bigger)
    assert due_smaller <= due_bigger
    if bigger - smaller > 1e-3:
        assert due_smaller < due_bigger


@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)))
def test_is_open_matches_the_wall_clock_and_next_open_is_the_first_open_instant(at: datetime) -> None:
    local = at.astimezone(CHICAGO)
    expected = local.weekday() < 5 and local.date() not in HOLIDAYS and time(8) <= local.time() < time(17)
    assert NINE_TO_FIVE.is_open(at) is expected
    opening = NINE_TO_FIVE.next_open(at)
    assert opening >= at and NINE_TO_FIVE.is_open(opening)
    assert opening == at or open_seconds_nine_to_five(at, opening) == 0


@st.composite
def week_hours(draw: st.DrawFn) -> dict[Weekday, list[str]]:
    """Random opening hours on a quarter-hour grid, at least one interval somewhere."""
    hours: dict[Weekday, list[str]] = {}
    for day in WEEKDAYS:
        marks = sorted(draw(st.sets(st.integers(0, 96), max_size=6)))
        pairs = list(zip(marks[::2], marks[1::2], strict=False))
        hours[day] = [f"{s // 4:02d}:{s % 4 * 15:02d}-{e // 4:02d}:{e % 4 * 15:02d}" for s, e in pairs]
    if not any(hours.values()):
        hours["wed"] = ["09:00-10:00"]
    return hours


@given(
    week_hours(),
    st.sampled_from(["America/Chicago", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago", "UTC"]),
    starts,
    budgets,
    budgets,
)
def test_due_dates_add_up_on_any_calendar(
    hours: dict[Weekday, list[str]], zone: str, start: datetime, first: float, second: float
) -> None:
    cal = calendar(hours, zone=zone)
    in_two_steps = cal.add_business_hours(cal.add_business_hours(start, first), second)
    in_one_step = cal.add_business_hours(start, first + second)
    assert abs(in_two_steps - in_one_step) <= timedelta(milliseconds=1)
    opening = cal.next_open(start)
    assert opening >= start and cal.is_open(opening)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intervals", "message"),
    [
        (["8-17"], r"hours\.mon: '8-17' is not a time range; write 'HH:MM-HH:MM'"),
        (["08:00 - 17:00"], r"hours\.mon: '08:00 - 17:00' is not a time range"),
        (["25:00-26:00"], r"hours\.mon: '25:00-26:00' has an invalid start time 25:00"),
        (["08:00-17:60"], r"hours\.mon: '08:00-17:60' has an invalid end time 17:60"),
        (["08:00-24:30"], r"invalid end time 24:30"),
        (["24:00-24:00"], r"invalid start time 24:00"),
        (["17:00-08:00"], r"hours\.mon: '17:00-08:00' ends before it starts; .*split them across two days"),
        (["08:00-08:00"], r"hours\.mon: '08:00-08:00' is empty"),
        (["08:00-12:00", "11:00-13:00"], r"hours\.mon: '08:00-12:00' overlaps '11:00-13:00'"),
        (["11:00-13:00", "00:00-24:00"], r"hours\.mon: '00:00-24:00' overlaps '11:00-13:00'"),
    ],
)
def test_bad_intervals_are_refused_naming_the_weekday_and_interval(intervals: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CalendarSpec(timezone="America/Chicago", hours={"mon": intervals})


def test_intervals_are_kept_sorted() -> None:
    spec = CalendarSpec(timezone="America/Chicago", hours={"mon": ["13:00-17:00", "08:00-12:00"]})
    assert spec.hours == {"mon": ["08:00-12:00", "13:00-17:00"]}


def test_an_unknown_time_zone_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"unknown time zone 'America/Chicag0'; use an IANA zone name"):
        CalendarSpec(timezone="America/Chicag0", hours={"mon": ["08:00-17:00"]})


@pytest.mark.parametrize("hours", [{}, {"mon": [], "sat": []}])
def test_a_calendar_that_is_never_open_is_refused(hours: dict[Weekday, list[str]]) -> None:
    with pytest.raises(ValidationError, match="calendar is never open"):
        CalendarSpec(timezone="America/Chicago", hours=hours)
    with pytest.raises(CalendarError, match="calendar is never open"):
        BusinessCalendar.from_spec(CalendarSpec.model_construct(timezone="America/Chicago", hours=hours, holidays=[]))


@pytest.mark.parametrize(
    "data",
    [
        {"timezone": "UTC", "hours": {"monday": ["08:00-17:00"]}},
        {"timezone": "UTC", "hours": {"mon": ["08:00-17:00"]}, "weekends": "closed"},
        {"timezone": "UTC", "hours": {"mon": ["08:00-17:00"]}, "holidays": ["26 Nov"]},
    ],
)
def test_unknown_keys_and_bad_holidays_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CalendarSpec.model_validate(data)


def test_a_calendar_closed_by_holidays_for_years_fails_instead_of_looping() -> None:
    every_day = [date(2026, 1, 1) + timedelta(days=n) for n in range(4 * 366)]
    cal = calendar({day: ["08:00-17:00"] for day in WORKDAYS}, holidays=every_day)
    with pytest.raises(CalendarError, match="no open time in the 1098 days after"):
        cal.add_business_hours(chicago(2026, 1, 2, 9), 1)
    with pytest.raises(CalendarError, match="no open time"):
        cal.next_open(chicago(2026, 1, 2, 9))
    assert cal.add_business_hours(chicago(2030, 3, 4), 1) == chicago(2030, 3, 4, 9)  # a Monday after them


@pytest.mark.parametrize("hours", [0, -1, float("nan"), float("inf")])
def test_a_budget_must_be_positive(hours: float) -> None:
    with pytest.raises(ValueError, match="business hours must be a positive number"):
        NINE_TO_FIVE.add_business_hours(chicago(2026, 11, 23, 9), hours)
    with pytest.raises(ValueError, match="calendar days must be a positive number"):
        NINE_TO_FIVE.add_calendar_days(chicago(2026, 11, 23, 9), hours)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="must be timezone-aware"):
        NINE_TO_FIVE.add_business_hours(datetime(2026, 11, 23, 9), 1)
    with pytest.raises(ValueError, match="must be timezone-aware"):
        NINE_TO_FIVE.is_open(datetime(2026, 11, 23, 9))


def test_the_calendar_exposes_its_zone() -> None:
    assert NINE_TO_FIVE.timezone == CHICAGO


def test_due_dates_over_a_year_and_a_half_of_mostly_uncached_days_land_in_open_hours_in_order() -> None:
    # How fast is for `make bench` to measure, never for a test to assert.
    cal = calendar({day: ["08:00-12:00", "13:00-17:00"] for day in WORKDAYS}, holidays=HOLIDAYS)
    first = datetime(2026, 1, 1, tzinfo=UTC)
    instants = [first + timedelta(hours=7 * n) for n in range(2000)]  # ~1.6 years, mostly uncached days
    due = [cal.add_business_hours(at, 8) for at in instants]
    assert due == sorted(due)
    assert all(d > at and cal.is_open(d - timedelta(minutes=1)) for at, d in zip(instants, due, strict=True))


# -- daily windows for rule conditions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "at", "expected"),
    [
        ("18:00-06:00", time(23), True),
        ("18:00-06:00", time(0), True),
        ("18:00-06:00", time(5, 59, 59), True),
        ("18:00-06:00", time(6), False),
        ("18:00-06:00", time(12), False),
        ("18:00-06:00", time(18), True),
        ("08:00-17:00", time(8), True),
        ("08:00-17:00", time(16, 59), True),
        ("08:00-17:00", time(17), False),
        ("22:00-00:00", time(23, 59), True),
        ("22:00-00:00", time(0), False),
        ("08:00-17:00", time(9, tzinfo=CHICAGO), True),
    ],
)
def test_within_daily_window(window: str, at: time, expected: bool) -> None:
    assert within_daily_window(at, window) is expected


def test_parse_window() -> None:
    assert parse_window("18:00-06:00") == (time(18), time(6))


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("18:00-18:00", r"daily window '18:00-18:00' is empty; .*may wrap past midnight"),
        ("6pm-6am", r"daily window '6pm-6am' is not a time range"),
        ("24:00-06:00", r"invalid start time 24:00"),
        ("08:00-24:00", r"invalid end time 24:00.*write midnight as 00:00"),
        ("08:00-17:61", r"invalid end time 17:61"),
    ],
)
def test_bad_windows_are_refused(window: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(window)
