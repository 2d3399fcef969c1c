"""Calling a resident with a stage's message through the telephony port, once per attempt, only within calling hours;
and the call-back's menu answered (press 2: the resolution is disputed, once per call).

The same steps as a text (texting.py): a 'sending' row keyed (case, stage, 'voice', attempt), committed on its own
under this consumer's claim (claims.py) before the provider is asked to call; the call, its sid kept on the row at
once; the row moved to 'sent' in the batch's transaction, with NotificationSent. A row found 'sending' under a live
claim is retried (ClaimHeld); one whose claim lapsed and kept no sid (the provider may have taken the call before a
crash kept us from recording it) is taken over and asks the provider first (`calls_to` the number since the row was
claimed): a call placed then whose sid none of our rows holds is this row's, recorded instead of calling again (the
provider keeps no TwiML or callback URL with a call, so nothing finer tells calls to one number apart). A call due
outside calling hours (the texting hours) is a 'deferred' row with not_before, placed by `send_due`, a periodic task,
as deferred texts are; a row it fails on is put off with backoff and the rest go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.events import (
    CaseEvent,
    CaseResolved,
    EventMetadata,
    NotificationDelivered,
    NotificationFailed,
    NotificationSent,
    RecordedEvent,
    ResolutionDisputed,
    stands_resolved,
)
from civicflow.eventstore import EventStore, StreamAppend
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact
from civicflow.unit_of_work import Decision, Reads, Statement
from services.notifier.claims import LEASE, Claim, DeliveryRow, keep_sid, put_off, take, take_over
from services.notifier.domain import (
    MessageTemplates,
    PlaceCall,
    StageFacts,
    choose_delivery,
    compose_email,
    message_id_for,
    stage_facts,
)
from services.notifier.mail import MailSender, undeliverable
from services.notifier.quiet_hours import QuietHours
from services.notifier.telephony import ProviderCall, Telephony, TelephonyRefused
from services.notifier.texting import (
    CLOCK_SKEW,
    NOTIFICATIONS,
    PROVIDER_SECONDS,
    STOPPED,
    TextDelivery,
    number_digest,
    opted_out,
)
from services.notifier.voice import CallScripts, menu_choice

log = structlog.get_logger(__name__)

ACTOR = "notifier"
BATCH = 100


class CallDelivery:
    """Calls one stage's message; the notifier's handler calls `deliver` when the resident is to be called, and
    the periodic task `send_due` places the calls that waited for calling hours."""

    def __init__(
        self,
        engine: AsyncEngine,
        telephony: Telephony,
        scripts: CallScripts,
        digest_key: bytes,
        status_callback: str | None = None,
        quiet: QuietHours | None = None,
        call_back_services: frozenset[str] = frozenset(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        texts: TextDelivery | None = None,
        mail: MailFallback | None = None,
    ) -> None:
        self._engine = engine
        self._telephony = telephony
        self.scripts = scripts
        self._key = digest_key
        self._status_callback = status_callback
        self.quiet = quiet
        self._call_back_services = call_back_services
        self.clock = clock
        self._texts = texts
        self._mail = mail

    def calls_back(self, facts: StageFacts) -> bool:
        """Whether the city calls back about this stage whatever the resident's channel."""
        return facts.stage == "resolved" and facts.service_code in self._call_back_services

    async def deliver(
        self, event: RecordedEvent, facts: StageFacts, to: str, reads: Reads, has_email: bool = False
    ) -> Decision:
        """Call `to`; a call the provider refuses (an invalid number) falls back to email when there is one."""
        stage = facts.told_as  # the occurrence too: a case resolved again is told again (domain.StageFacts)
        digest = number_digest(to, self._key)
        # so a text from this number finds its cases (STATUS, a reply), as for a texted number
        remember = Statement(
            text(
                "INSERT INTO notifier.case_numbers (number_digest, case_id, tracking_number) VALUES (:d, :c, :t)"
                " ON CONFLICT DO NOTHING"
            ),
            {"d": digest, "c": event.case_id, "t": facts.tracking_number},
        )
        if await opted_out(reads.tx, digest):  # STOP means no calls either
            log.info("notification not possible", stage=stage, channel="voice", reason=STOPPED)
            NOTIFICATIONS.labels("voice", "failed").inc()
            return _decided(event, NotificationFailed(stage=stage, channel="voice", reason=STOPPED), remember)
        not_before = self.quiet.next_allowed(self.clock()) if self.quiet else None
        if not_before is not None:
            log.info("call deferred to calling hours", stage=stage, not_before=not_before.isoformat())
            NOTIFICATIONS.labels("voice", "deferred").inc()
            return Decision(writes=[remember, deferred_row(event.case_id, stage, 1, event.event_id, not_before)])
        async with self._engine.begin() as tx:
            claim = await _start(tx, event.case_id, stage, 1, event.event_id, self.clock())
        if claim is None:
            log.info("stage already notified", stage=stage, channel="voice")
            return Decision(writes=[remember])
        outcome, status, sid, code = await self.call(DeliveryRow(event.case_id, stage, "voice"), facts, to, claim)
        finished = await finish(reads.tx, event.case_id, stage, 1, status, sid, self.clock())
        log.info("call placed" if status == "sent" else "call refused", stage=stage, recorded=finished)
        if not finished:
            return Decision(writes=[remember])
        NOTIFICATIONS.labels("voice", "sent" if status == "sent" else "failed").inc()
        if status == "refused" and has_email and self._mail is not None:
            # a number the provider will not call will not take a text either: the email is the route left
            told = NotificationDelivered(
                stage=stage, channel="voice", outcome="failed", attempt=1, fallback="email", error_code=code
            )
            then = deferred_row(event.case_id, stage, 2, event.event_id, self.clock(), "email")
            return Decision(
                appends=[StreamAppend(event.case_id, None, [told], event.caused(ACTOR))], writes=[remember, then]
            )
        return _decided(event, outcome, remember)

    async def call(
        self, row: DeliveryRow, facts: StageFacts, to: str, claim: Claim
    ) -> tuple[CaseEvent, str, str | None, int | None]:
        """Place a claimed row's call, keeping the sid on the row as soon as the provider answers; a sid an earlier
        sender kept is the outcome, and nothing is asked or placed."""
        if claim.sid is not None:
            return NotificationSent(stage=facts.told_as, channel="voice", message_id=claim.sid), "sent", claim.sid, None
        outcome, status, sid, code = await self.place(facts, to, None if claim.fresh else claim.since)
        if sid is not None:
            await keep_sid(self._engine, row, sid)
        return outcome, status, sid, code

    async def place(
        self, facts: StageFacts, to: str, sending_since: datetime | None = None
    ) -> tuple[CaseEvent, str, str | None, int | None]:
        """Ask the provider to call, unless a row found 'sending' since `sending_since` was placed before a crash:
        the event to record, the row's new status, the call's sid and the provider's error code when it refused.
        TelephonyUnavailable propagates (the consumer retries; the row stays 'sending')."""
        if sending_since is not None and (placed := await self._already_placed(to, sending_since)) is not None:
            found = NotificationSent(stage=facts.told_as, channel="voice", message_id=placed.sid)
            return found, "sent", placed.sid, None
        script = self.scripts.render(facts)
        began = time.perf_counter()
        try:
            call = await self._telephony.place_call(to, script.twiml, self._status_callback)
        except TelephonyRefused as exc:
            reason = "the provider refused the call" + (f" (error {exc.code})" if exc.code else "")
            return NotificationFailed(stage=facts.told_as, channel="voice", reason=reason), "refused", None, exc.code
        finally:
            PROVIDER_SECONDS.labels("place_call").observe(time.perf_counter() - began)
        return NotificationSent(stage=facts.told_as, channel="voice", message_id=call.sid), "sent", call.sid, None

    async def _already_placed(self, to: str, since: datetime) -> ProviderCall | None:
        """The call the provider placed before a crash kept us from recording it, if it did: the earliest call to
        the number since the row was claimed that no row of ours (a resident's or a staff alert's) holds."""
        began = time.perf_counter()
        try:
            placed = await self._telephony.calls_to(to, since=since - CLOCK_SKEW)
        finally:
            PROVIDER_SECONDS.labels("calls_to").observe(time.perf_counter() - began)
        claimed: set[str] = set()
        if placed:
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT provider_sid FROM notifier.deliveries WHERE provider_sid = ANY(:sids)"
                        " UNION SELECT provider_sid FROM notifier.staff_alert_sends WHERE provider_sid = ANY(:sids)"
                    ),
                    {"sids": [c.sid for c in placed]},
                )
                claimed = {row.provider_sid for row in rows}
        unclaimed = sorted((c for c in placed if c.sid not in claimed), key=lambda c: c.created_at)
        log.info("redelivery of a call being placed", found_at_provider=bool(unclaimed))
        return unclaimed[0] if unclaimed else None

    async def send_due(self, store: EventStore, vault: ContactVault) -> int:
        """Place every call (a deferred first call, or a retry) whose moment has come, and send the texts and
        emails calls and texts fell back to; how many were looked at. A row whose claim lapsed (LEASE)
        (its sender died) is found again: the text or call is looked for at the provider first. Outside calling
        hours only the emails go: an email wakes no one."""
        now = self.clock()
        calling = self.quiet is None or self.quiet.next_allowed(now) is None
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT case_id, stage, attempt, caused_by, falls_back_to, status, claimed_at, failures"
                        " FROM notifier.deliveries"
                        " WHERE channel = 'voice' AND not_before <= :now AND (:calling OR falls_back_to = 'email')"
                        " AND (status = 'deferred'"
                        " OR (status = 'sending' AND coalesce(claimed_at, started_at, created_at) <= :lapsed))"
                        " ORDER BY not_before LIMIT :n"
                    ),
                    {"now": now, "lapsed": now - LEASE, "n": BATCH, "calling": calling},
                )
            ).all()
        for row in rows:
            try:
                await self._send_deferred(row, store, vault)
            except Exception as exc:  # one row's failure (a mail server down) holds up no other row
                where = DeliveryRow(row.case_id, row.stage, "voice", row.attempt)
                await put_off(self._engine, where, row.failures, now, "deferred calls", exc)
        return len(rows)

    async def _send_deferred(self, row: Any, store: EventStore, vault: ContactVault) -> None:
        key = (row.case_id, row.stage, row.attempt)
        where = DeliveryRow(row.case_id, row.stage, "voice", row.attempt)
        async with self._engine.begin() as tx:
            stream = await store.read_stream(tx, row.case_id)
            trigger = next((e for e in stream if e.event_id == row.caused_by), None)
            if trigger is None:
                await _close(tx, *key)
                return
            facts = stage_facts(trigger, stream)
            contact = None
            if facts.sealed_contact is not None:
                contact = await vault.unseal(tx, row.case_id, facts.sealed_contact)
            failed = await self._unreachable(tx, row, facts, contact)
            if failed is not None:
                await _close(tx, *key)
                await store.append(tx, row.case_id, None, [failed], trigger.caused(ACTOR))
                NOTIFICATIONS.labels(failed.channel, "failed").inc()
                return
            # A claim, of a due row or a lapsed one, is one replica's: claimed_at moves only if no one moved it.
            claim = await take(tx, where, row.status, row.claimed_at, self.clock())
            if claim is None:
                return  # another replica claimed it
        assert contact is not None  # _unreachable refused a forgotten contact
        outcome, status, sid = await self._hand_over(where, row.falls_back_to, facts, contact, claim)
        async with self._engine.begin() as tx:
            finished = await finish(tx, *key, status, sid, self.clock())
            # a first call's outcome, and a fallback's; a retried call's is told by its status callback
            if finished and (row.attempt == 1 or row.falls_back_to is not None):
                await store.append(tx, row.case_id, None, [outcome], trigger.caused(ACTOR))
                NOTIFICATIONS.labels(row.falls_back_to or "voice", "sent" if status == "sent" else "failed").inc()
            if finished and status == "refused" and row.falls_back_to == "sms" and contact.email:
                # the text refused: the email is the last route
                then = deferred_row(row.case_id, row.stage, row.attempt + 1, row.caused_by, self.clock(), "email")
                await tx.execute(then.sql, then.params)
        log.info("deferred delivery handed over", stage=row.stage, attempt=row.attempt, by=row.falls_back_to or "voice")

    async def _unreachable(
        self, tx: AsyncConnection, row: Any, facts: StageFacts, contact: ResidentContact | None
    ) -> NotificationFailed | None:
        """Why this row can no longer go (a forgotten contact, STOP texted while it waited), or None."""
        if row.falls_back_to == "email":
            if contact is None or not contact.email or self._mail is None:
                return NotificationFailed(stage=row.stage, channel="email", reason="no longer reachable by email")
            return None
        delivery = choose_delivery(
            facts.sealed_contact is not None, contact, facts.preferred_channel, self.calls_back(facts)
        )
        channel = row.falls_back_to or "voice"
        if not isinstance(delivery, PlaceCall) or (channel == "sms" and self._texts is None):
            return NotificationFailed(stage=row.stage, channel=channel, reason="no longer reachable by phone")
        if await opted_out(tx, number_digest(delivery.to, self._key)):
            return NotificationFailed(stage=row.stage, channel=channel, reason=STOPPED)
        return None

    async def _hand_over(
        self, row: DeliveryRow, by: str | None, facts: StageFacts, contact: ResidentContact, claim: Claim
    ) -> tuple[CaseEvent, str, str | None]:
        if by == "email":
            assert self._mail is not None and contact.email
            return await self._mail.send(facts, str(contact.email))
        assert contact.phone
        if by == "sms":
            assert self._texts is not None
            return await self._texts.send(row, contact.phone, self._texts.body(facts), claim)
        outcome, status, sid, _ = await self.call(row, facts, contact.phone, claim)
        return outcome, status, sid


