"""Times as the people of a city read them: in the time zone a due date was set in, not in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone_named(name: str | None, otherwise: tzinfo = UTC) -> tzinfo:
    """The IANA zone of that name; `otherwise` when there is none, or this machine does not know it
    (the time is still right, and its abbreviation says which zone it is in)."""
    return _known_zone(name) or otherwise


@lru_cache(maxsize=64)
def _known_zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local(at: datetime, zone: str | None) -> datetime:
    """`at` (aware; naive is taken as UTC, as protobuf timestamps come) in the zone, UTC when zone is None."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(zone_named(zone))


def wall_clock(at: datetime, zone: str | None) -> str:
    """`at` in the zone, with the zone's abbreviation: "2026-11-28 17:00 CST" (UTC when zone is None)."""
    return f"{local(at, zone):%Y-%m-%d %H:%M %Z}"
