"""Quiet hours: a text due outside 08:00-21:00 in the city's zone waits for the next opening, across DST."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from services.notifier.quiet_hours import QuietHours, parse_hours

CHICAGO = ZoneInfo("America/Chicago")
QUIET = QuietHours(CHICAGO)


@pytest.mark.parametrize(
    ("local", "opens"),
    [
        (datetime(2026, 11, 24, 8, 0), None),
        (datetime(2026, 11, 24, 20, 59), None),
        (datetime(2026, 11, 24, 21, 0), datetime(2026, 11, 25, 8, 0)),
        (datetime(2026, 11, 24, 23, 30), datetime(2026, 11, 25, 8, 0)),
        (datetime(2026, 11, 25, 3, 0), datetime(2026, 11, 25, 8, 0)),
        (datetime(2026, 11, 25, 7, 59), datetime(2026, 11, 25, 8, 0)),
        (datetime(2026, 3, 7, 22, 0), datetime(2026, 3, 8, 8, 0)),  # the night clocks go forward
        (datetime(2026, 10, 31, 23, 0), datetime(2026, 11, 1, 8, 0)),  # and back
    ],
)
def test_a_text_outside_the_hours_waits_for_the_next_opening(local: datetime, opens: datetime | None) -> None:
    moment = local.replace(tzinfo=CHICAGO).astimezone(UTC)
    allowed = QUIET.next_allowed(moment)
    if opens is None:
        assert allowed is None
    else:
        assert allowed is not None and allowed.astimezone(CHICAGO).replace(tzinfo=None) == opens
        assert allowed > moment


def test_the_hours_are_read_and_checked() -> None:
    assert parse_hours("07:30-20:00") == (time(7, 30), time(20, 0))
    for wrong in ("21:00-08:00", "eight to nine", "08:00", ""):
        with pytest.raises(ValueError, match="texting hours"):
            parse_hours(wrong)
    with pytest.raises(ValueError, match="must be earlier"):
        QuietHours(CHICAGO, time(21), time(8))