def _decided(event: RecordedEvent, outcome: CaseEvent, remember: Statement) -> Decision:
    return Decision(appends=[StreamAppend(event.case_id, None, [outcome], event.caused(ACTOR))], writes=[remember])


async def take_report(
    tx: AsyncConnection, sid: str, status: str, error_code: int | None, rows: str, final: frozenset[str]
) -> Any:
    """Keep the provider's status on the delivery row of `sid` among `rows` (an SQL condition on
    notifier.deliveries) unless that row already holds a final one: the row (case_id, stage, attempt, caused_by)
    when this report moved it, else None (no such row, or a repeated or late callback that finds it final)."""
    found = await tx.execute(
        text(
            "UPDATE notifier.deliveries SET provider_status = :st, provider_error = :err"
            f" WHERE provider_sid = :sid AND ({rows}) AND coalesce(provider_status, '') <> ALL(:final)"
            " RETURNING case_id, stage, attempt, caused_by"
        ),
        {"st": status, "err": error_code, "sid": sid, "final": sorted(final)},
    )
    return found.first()


def deferred_row(
    case_id: UUID, stage: str, attempt: int, caused_by: UUID, not_before: datetime, falls_back_to: str | None = None
) -> Statement:
    """A call waiting for calling hours or a retry's moment, or the text or email it falls back to. A row already
    'sending' and waiting for no task (a crash by day, redelivered at night) is given the moment too, so the task
    takes it once its claim has lapsed, asking the provider first."""
    return Statement(
        text(
            "INSERT INTO notifier.deliveries (case_id, stage, channel, attempt, message_id, status, caused_by,"
            " not_before, falls_back_to) VALUES (:c, :s, 'voice', :a, :m, 'deferred', :e, :nb, :fb)"
            " ON CONFLICT (case_id, stage, channel, attempt) DO UPDATE SET not_before = EXCLUDED.not_before"
            " WHERE notifier.deliveries.status = 'sending'"
        ),
        {
            "c": case_id,
            "s": stage,
            "a": attempt,
            "m": f"{case_id}.{stage}.voice.{attempt}",
            "e": caused_by,
            "nb": not_before,
            "fb": falls_back_to,
        },
    )


