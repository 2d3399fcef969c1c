"""Asking the provider about texts whose final delivery report never came: a periodic task in the notifier.

The provider posts each status callback once, best effort (Twilio does too): one that is lost on the way (a
timeout, a 5xx while the database is busy, the notifier restarting) or that arrives before the sender kept the
text's sid would leave the row 'sent' for good and the case without "texted …, delivered". So a resident's
stage text (an 'sms' row, or a call's fallback text) that has a sid, was sent more than `every` ago and has no
final status is looked up at the provider (`Telephony.text_status`), and the answer goes through the same
`StatusReports` as a callback: a report that came both ways is recorded once, since only a report before the
final one moves the row.

Each row is taken with one statement (`FOR UPDATE SKIP LOCKED`, committed before the provider is asked) that
sets `status_checked_at` and counts the ask, so two replicas never ask about one text at once, and a row is
asked at most once per `every`, then after 2, 4… up to 32 times `every` (a carrier that never reports is asked
less and less). A failure (the provider down, a sid it does not know, an answer that cannot be read) is logged
and counted; the row waits its turn like any other and the rest go on. A day after sending nothing more is
asked: a text whose carrier never reported keeps 'sent' as its last word, and nothing more is recorded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.consumer import describe_error
from services.notifier.claims import TASK_FAILURES
from services.notifier.inbound_texts import FINAL
from services.notifier.telephony import Telephony
from services.notifier.texting import PROVIDER_SECONDS

log = structlog.get_logger(__name__)

BATCH = 50
BATCHES_PER_PASS = 10  # a backlog waits for the next pass rather than hold one pass for long
# After this, a text's last status stands: a carrier that never reports leaves 'sent' as the last word.
ASKED_FOR = timedelta(hours=24)
MOST_DOUBLINGS = 5  # the wait between two asks of one text grows to at most 32 times the interval
TASK = "text status checks"
# What a status or an error code may look like before it is kept (as the status callback's checks, and
# Twilio's 'partially_delivered'); anything else is an answer that cannot be read.
STATUS = re.compile(r"[a-z_-]{1,32}")
MOST_ERROR_CODE = 99_999_999

# (sid, status, error code) -> whether the sid is a text of ours: StatusReports, as for a callback
Report = Callable[[str, str, int | None], Awaitable[bool]]

CHECKS = Counter(
    "civicflow_text_status_checks",
    "Texts the notifier asked the provider about, by what it learned: final (a report we were missing), "
    "not_final (still on its way) or failed (the provider could not be asked or answered unreadably).",
    ["outcome"],
)

# The predicate repeats the partial index deliveries_awaiting_report (notifier migration 0008) word for word.
TAKE_DUE = text(
    "UPDATE notifier.deliveries AS d SET status_checked_at = :now, status_checks = d.status_checks + 1"
    " FROM (SELECT case_id, stage, channel, attempt FROM notifier.deliveries"
    " WHERE status = 'sent' AND provider_sid IS NOT NULL AND (channel = 'sms' OR falls_back_to = 'sms')"
    " AND coalesce(provider_status, '') NOT IN ('delivered', 'failed', 'read', 'undelivered')"
    " AND sent_at <= :due AND sent_at > :given_up"
    " AND (status_checked_at IS NULL OR status_checked_at <= CAST(:now AS timestamptz)"
    " - make_interval(secs => CAST(:every AS double precision) * power(2, least(status_checks - 1, :doublings))))"
    " ORDER BY sent_at LIMIT :n FOR UPDATE SKIP LOCKED) AS due"
    " WHERE (d.case_id, d.stage, d.channel, d.attempt) = (due.case_id, due.stage, due.channel, due.attempt)"
    " RETURNING d.stage, d.provider_sid, d.status_checks"
)


class TextStatusChecks:
    """The periodic task: asks the provider about the texts due a check and reports what it says through `report`
    (the notifier's StatusReports), as the provider's callback would have."""

    def __init__(
        self,
        engine: AsyncEngine,
        telephony: Telephony,
        report: Report,
        every: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._telephony = telephony
        self._report = report
        self._every = every
        self._clock = clock

    async def check_due(self) -> int:
        """Ask the provider about every text due a check (up to BATCHES_PER_PASS batches); how many were asked."""
        now = self._clock()
        asked = 0
        learned: dict[str, int] = {"final": 0, "not_final": 0, "failed": 0}
        for _ in range(BATCHES_PER_PASS):
            rows = await self._take(now)
            for row in rows:
                outcome = await self._ask(row)
                learned[outcome] += 1
                CHECKS.labels(outcome).inc()
            asked += len(rows)
            if len(rows) < BATCH:
                break
        if asked:
            log.info("asked the provider about texts without a final report", asked=asked, **learned)
        return asked

    async def _take(self, now: datetime) -> list[Any]:
        """The oldest texts due a check, each marked asked now in a transaction committed before anyone is asked:
        one replica's, and not again before its next turn."""
        async with self._engine.begin() as tx:
            taken = await tx.execute(
                TAKE_DUE,
                {
                    "now": now,
                    "due": now - self._every,
                    "given_up": now - ASKED_FOR,
                    "every": self._every.total_seconds(),
                    "doublings": MOST_DOUBLINGS,
                    "n": BATCH,
                },
            )
            return list(taken.all())

    async def _ask(self, row: Any) -> str:
        """Ask about one text and report what the provider says as its callback would; what was learned."""
        try:
            began = time.perf_counter()
            try:
                message = await self._telephony.text_status(row.provider_sid)
            finally:
                PROVIDER_SECONDS.labels("text_status").observe(time.perf_counter() - began)
            status, code = message.status.lower(), message.error_code
            if not STATUS.fullmatch(status) or (code is not None and not 0 <= code <= MOST_ERROR_CODE):
                raise ValueError("the provider's status or error code is not one a report can hold")
            await self._report(row.provider_sid, status, code)
        except Exception as exc:  # one text's failure (the provider down, a sid it forgot) holds up no other
            TASK_FAILURES.labels(TASK).inc()
            log.warning(
                "could not learn a text's status from the provider; asked again at its next turn",
                stage=row.stage,
                asked=row.status_checks,
                retry_in_seconds=(self._every * 2 ** min(row.status_checks - 1, MOST_DOUBLINGS)).total_seconds(),
                error=describe_error(exc),
            )
            return "failed"
        return "final" if status in FINAL else "not_final"
