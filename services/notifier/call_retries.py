"""When a call nobody answered is tried again, and where the message goes after the last try. Pure.

A call that ended busy, unanswered or failed is tried again ten minutes later, then an hour later, then the
next morning when calling hours open: four calls at most. Each moment is moved into calling hours (a retry
due at 20:55 with hours closing at 21:00 goes; one due at 21:05 waits for 08:00, as wall-clock time in the
city's zone across a DST change). After the last, the message falls back to a text when the resident gave a
phone that did not text STOP, else to an email when they gave one; else nothing is left to try.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from services.notifier.quiet_hours import QuietHours

MAX_CALLS = 4
# after the first call, after the second; the third is followed by the next morning's opening
RETRY_DELAYS = (timedelta(minutes=10), timedelta(hours=1))
UNANSWERED = frozenset({"busy", "no-answer", "failed", "canceled"})
FINAL = UNANSWERED | {"completed"}

Fallback = Literal["sms", "email"]


def next_call_at(attempt: int, ended_at: datetime, quiet: QuietHours | None) -> datetime | None:
    """When to call again after call number `attempt` went unanswered at ended_at; None after the last."""
    if attempt >= MAX_CALLS:
        return None
    if attempt <= len(RETRY_DELAYS):
        due = ended_at + RETRY_DELAYS[attempt - 1]
        if quiet is None:
            return due
        return quiet.next_allowed(due) or due
    if quiet is None:
        return ended_at + timedelta(hours=12)
    # the next morning: the first opening after the end of this day's calling hours
    local = ended_at.astimezone(quiet.zone)
    closing = datetime.combine(local.date(), quiet.closes, tzinfo=quiet.zone)
    return quiet.next_allowed(max(ended_at, closing)) or closing


def fallback_for(has_phone: bool, texted_stop: bool, has_email: bool) -> Fallback | None:
    """Where the message goes when the calls were not answered: a text, an email, or nowhere."""
    if has_phone and not texted_stop:
        return "sms"
    if has_email:
        return "email"
    return None


def outcome_of(call_status: str) -> str:
    """The provider's final status in the resident's terms: a completed call was answered."""
    return "answered" if call_status == "completed" else call_status
