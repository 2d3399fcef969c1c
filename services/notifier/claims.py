"""Who is sending a resident's text, call or fallback email right now: a delivery row's claim, taken with a
compare-and-set before the provider is asked and held for LEASE; the provider's sid kept the moment it answers,
in a transaction of its own; and a periodic task's failing row put off with backoff.

A claim is what keeps two senders from one row. A consumer writing the row 'sending' holds it; a redelivery (a
rebalance, a retry) that finds it 'sending' under a live claim raises ClaimHeld and is retried, and one that finds
the claim lapsed takes it over, but only if no one else did first (claimed_at as it saw it). The periodic tasks
take due and lapsed rows the same way. The sid is kept before the row is finished so that a delivery report
arriving before the batch commits finds its row, and so that whoever takes the row next knows the provider
already took it and asks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import structlog
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.backoff import Backoff
from civicflow.consumer import TryLater, describe_error

log = structlog.get_logger(__name__)

# A claim older than this lost its sender. It covers a lookup and a send at the provider (10 s timeout each)
# several times over; a crashed sender's row waits this long before anyone texts or calls again.
LEASE = timedelta(minutes=1)
# a periodic task's row that failed waits 1 minute, then 2, 4… at most an hour
PUT_OFF = Backoff(first_seconds=60, max_seconds=3600)

TASK_FAILURES = Counter(
    "civicflow_notifier_task_failures", "Rows a notifier periodic task failed on and put off, by task.", ["task"]
)


@dataclass(frozen=True)
class DeliveryRow:
    """A row of notifier.deliveries: (case, stage, channel, attempt)."""

    case_id: UUID
    stage: str
    channel: str
    attempt: int = 1

    def params(self) -> dict[str, object]:
        return {"c": self.case_id, "s": self.stage, "ch": self.channel, "a": self.attempt}


KEY = "case_id = :c AND stage = :s AND channel = :ch AND attempt = :a"


@dataclass(frozen=True)
class Claim:
    """A row this sender holds: `fresh` when nothing can be at the provider yet (this claim wrote the row or took
    it from 'deferred'); `since`, the first claim, what the provider is asked about; `sid`, what the provider
    answered an earlier sender whose outcome was never recorded (nothing is asked or sent then)."""

    fresh: bool
    since: datetime
    sid: str | None = None


class ClaimHeld(TryLater):
    """Another consumer is sending this row now (a rebalance redelivered its event): retried, by which time it
    has finished the row or its claim has lapsed."""


def lapsed(claimed_at: datetime | None, now: datetime) -> bool:
    return claimed_at is None or claimed_at <= now - LEASE


async def take_over(tx: AsyncConnection, row: DeliveryRow, now: datetime) -> Claim | None:
    """A consumer's claim on a row it found already written: None when the row is no longer 'sending' (told,
    deferred); ClaimHeld while another sender's claim is live."""
    found = (
        await tx.execute(
            text(
                "SELECT status, coalesce(started_at, created_at) AS since, claimed_at,"
                f" coalesce(claimed_at, started_at, created_at) AS last_claim, provider_sid FROM notifier.deliveries"
                f" WHERE {KEY}"
            ),
            row.params(),
        )
    ).one()
    if found.status != "sending":
        return None
    if found.provider_sid is not None:  # the provider took it; the outcome was never recorded
        return Claim(False, found.since, found.provider_sid)
    if not lapsed(found.last_claim, now):
        raise ClaimHeld("another consumer is sending this text or call now")
    claim = await take(tx, row, "sending", found.claimed_at, now)
    if claim is None:
        raise ClaimHeld("another consumer took this text or call over first")
    return claim


async def take(tx: AsyncConnection, row: DeliveryRow, was: str, seen: datetime | None, now: datetime) -> Claim | None:
    """Claim a row found `was` ('deferred' or 'sending') with claimed_at `seen`; None when another sender moved
    it first. A 'deferred' row starts now; a 'sending' one keeps its first claim's moment."""
    claimed = (
        await tx.execute(
            text(
                "UPDATE notifier.deliveries SET status = 'sending', claimed_at = :now,"
                " started_at = CASE WHEN status = 'deferred' THEN :now ELSE started_at END"
                f" WHERE {KEY} AND status = :was AND claimed_at IS NOT DISTINCT FROM :seen"
                " RETURNING coalesce(started_at, created_at) AS since, provider_sid"
            ),
            {**row.params(), "now": now, "was": was, "seen": seen},
        )
    ).first()
    if claimed is None:
        return None
    return Claim(was == "deferred", claimed.since, claimed.provider_sid)


async def keep_sid(engine: AsyncEngine, row: DeliveryRow, sid: str) -> None:
    """Keep what the provider answered on the row at once, in a transaction of its own: a status report that
    arrives before the row is finished finds it, and a batch that fails afterwards loses nothing."""
    async with engine.begin() as tx:
        kept = await tx.execute(
            text(
                f"UPDATE notifier.deliveries SET provider_sid = :sid WHERE {KEY} AND status = 'sending'"
                " AND provider_sid IS NULL RETURNING 1"
            ),
            {**row.params(), "sid": sid},
        )
    if kept.first() is None:  # only after a sender outlived its lease: the row is someone else's
        log.warning("the provider's sid found its row taken", stage=row.stage, channel=row.channel)


async def put_off(
    engine: AsyncEngine, row: DeliveryRow, failures: int, now: datetime, task: str, exc: Exception
) -> None:
    """A periodic task failed on the row: it waits with backoff, so the rows behind it go first."""
    wait = PUT_OFF.after(failures + 1)
    async with engine.begin() as tx:
        await tx.execute(
            text(
                "UPDATE notifier.deliveries SET not_before = :nb, failures = failures + 1"
                f" WHERE {KEY} AND status IN ('deferred', 'sending')"
            ),
            {**row.params(), "nb": now + wait},
        )
    failed(task, row.stage, failures + 1, wait, exc)


def failed(task: str, stage: str, failures: int, wait: timedelta, exc: Exception) -> None:
    TASK_FAILURES.labels(task).inc()
    log.warning(
        "periodic task failed on a row; put off",
        task=task,
        stage=stage,
        failures=failures,
        retry_in_seconds=wait.total_seconds(),
        error=describe_error(exc),
    )
