"""The satisfaction survey's life in the notifier: scheduled with each of a case's resolutions, sent once when due
by a periodic task if that resolution still stands, answered by a text reply or a link's button. Rows live in
notifier.surveys (0004_surveys.sql), one per resolution (0006_resolution_occurrence.sql), each known by its link_ref.

Sending follows the texts' three steps (texting.py): the row is claimed ('scheduled' -> 'sending', claimed_at)
in a transaction committed before the provider or the mail server is called; the send; the row moved to
'sent' with SurveySent in one transaction. A crash in between leaves the row 'sending': after STALE the task
takes it again, asks the provider whether it took the text (texts_to, by body digest) before texting, and
resends an email with the same Message-ID (mail clients show it once, as for stage emails).

An answer is kept once: the first score recorded stands, and a later click or text is thanked but changes
nothing (a survey is a first impression; a resident changing it later is rare and would blur reports).
Opening a link only shows a page with a button; the POST it sends records the answer, so a mail scanner or
a link preview opening every link does not answer "1 (poor)" for the resident.

A survey due for a resolution the resident has since disputed (the call's press 2), or that a later resolution
replaced, is 'skipped' unsent: the case is not asked "how did we do" while the problem is not fixed, and the
later resolution schedules its own.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.events import (
    CaseEvent,
    CaseResolved,
    CaseSubmitted,
    EventMetadata,
    NotificationFailed,
    RecordedEvent,
    SurveyAnswered,
    SurveySent,
    stands_resolved,
)
from civicflow.eventstore import EventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault
from civicflow.unit_of_work import Decision, Reads, Statement
from services.notifier.claims import PUT_OFF, failed
from services.notifier.domain import (
    MESSAGE_ID_DOMAIN,
    SendEmail,
    SendText,
    StageFacts,
    choose_delivery,
    compose_email,
    stage_facts,
    told_as,
)
from services.notifier.inbound import case_language
from services.notifier.mail import MailSender, undeliverable
from services.notifier.survey import (
    BadScore,
    BadToken,
    Page,
    SurveyEmails,
    SurveyTokens,
    page,
    parse_score,
    question_text,
    survey_due,
    survey_links,
)
from services.notifier.texting import NOTIFICATIONS, TextDelivery, opted_out

log = structlog.get_logger(__name__)

ACTOR = "notifier"
BATCH = 100
STALE = timedelta(minutes=2)  # a survey claimed this long ago and still 'sending' lost its sender


class SurveySchedule:
    """The policy for CaseResolved beside the resolution's message: a survey row due after the service's delay,
    for a resident who left a way to reach them and did not ask to hear nothing. Written with the inbox mark."""

    def __init__(self, delay_for: Callable[[str], timedelta | None], tokens: SurveyTokens) -> None:
        self._delay_for = delay_for
        self._tokens = tokens

    async def __call__(self, event: RecordedEvent, reads: Reads) -> Decision:
        if not isinstance(event.data, CaseResolved):
            return Decision()
        facts = stage_facts(event, await reads.stream(event.case_id))
        delay = self._delay_for(facts.service_code)
        if facts.imported or facts.sealed_contact is None or _channel(facts) == "none" or delay is None:
            return Decision()
        due = survey_due(event.data.resolved_at, delay)
        log.info("survey scheduled", due_at=due.isoformat())
        return Decision(
            writes=[
                Statement(
                    text(
                        "INSERT INTO notifier.surveys (case_id, caused_by, due_at, link_ref) VALUES (:c, :e, :d, :r)"
                        " ON CONFLICT (case_id, caused_by) DO NOTHING"
                    ),
                    {"c": event.case_id, "e": event.event_id, "d": due, "r": self._tokens.new_ref()},
                )
            ]
        )


def _channel(facts: StageFacts) -> str:
    return (facts.preferred_channel or "").strip().lower()


def survey_message_id(case_id: UUID, occurrence: int = 1) -> str:
    """One per resolution: <case.survey@…>, then <case.survey.2@…> for the survey of a second resolution."""
    return f"<{case_id}.{told_as('survey', occurrence)}@{MESSAGE_ID_DOMAIN}>"


def still_stands(trigger: RecordedEvent, stream: Sequence[RecordedEvent]) -> bool:
    """Whether the resolution a survey asks about is the case's latest and no dispute has followed it."""
    latest = next((e for e in reversed(stream) if isinstance(e.data, CaseResolved)), None)
    return latest is not None and latest.event_id == trigger.event_id and stands_resolved(e.data for e in stream)


