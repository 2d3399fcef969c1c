"""Unanswered calls: tried again after ten minutes, an hour, then the next morning, always within calling hours
(wall-clock across DST), four calls at most; then a text, else an email, else nothing."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.notifier.call_retries import MAX_CALLS, fallback_for, next_call_at, outcome_of
from services.notifier.quiet_hours import QuietHours

CHICAGO = ZoneInfo("America/Chicago")
HOURS = QuietHours(CHICAGO, time(8), time(21))


def chicago(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHICAGO)


def test_retries_come_after_ten_minutes_an_hour_then_the_next_morning() -> None:
    ended = chicago(2026, 12, 1, 10)
    assert next_call_at(1, ended, HOURS) == ended + timedelta(minutes=10)
    assert next_call_at(2, ended, HOURS) == ended + timedelta(hours=1)
    assert next_call_at(3, ended, HOURS) == chicago(2026, 12, 2, 8)
    assert next_call_at(MAX_CALLS, ended, HOURS) is None


def test_a_retry_that_would_fall_after_hours_waits_for_the_morning() -> None:
    assert next_call_at(1, chicago(2026, 12, 1, 20, 45), HOURS) == chicago(2026, 12, 1, 20, 55)
    assert next_call_at(1, chicago(2026, 12, 1, 20, 55), HOURS) == chicago(2026, 12, 2, 8)
    assert next_call_at(2, chicago(2026, 12, 1, 20, 30), HOURS) == chicago(2026, 12, 2, 8)


@pytest.mark.parametrize(
    ("ended", "morning", "offset"),
    [
        (chicago(2026, 3, 7, 20, 30), chicago(2026, 3, 8, 8), timedelta(hours=-5)),  # spring forward overnight
        (chicago(2026, 10, 31, 20, 30), chicago(2026, 11, 1, 8), timedelta(hours=-6)),  # fall back overnight
    ],
)
def test_the_morning_is_eight_oclock_there_across_a_dst_change(
    ended: datetime, morning: datetime, offset: timedelta
) -> None:
    for attempt in (2, 3):
        retry = next_call_at(attempt, ended, HOURS)
        assert retry == morning and retry is not None
        assert retry.astimezone(CHICAGO).utcoffset() == offset
        assert retry.astimezone(UTC).astimezone(CHICAGO).time() == time(8)


def test_without_calling_hours_retries_still_end() -> None:
    ended = datetime(2026, 12, 1, 3, tzinfo=UTC)
    moments = [next_call_at(n, ended, None) for n in range(1, MAX_CALLS + 1)]
    assert moments[:2] == [ended + timedelta(minutes=10), ended + timedelta(hours=1)]
    assert moments[2] is not None and moments[2] > ended and moments[3] is None


def test_the_message_falls_back_to_a_text_then_an_email_then_nothing() -> None:
    assert fallback_for(has_phone=True, texted_stop=False, has_email=True) == "sms"
    assert fallback_for(has_phone=True, texted_stop=True, has_email=True) == "email"
    assert fallback_for(has_phone=True, texted_stop=True, has_email=False) is None
    assert fallback_for(has_phone=False, texted_stop=False, has_email=False) is None


def test_a_completed_call_was_answered() -> None:
    assert outcome_of("completed") == "answered" and outcome_of("busy") == "busy"
