"""Capped exponential backoff: how long to wait before trying something again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Backoff:
    """First after `first_seconds`, doubling with each attempt, at most `max_seconds`."""

    first_seconds: float = 5.0
    max_seconds: float = 300.0

    def after(self, attempts: int) -> timedelta:
        """The wait after the given number of failed attempts (1 = the first failure)."""
        # The exponent stops growing long before 2 ** attempts could overflow a float (a department
        # down for days reaches a thousand attempts).
        doublings = min(max(attempts - 1, 0), 32)
        return timedelta(seconds=min(self.first_seconds * 2**doublings, self.max_seconds))