async def _start(
    tx: AsyncConnection, case_id: UUID, stage: str, attempt: int, caused_by: UUID, now: datetime
) -> Claim | None:
    """Record the call as 'sending' under this consumer's claim, or take over a row whose claim lapsed; None when
    this attempt was already placed (or refused). ClaimHeld while another consumer is placing it."""
    written = await tx.execute(
        text(
            "INSERT INTO notifier.deliveries (case_id, stage, channel, attempt, message_id, status, caused_by,"
            " claimed_at) VALUES (:c, :s, 'voice', :a, :m, 'sending', :e, :now)"
            " ON CONFLICT (case_id, stage, channel, attempt) DO NOTHING RETURNING created_at"
        ),
        {"c": case_id, "s": stage, "a": attempt, "m": f"{case_id}.{stage}.voice.{attempt}", "e": caused_by, "now": now},
    )
    created = written.scalar_one_or_none()
    if created is not None:
        return Claim(True, created)
    # still 'sending': a redelivery after a crash, which asks the provider before calling (`place`)
    return await take_over(tx, DeliveryRow(case_id, stage, "voice", attempt), now)


async def finish(
    tx: AsyncConnection, case_id: UUID, stage: str, attempt: int, status: str, sid: str | None, at: datetime
) -> bool:
    """Move the call's (or its fallback's) row from 'sending' to status, sent `at` (the sender's clock, as its
    claims); False when a racing delivery already did."""
    finished = await tx.execute(
        text(
            "UPDATE notifier.deliveries SET status = :st, sent_at = :at, provider_sid = coalesce(provider_sid, :sid)"
            " WHERE case_id = :c AND stage = :s AND channel = 'voice' AND attempt = :a AND status = 'sending'"
            " RETURNING 1"
        ),
        {"st": status, "sid": sid, "c": case_id, "s": stage, "a": attempt, "at": at},
    )
    return finished.first() is not None