class SurveySender:
    """The periodic task: sends every survey whose moment has come, exactly once."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        vault: ContactVault,
        texts: TextDelivery | None,
        mail: MailSender,
        mail_from: str,
        tokens: SurveyTokens,
        public_url: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        only: Collection[UUID] | None = None,
    ) -> None:
        self._engine = engine
        self._store = store
        self._vault = vault
        self._texts = texts
        self._only = only  # these cases' surveys alone (a test's own), else every case's
        self._mail = mail
        self._mail_from = mail_from
        self._tokens = tokens
        self._public_url = public_url
        self._emails = SurveyEmails()
        self._clock = clock

    async def send_due(self) -> int:
        """Send the surveys due now; how many rows were looked at."""
        now = self._clock()
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT case_id, caused_by, status, link_ref, claimed_at, failures FROM notifier.surveys"
                        " WHERE due_at <= :now"
                        " AND (status = 'scheduled' OR (status = 'sending' AND claimed_at < :stale))"
                        + ("" if self._only is None else " AND case_id = ANY(:only)")
                        + " ORDER BY due_at LIMIT :n"
                    ),
                    {"now": now, "stale": now - STALE, "n": BATCH, "only": list(self._only or ())},
                )
            ).all()
        for row in rows:
            try:
                await self._send(row, now)
            except Exception as exc:  # one survey's failure (a mail server down) holds up no other
                await self._put_off(row, now, exc)
        return len(rows)

    async def _put_off(self, row: Any, now: datetime, exc: Exception) -> None:
        wait = PUT_OFF.after(row.failures + 1)
        async with self._engine.begin() as tx:
            await tx.execute(
                text(
                    "UPDATE notifier.surveys SET due_at = :due, failures = failures + 1"
                    " WHERE case_id = :c AND status IN ('scheduled', 'sending')"
                ),
                {"c": row.case_id, "due": now + wait},
            )
        failed("surveys", "survey", row.failures + 1, wait, exc)

    async def _send(self, row: Any, now: datetime) -> None:
        async with self._engine.begin() as tx:
            stream = await self._store.read_stream(tx, row.case_id)
            trigger = next((e for e in stream if e.event_id == row.caused_by), None)
            if trigger is None:
                return
            if not still_stands(trigger, stream):
                await _set(tx, row.link_ref, "skipped", row.status)
                log.info("survey not sent", reason="the resolution was disputed or replaced")
                return
            facts = stage_facts(trigger, stream)
            contact = None
            if facts.sealed_contact is not None:
                contact = await self._vault.unseal(tx, row.case_id, facts.sealed_contact)
            preferred = facts.preferred_channel
            if _channel(facts) == "voice":  # no voice survey: a caller is texted if they gave a phone, else emailed
                preferred = "sms" if contact is not None and contact.phone else "email"
            delivery = choose_delivery(facts.sealed_contact is not None, contact, preferred)
            reachable = isinstance(delivery, SendText | SendEmail)
            if isinstance(delivery, SendText):
                if self._texts is None or await opted_out(tx, self._texts.digest(delivery.to)):
                    reachable = False
                elif self._texts.quiet is not None and self._texts.quiet.next_allowed(now) is not None:
                    return  # texting hours are closed: it waits for them
            if not reachable or not isinstance(delivery, SendText | SendEmail):
                await _set(tx, row.link_ref, "skipped", row.status)
                log.info("survey not sent", reason="no way to ask any more")
                return
            fresh = row.status == "scheduled"
            # A claim, fresh or stale, is one replica's: the row's claimed_at moves only if no other moved it.
            # started_at stays the first claim's, the moment the provider is asked from after a crash.
            claimed = await tx.execute(
                text(
                    "UPDATE notifier.surveys SET status = 'sending', started_at = coalesce(started_at, :now),"
                    " claimed_at = :now, channel = :ch WHERE link_ref = :r AND status = :was"
                    " AND claimed_at IS NOT DISTINCT FROM :claimed RETURNING started_at"
                ),
                {"r": row.link_ref, "now": now, "ch": delivery.channel, "was": row.status, "claimed": row.claimed_at},
            )
            since = claimed.scalar_one_or_none()
            if since is None:
                return  # another replica claimed it
        outcome: CaseEvent
        status = "sent"
        if isinstance(delivery, SendText):
            assert self._texts is not None
            body = question_text(facts.tracking_number, facts.language)
            told, result, sid = await self._texts.hand_over("survey", delivery.to, body, fresh, since)
            if result == "sent" and sid is not None:
                outcome = SurveySent(channel="sms", message_id=sid)
            else:
                outcome, status = told, "skipped"
        else:
            outcome, status = await self._email(facts, delivery.to, row.link_ref)
        async with self._engine.begin() as tx:
            if isinstance(delivery, SendText) and self._texts is not None:
                # so the reply "4" from this number finds the case, even for a resident never texted before
                await tx.execute(
                    text(
                        "INSERT INTO notifier.case_numbers (number_digest, case_id, tracking_number)"
                        " VALUES (:d, :c, :t) ON CONFLICT DO NOTHING"
                    ),
                    {"d": self._texts.digest(delivery.to), "c": row.case_id, "t": facts.tracking_number},
                )
            if await _set(tx, row.link_ref, status, "sending"):
                metadata = trigger.caused(ACTOR)
                await self._store.append(tx, row.case_id, None, [outcome], metadata)
                NOTIFICATIONS.labels(delivery.channel, "survey_sent" if status == "sent" else "failed").inc()
        log.info("survey handed over", channel=delivery.channel, outcome=status)

    async def _email(self, facts: StageFacts, to: str, ref: str) -> tuple[CaseEvent, str]:
        message_id = survey_message_id(facts.case_id, facts.occurrence)
        links = survey_links(self._public_url, self._tokens.token(ref))
        rendered = self._emails.render(facts.tracking_number, facts.service_code, facts.language, links)
        try:
            message = compose_email(rendered, to, self._mail_from, message_id, self._clock())
            await self._mail.send(message)
        except Exception as exc:
            reason = "mail client cannot write this address" if isinstance(exc, ValueError) else undeliverable(exc)
            if reason is None:
                raise  # an outage: the row stays 'sending' and is sent again after STALE
            return NotificationFailed(stage="survey", channel="email", reason=reason), "skipped"
        return SurveySent(channel="email", message_id=message_id), "sent"


async def _set(tx: AsyncConnection, link_ref: str, status: str, was: str) -> bool:
    moved = await tx.execute(
        text(
            "UPDATE notifier.surveys SET status = :st, sent_at = CASE WHEN :st = 'sent' THEN now() END"
            " WHERE link_ref = :r AND status = :was RETURNING 1"
        ),
        {"st": status, "r": link_ref, "was": was},
    )
    return moved.first() is not None


async def survey_pending(tx: AsyncConnection, case_id: UUID) -> bool:
    """Whether the case's survey was sent and is not answered yet."""
    found = await tx.execute(
        text("SELECT 1 FROM notifier.surveys WHERE case_id = :c AND status = 'sent' AND answered_at IS NULL"),
        {"c": case_id},
    )
    return found.first() is not None


