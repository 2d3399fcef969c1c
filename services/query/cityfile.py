"""The city file as the query service reads it: loaded again when it changes, the last good one kept."""

from __future__ import annotations

from pathlib import Path

import structlog

from civicflow.city import CityProfile, load_city

log = structlog.get_logger(__name__)


class CityFile:
    """`current()` is the city profile of the file as it is now. The file is checked (one stat) on every
    call, so a city that changes a service's public_location sees it in the next lookup; a file that
    cannot be read or is broken leaves the previous profile in force, and is logged."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp = self._stamp_now()
        self._profile = load_city(path)  # at start, a broken file stops the service: nothing to fall back on

    def _stamp_now(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> CityProfile:
        stamp = self._stamp_now()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self._profile = load_city(self._path)
                log.info("city file reloaded", path=str(self._path))
            except Exception as exc:  # a half-written or broken edit: keep what was in force
                log.error("city file not reloaded; the previous one stays in force", error=type(exc).__name__)
        return self._profile