async def _close(tx: AsyncConnection, case_id: UUID, stage: str, attempt: int) -> None:
    await tx.execute(
        text(
            "UPDATE notifier.deliveries SET status = 'refused' WHERE case_id = :c AND stage = :s"
            " AND channel = 'voice' AND attempt = :a AND status IN ('deferred', 'sending')"
        ),
        {"c": case_id, "s": stage, "a": attempt},
    )


class CallMenu:
    """Answers a digit pressed at the resolution call's menu: 1 the message again, 2 ResolutionDisputed
    (once per call: the call's sid is the key in notifier.disputes), anything else the menu once more."""

    def __init__(self, engine: AsyncEngine, store: EventStore, vault: ContactVault, scripts: CallScripts) -> None:
        self._engine = engine
        self._store = store
        self._vault = vault
        self._scripts = scripts

    async def __call__(self, case_id: UUID, call_sid: str, digits: str, repeat: int) -> str | None:
        """The TwiML to play; None when the case has no resolution to answer about."""
        async with self._engine.begin() as tx:
            stream = await self._store.read_stream(tx, case_id)
            resolved = next((e for e in reversed(stream) if isinstance(e.data, CaseResolved)), None)
            if resolved is None:
                return None
            facts = stage_facts(resolved, stream)
            choice = menu_choice(digits, repeat)
            # A late press 2 (the case was reopened, or resolved and disputed already) says nothing new:
            # the resident hears the same answer, and the timeline shows no second dispute.
            if choice == "disputed" and stands_resolved(e.data for e in stream):
                recorded = await tx.execute(
                    text(
                        "INSERT INTO notifier.disputes (call_sid, case_id) VALUES (:sid, :c)"
                        " ON CONFLICT DO NOTHING RETURNING 1"
                    ),
                    {"sid": call_sid, "c": case_id},
                )
                if recorded.first() is not None:
                    metadata = EventMetadata(correlation_id=uuid7(), actor=ACTOR, channel="voice")
                    await self._store.append(tx, case_id, None, [ResolutionDisputed(call_sid=call_sid)], metadata)
                    log.info("resolution disputed by phone")
            return self._scripts.answer(facts, choice, repeat)


class MailFallback:
    """The email a stage's message falls back to when neither calls nor a text reached the resident."""

    def __init__(self, sender: MailSender, templates: MessageTemplates, mail_from: str) -> None:
        self._sender = sender
        self._templates = templates
        self._mail_from = mail_from

    async def send(self, facts: StageFacts, to: str) -> tuple[CaseEvent, str, str | None]:
        """The event to record, the row's new status and the Message-ID. An outage of the mail server raises."""
        message_id = message_id_for(facts.case_id, facts.told_as)
        try:
            message = compose_email(self._templates.render(facts), to, self._mail_from, message_id, datetime.now(UTC))
            await self._sender.send(message)
        except Exception as exc:
            reason = "mail client cannot write this address in a message" if isinstance(exc, ValueError) else None
            reason = reason or undeliverable(exc)
            if reason is None:
                raise
            return NotificationFailed(stage=facts.told_as, channel="email", reason=reason), "refused", None
        return NotificationSent(stage=facts.told_as, channel="email", message_id=message_id), "sent", None
