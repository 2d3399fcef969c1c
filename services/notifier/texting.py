"""Texting a resident a stage's message exactly once, through the telephony port; the opt-out list and the
numbers' cases, by a keyed digest of the number (never the number in clear).

The same three steps as an email (services/notifier/main.py): a 'sending' row keyed by (case, stage,
'sms', attempt 1), committed on its own under this consumer's claim (claims.py) before the provider is called;
the provider call, its sid kept on the row at once in a transaction of its own; the row moved to 'sent' in the
batch's transaction, with NotificationSent. A redelivery that finds the row 'sending' under a live claim is
retried (ClaimHeld); one that finds the sid kept records it; one that finds the claim lapsed takes the row over
and closes the crash window (the provider took the text, nothing of it was kept) by asking the provider: the
texts to that number since the row was written, and one with the same body (by digest) is recorded instead of
texting again.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.events import CaseEvent, NotificationFailed, NotificationSent, RecordedEvent
from civicflow.eventstore import StreamAppend
from civicflow.unit_of_work import Decision, Reads, Statement
from services.notifier.claims import Claim, DeliveryRow, keep_sid, take_over
from services.notifier.domain import StageFacts
from services.notifier.quiet_hours import QuietHours
from services.notifier.sms import TextTemplates
from services.notifier.telephony import ProviderMessage, Telephony, TelephonyRefused

log = structlog.get_logger(__name__)

ACTOR = "notifier"
STOPPED = "the resident texted STOP"
# The provider's clock and the database's may disagree a little: look back this much further.
CLOCK_SKEW = timedelta(minutes=5)

NOTIFICATIONS = Counter(
    "civicflow_notifications",
    "Messages to residents by channel and outcome (sent, failed, delivered, undelivered, deferred).",
    ["channel", "outcome"],
)
PROVIDER_SECONDS = Histogram(
    "civicflow_telephony_provider_seconds", "Time the telephony provider took to answer, by call.", ["call"]
)
OPT_OUTS = Counter("civicflow_sms_opt_outs", "Numbers that texted STOP (opted_out) or START (opted_in).", ["change"])


def number_digest(number: str, key: bytes) -> str:
    """The keyed digest (HMAC-SHA256) a number is known by in the notifier's tables."""
    return hmac.new(key, number.encode(), hashlib.sha256).hexdigest()


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


async def opted_out(tx: AsyncConnection, digest: str) -> bool:
    found = await tx.execute(text("SELECT 1 FROM notifier.opt_outs WHERE number_digest = :d"), {"d": digest})
    return found.first() is not None


