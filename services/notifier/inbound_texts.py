"""Acting on what residents text back and on the provider's delivery reports: the opt-out list, a case's
status, a reply recorded on the case; a text's final delivery report recorded on its case, an undelivered one
falling back to email. The number is known here only by its keyed digest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, tzinfo
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.events import (
    CaseEvent,
    EventMetadata,
    NotificationDelivered,
    NotificationFailed,
    RecordedEvent,
    ResidentReplied,
)
from civicflow.eventstore import ConcurrencyConflict, EventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault
from services.notifier.alerts import alert_status
from services.notifier.calls import deferred_row, take_report
from services.notifier.domain import stage_facts
from services.notifier.inbound import (
    Ack,
    Help,
    Reply,
    Start,
    Status,
    Stop,
    SurveyAnswer,
    answer,
    case_language,
    case_status,
    read_inbound,
)
from services.notifier.survey import thanks_text
from services.notifier.survey_delivery import record_answer, survey_pending
from services.notifier.texting import NOTIFICATIONS, OPT_OUTS, cases_of, number_digest

log = structlog.get_logger(__name__)

ACTOR = "notifier"
# an on-call contact's ACK -> what to text back, having recorded it; None: the number is no one's on call
TakeAlert = Callable[[AsyncConnection, str, Ack], Awaitable[str | None]]
# Twilio's words for a text that reached the handset, and for one that never will.
DELIVERED = frozenset({"delivered", "read"})
UNDELIVERED = frozenset({"undelivered", "failed"})
FINAL = DELIVERED | UNDELIVERED
# A report recorded on a case the router, the bridge or the notifier's consumer is appending to at the same moment
# is decided again on the case as it now stands: a failed callback is not posted again.
RECORD_ATTEMPTS = 5


class InboundTexts:
    """Answers one inbound text: what to text back (the TwiML <Message>), having acted on it."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        digest_key: bytes,
        city_zone: tzinfo,
        acknowledgements: TakeAlert | None = None,
    ) -> None:
        self._engine = engine
        self._store = store
        self._key = digest_key
        self._zone = city_zone
        self._acknowledgements = acknowledgements

    async def __call__(self, number: str, body: str, message_sid: str | None = None) -> str:
        """What to text back, having acted on the text once per `message_sid` (the provider's id of the text):
        the provider's retry, or a signed request sent again, gets the reply stored for it and changes nothing.
        Without a sid (a direct call, not the provider) the text is acted on every time."""
        digest = number_digest(number, self._key)
        async with self._engine.begin() as tx:
            if message_sid is not None:
                before = await _answered_before(tx, message_sid)
                if before is not None:
                    log.info("inbound text seen before; answered again, nothing changed")
                    return before
            reply = await self._act(tx, digest, body)
            if message_sid is not None:
                await tx.execute(
                    text("UPDATE notifier.inbound_messages SET reply = :r WHERE message_sid = :s"),
                    {"r": reply, "s": message_sid},
                )
            return reply

    async def _act(self, tx: AsyncConnection, digest: str, body: str) -> str:
        cases = await cases_of(tx, digest)
        intent = read_inbound(body, survey_pending=bool(cases) and await survey_pending(tx, cases[0][0]))
        newest = await self._store.read_stream(tx, cases[0][0]) if cases else []
        language = case_language(newest) if newest else None
        log.info("inbound text", intent=type(intent).__name__.lower(), known_cases=len(cases))
        if isinstance(intent, Ack):  # an on-call contact taking an alert (alerts.py); else a reply
            taken = await self._acknowledgements(tx, digest, intent) if self._acknowledgements else None
            if taken is not None:
                return taken
            intent = Reply(intent.text)
        if isinstance(intent, Stop):
            await tx.execute(
                text("INSERT INTO notifier.opt_outs (number_digest) VALUES (:d) ON CONFLICT DO NOTHING"),
                {"d": digest},
            )
            OPT_OUTS.labels("opted_out").inc()
            return answer("stopped", language)
        if isinstance(intent, Start):
            await tx.execute(text("DELETE FROM notifier.opt_outs WHERE number_digest = :d"), {"d": digest})
            OPT_OUTS.labels("opted_in").inc()
            return answer("started", language)
        if isinstance(intent, Help):
            return answer("help", language)
        if not cases:
            return answer("no_case", language)
        if isinstance(intent, Status):
            return await self._status(tx, intent, cases, newest, language)
        if isinstance(intent, SurveyAnswer):
            await record_answer(tx, self._store, cases[0][0], intent.score, "sms")
            return thanks_text(cases[0][1], language)
        assert isinstance(intent, Reply)
        return await self._reply(tx, intent, cases[0], language)

    async def _status(
        self,
        tx: AsyncConnection,
        intent: Status,
        cases: list[tuple[UUID, str]],
        newest: list[RecordedEvent],
        language: str | None,
    ) -> str:
        if intent.tracking_number is None:
            return case_status(newest, self._zone)
        case_id = next((c for c, number in cases if number == intent.tracking_number), None)
        if case_id is None:  # not this number's case: say no more than that
            return answer("not_yours", language, tracking_number=intent.tracking_number)
        return case_status(await self._store.read_stream(tx, case_id), self._zone)

    async def _reply(self, tx: AsyncConnection, intent: Reply, case: tuple[UUID, str], language: str | None) -> str:
        case_id, number = case
        if not intent.text:
            return answer("help", language)
        metadata = EventMetadata(correlation_id=uuid7(), actor=ACTOR, channel="sms")
        await self._store.append(tx, case_id, None, [ResidentReplied(text=intent.text)], metadata)
        return answer("replied", language, tracking_number=number)


