"""When a text may go: texts and calls only between 08:00 and 21:00 in the city's zone (by default); one due
outside those hours waits for the next allowed moment. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo


@dataclass(frozen=True)
class QuietHours:
    """Texts go from `opens` until `closes` (wall-clock times in `zone`); opens < closes."""

    zone: tzinfo
    opens: time = time(8, 0)
    closes: time = time(21, 0)

    def __post_init__(self) -> None:
        if not self.opens < self.closes:
            raise ValueError(f"texts are allowed from {self.opens} until {self.closes}: the first must be earlier")

    def next_allowed(self, moment: datetime) -> datetime | None:
        """None when a text may go at moment; else the first moment after it when one may (aware, UTC-comparable)."""
        local = moment.astimezone(self.zone)
        if self.opens <= local.time() < self.closes:
            return None
        day = local.date() if local.time() < self.opens else local.date() + timedelta(days=1)
        # Built as a wall-clock time in the zone: across a DST change this is still 08:00 there.
        return datetime.combine(day, self.opens, tzinfo=self.zone)


def parse_hours(value: str) -> tuple[time, time]:
    """ "08:00-21:00" as (opens, closes); ValueError saying what to write otherwise."""
    try:
        first, _, second = value.partition("-")
        opens, closes = time.fromisoformat(first.strip()), time.fromisoformat(second.strip())
    except ValueError:
        raise ValueError(f"texting hours {value!r}: write them as HH:MM-HH:MM, e.g. 08:00-21:00") from None
    if not opens < closes:
        raise ValueError(f"texting hours {value!r}: the first time must be earlier than the second")
    return opens, closes