class TextDelivery:
    """Texts one stage's message; the notifier's handler calls it when the resident is to be texted, and the
    deferred-text task (deferred_texts.py) when quiet hours are over."""

    def __init__(
        self,
        engine: AsyncEngine,
        telephony: Telephony,
        templates: TextTemplates,
        digest_key: bytes,
        status_callback: str | None = None,
        quiet: QuietHours | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._telephony = telephony
        self._templates = templates
        self._key = digest_key
        self._status_callback = status_callback
        self.quiet = quiet
        self.clock = clock

    def digest(self, number: str) -> str:
        return number_digest(number, self._key)

    def body(self, facts: StageFacts) -> str:
        return self._templates.render(facts, facts.language).body

    async def deliver(self, event: RecordedEvent, facts: StageFacts, to: str, reads: Reads) -> Decision:
        stage = facts.told_as  # the occurrence too: a case resolved again is told again (domain.StageFacts)
        digest = self.digest(to)
        # so an inbound text from this number finds its cases (STATUS, a reply)
        remember = Statement(
            text(
                "INSERT INTO notifier.case_numbers (number_digest, case_id, tracking_number) VALUES (:d, :c, :t)"
                " ON CONFLICT DO NOTHING"
            ),
            {"d": digest, "c": event.case_id, "t": facts.tracking_number},
        )
        if await opted_out(reads.tx, digest):
            log.info("notification not possible", stage=stage, channel="sms", reason=STOPPED)
            NOTIFICATIONS.labels("sms", "failed").inc()
            return _decided(event, NotificationFailed(stage=stage, channel="sms", reason=STOPPED), remember)
        not_before = self.quiet.next_allowed(self.clock()) if self.quiet else None
        if not_before is not None:
            # Recorded with the inbox mark: the deferred-text task sends it after not_before. A row already
            # 'sending' (a crash by day, redelivered at night) waits too, and is checked with the provider then.
            defer = Statement(
                text(
                    "INSERT INTO notifier.deliveries (case_id, stage, channel, attempt, message_id, status, caused_by,"
                    " not_before) VALUES (:c, :s, 'sms', 1, :m, 'deferred', :e, :nb)"
                    " ON CONFLICT (case_id, stage, channel, attempt) DO UPDATE SET not_before = EXCLUDED.not_before"
                    " WHERE notifier.deliveries.status = 'sending'"
                ),
                {
                    "c": event.case_id,
                    "s": stage,
                    "m": f"{event.case_id}.{stage}.sms",
                    "e": event.event_id,
                    "nb": not_before,
                },
            )
            log.info("text deferred to the end of quiet hours", stage=stage, not_before=not_before.isoformat())
            NOTIFICATIONS.labels("sms", "deferred").inc()
            return Decision(writes=[remember, defer])
        body = self.body(facts)
        async with self._engine.begin() as tx:
            claim = await _start(tx, event, stage, body_digest(body), self.clock())
        if claim is None:
            log.info("stage already notified", stage=stage, channel="sms")
            return Decision(writes=[remember])
        # TelephonyUnavailable propagates: the consumer retries, and the row stays 'sending'.
        outcome, status, sid = await self.send(DeliveryRow(event.case_id, stage, "sms"), to, body, claim)
        finished = await finish(reads.tx, event.case_id, stage, status, sid, self.clock())
        log.info(
            "notification delivered" if status == "sent" else "notification refused",
            stage=stage,
            channel="sms",
            message_id=sid,
            recorded=finished,
        )
        if not finished:
            return Decision(writes=[remember])
        NOTIFICATIONS.labels("sms", "sent" if status == "sent" else "failed").inc()
        return _decided(event, outcome, remember)

    async def send(self, row: DeliveryRow, to: str, body: str, claim: Claim) -> tuple[CaseEvent, str, str | None]:
        """Text a claimed delivery row's body, keeping the sid on the row as soon as the provider answers; a sid
        an earlier sender kept is the outcome, and nothing is asked or sent."""
        if claim.sid is not None:
            return NotificationSent(stage=row.stage, channel="sms", message_id=claim.sid), "sent", claim.sid
        outcome, status, sid = await self.hand_over(row.stage, to, body, claim.fresh, claim.since)
        if sid is not None:
            await keep_sid(self._engine, row, sid)
        return outcome, status, sid

    async def hand_over(
        self, stage: str, to: str, body: str, fresh: bool, since: datetime
    ) -> tuple[CaseEvent, str, str | None]:
        """Text it, unless the provider already took it (a row not fresh: asked first); the event to record,
        the row's new status and the provider's sid. TelephonyUnavailable propagates."""
        message = None if fresh else await self._already_taken(to, body, since)
        try:
            if message is None:
                began = time.perf_counter()
                try:
                    message = await self._telephony.send_text(to, body, self._status_callback)
                finally:
                    PROVIDER_SECONDS.labels("send_text").observe(time.perf_counter() - began)
        except TelephonyRefused as exc:  # for what the text is: retrying cannot help
            reason = "the provider refused the text" + (f" (error {exc.code})" if exc.code else "")
            return NotificationFailed(stage=stage, channel="sms", reason=reason), "refused", None
        return NotificationSent(stage=stage, channel="sms", message_id=message.sid), "sent", message.sid

    async def _already_taken(self, to: str, body: str, since: datetime) -> ProviderMessage | None:
        """The text the provider took before a crash kept us from recording it, if it did."""
        began = time.perf_counter()
        try:
            texts = await self._telephony.texts_to(to, since=since - CLOCK_SKEW)
        finally:
            PROVIDER_SECONDS.labels("texts_to").observe(time.perf_counter() - began)
        wanted = body_digest(body)
        taken = next((m for m in texts if body_digest(m.body) == wanted), None)
        log.info("redelivery of a text being sent", found_at_provider=taken is not None)
        return taken


def _decided(event: RecordedEvent, outcome: CaseEvent, remember: Statement) -> Decision:
    return Decision(appends=[StreamAppend(event.case_id, None, [outcome], event.caused(ACTOR))], writes=[remember])


async def _start(tx: AsyncConnection, event: RecordedEvent, stage: str, digest: str, now: datetime) -> Claim | None:
    """Record the text as 'sending' under this consumer's claim, or take over a row whose claim lapsed; None when
    this stage's text was already sent or refused. ClaimHeld while another consumer is sending it."""
    written = await tx.execute(
        text(
            "INSERT INTO notifier.deliveries (case_id, stage, channel, attempt, message_id, status, caused_by,"
            " body_digest, claimed_at) VALUES (:c, :s, 'sms', 1, :m, 'sending', :e, :b, :now)"
            " ON CONFLICT (case_id, stage, channel, attempt) DO NOTHING RETURNING created_at"
        ),
        {
            "c": event.case_id,
            "s": stage,
            "m": f"{event.case_id}.{stage}.sms",
            "e": event.event_id,
            "b": digest,
            "now": now,
        },
    )
    created = written.scalar_one_or_none()
    if created is not None:
        return Claim(True, created)
    return await take_over(tx, DeliveryRow(event.case_id, stage, "sms"), now)


async def finish(tx: AsyncConnection, case_id: UUID, stage: str, status: str, sid: str | None, at: datetime) -> bool:
    """Move the text's row from 'sending' to status, sent `at` (the sender's clock, as its claims: what the
    status checks count from); False when a racing delivery already did."""
    finished = await tx.execute(
        text(
            "UPDATE notifier.deliveries SET status = :st, sent_at = :at, provider_sid = coalesce(provider_sid, :sid)"
            " WHERE case_id = :c AND stage = :s AND channel = 'sms' AND attempt = 1 AND status = 'sending'"
            " RETURNING 1"
        ),
        {"st": status, "sid": sid, "c": case_id, "s": stage, "at": at},
    )
    return finished.first() is not None


async def cases_of(tx: AsyncConnection, digest: str) -> list[tuple[UUID, str]]:
    """The cases a number was texted about, newest first: (case id, tracking number)."""
    rows = await tx.execute(
        text(
            "SELECT case_id, tracking_number FROM notifier.case_numbers WHERE number_digest = :d"
            " ORDER BY first_texted_at DESC, case_id DESC"
        ),
        {"d": digest},
    )
    return [(row.case_id, row.tracking_number) for row in rows]