async def record_answer(
    tx: AsyncConnection,
    store: EventStore,
    case_id: UUID,
    score: int,
    channel: Literal["sms", "email"],
    link_ref: str | None = None,
) -> bool:
    """Record a survey's first answer (SurveyAnswered): the survey link_ref names, else (a text) the case's newest
    survey sent and unanswered; False when it was already answered or never sent."""
    answered = await tx.execute(
        text(
            "UPDATE notifier.surveys SET answered_at = now(), score = :s WHERE link_ref = ("
            " SELECT link_ref FROM notifier.surveys WHERE case_id = :c AND status = 'sent' AND answered_at IS NULL"
            " AND (CAST(:r AS text) IS NULL OR link_ref = :r) ORDER BY sent_at DESC LIMIT 1) RETURNING 1"
        ),
        {"c": case_id, "s": score, "r": link_ref},
    )
    if answered.first() is None:
        return False
    metadata = EventMetadata(correlation_id=uuid7(), actor=ACTOR, channel=channel)
    await store.append(tx, case_id, None, [SurveyAnswered(score=score, channel=channel)], metadata)
    NOTIFICATIONS.labels(channel, "survey_answered").inc()
    return True


class SurveyLinks:
    """A survey link: opened (GET), a page with a button and nothing recorded; its button (POST), the answer. A link
    we did not sign, or a wrong score, changes nothing."""

    def __init__(self, engine: AsyncEngine, store: EventStore, tokens: SurveyTokens) -> None:
        self._engine = engine
        self._store = store
        self._tokens = tokens

    async def shown(self, token: str, raw_score: str) -> Page:
        """The page a link opens: the score and a button to send it; records nothing."""
        return await self._page(token, raw_score, record=False)

    async def answered(self, token: str, raw_score: str) -> Page:
        """The page the button's POST gets: the answer recorded, or that an earlier one stands."""
        return await self._page(token, raw_score, record=True)

    async def _page(self, token: str, raw_score: str, record: bool) -> Page:
        try:
            ref = self._tokens.ref_of(token)
        except BadToken:
            log.info("survey link refused", reason="not signed by us")
            return page(404, "not_found")
        try:
            score = parse_score(raw_score)
        except BadScore:
            return page(400, "bad_score")
        async with self._engine.begin() as tx:
            lock = " FOR UPDATE" if record else ""
            row = (
                await tx.execute(
                    text("SELECT case_id, status, answered_at FROM notifier.surveys WHERE link_ref = :r" + lock),
                    {"r": ref},
                )
            ).first()
            if row is None or row.status != "sent":
                return page(404, "not_found")
            stream = await self._store.read_stream(tx, row.case_id)
            language = case_language(stream)
            number = next((e.data.tracking_number for e in stream if isinstance(e.data, CaseSubmitted)), "")
            if not record:
                if row.answered_at is not None:
                    return page(200, "already", language, tracking_number=number)
                return page(200, "confirm", language, form=True, tracking_number=number, score=str(score))
            recorded = await record_answer(tx, self._store, row.case_id, score, "email", ref)
        log.info("survey answered by link", recorded=recorded)
        if not recorded:
            return page(200, "already", language, tracking_number=number)
        return page(200, "thanks", language, tracking_number=number, score=str(score))