async def _answered_before(tx: AsyncConnection, message_sid: str) -> str | None:
    """The reply a text with this sid was answered with before, or None having claimed the sid for this one.
    The claim is a unique key, not a read then a write: a retry arriving while the first is being answered
    waits on the first's row and then reads its reply."""
    claimed = await tx.execute(
        text("INSERT INTO notifier.inbound_messages (message_sid) VALUES (:s) ON CONFLICT DO NOTHING RETURNING 1"),
        {"s": message_sid},
    )
    if claimed.first() is not None:
        return None
    reply = await tx.scalar(
        text("SELECT coalesce(reply, '') FROM notifier.inbound_messages WHERE message_sid = :s"), {"s": message_sid}
    )
    return str(reply)


class StatusReports:
    """What the provider says of a resident's stage text (delivered, undelivered…), kept on its delivery row (an
    'sms' row, or a call's fallback text). The first final report is recorded on the case as NotificationDelivered;
    a text that will never arrive falls back to email when the resident gave one (a 'voice' row falling back to
    email, sent by the calls' periodic task as a call's fallback is), else NotificationFailed with the provider's
    code. A repeated or late report changes nothing. Staff alerts' and surveys' texts are on their own tables."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        vault: ContactVault,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._store = store
        self._vault = vault
        self._clock = clock

    async def __call__(self, sid: str, status: str, error_code: int | None) -> bool:
        """False when no text of ours has that sid."""
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                return await self._record_once(sid, status, error_code)
            except ConcurrencyConflict:
                if attempt == RECORD_ATTEMPTS:
                    raise  # the status checks (status_checks.py) ask the provider later
        raise AssertionError("unreachable")

    async def _record_once(self, sid: str, status: str, error_code: int | None) -> bool:
        async with self._engine.begin() as tx:
            # only a report before the final one moves the row: a repeated or late callback finds it final
            row = await take_report(tx, sid, status, error_code, "channel = 'sms' OR falls_back_to = 'sms'", FINAL)
            if row is None:
                known = (
                    await tx.execute(text("SELECT 1 FROM notifier.deliveries WHERE provider_sid = :sid"), {"sid": sid})
                ).first()
                if known is None:  # not a resident's text: perhaps a staff alert's
                    return await alert_status(tx, sid, status, error_code)
                return True
            if status in FINAL:
                await self._settle(tx, row, status, error_code)
        return _counted(True, status)

    async def _settle(self, tx: AsyncConnection, row: Any, status: str, error_code: int | None) -> None:
        stream = await self._store.read_stream(tx, row.case_id)
        trigger = next((e for e in stream if e.event_id == row.caused_by), None)
        if trigger is None:
            return
        told = NotificationDelivered(
            stage=row.stage,
            channel="sms",
            outcome="delivered" if status in DELIVERED else status,
            attempt=row.attempt,
            error_code=error_code,
        )
        events: list[CaseEvent] = []
        if status in UNDELIVERED:
            facts = stage_facts(trigger, stream)
            contact = None
            if facts.sealed_contact is not None:
                contact = await self._vault.unseal(tx, row.case_id, facts.sealed_contact)
            if contact is not None and contact.email:
                told = told.model_copy(update={"fallback": "email"})
                attempt = await _next_voice_attempt(tx, row.case_id, row.stage)
                then = deferred_row(row.case_id, row.stage, attempt, row.caused_by, self._clock(), "email")
                await tx.execute(then.sql, then.params)
            else:
                reason = "the text was not delivered" + (f" (error {error_code})" if error_code else "")
                events.append(NotificationFailed(stage=row.stage, channel="sms", reason=reason + ", and no email"))
        await self._store.append(tx, row.case_id, None, [told, *events], trigger.caused(ACTOR))
        log.info("text delivery reported", stage=row.stage, outcome=told.outcome, fallback=told.fallback)


async def _next_voice_attempt(tx: AsyncConnection, case_id: UUID, stage: str) -> int:
    """The attempt number of the email a text falls back to: rows of a stage's calls and fallbacks share the
    'voice' channel, each a further attempt."""
    found = await tx.execute(
        text(
            "SELECT coalesce(max(attempt), 0) + 1 FROM notifier.deliveries"
            " WHERE case_id = :c AND stage = :s AND channel = 'voice'"
        ),
        {"c": case_id, "s": stage},
    )
    return int(found.scalar_one())


def _counted(known: bool, status: str) -> bool:
    if known and status in DELIVERED:
        NOTIFICATIONS.labels("sms", "delivered").inc()
    elif known and status in UNDELIVERED:
        NOTIFICATIONS.labels("sms", "undelivered").inc()
    return known
