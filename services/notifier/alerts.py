"""Staff alerts: a case routed with an urgent priority, or flagged a hazard by its caller, is texted (or called,
as the city file says) to every on-call contact of its department at once, day or night; an on-call reply
"ACK" or "ACK <code>" takes it. Staff numbers come from the city file (civicflow/city.py) and are known in
the notifier's tables only by their keyed digest, as residents' are.

Exactly once per (case, decision event, contact): the alert's row (its ACK code) and one 'sending' row per
contact, committed on their own before the provider is called; the texts and calls, all at once, each row
moved to 'sent' (or 'refused') in a small transaction of its own as soon as the provider answers, so that a
retry of the event for any other reason (another contact's provider down, the resident's email) alerts no one
again; StaffAlerted decided once, in the batch's transaction. A redelivery that finds a text's row still
'sending' (a crash between the provider taking it and that commit) asks the provider (texts_to) before texting
again. The port cannot list calls, so a call's row found 'sending' is called again: after a crash in that
window an on-call contact may be called twice, never not at all.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID
from xml.sax.saxutils import escape

import structlog
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.city import CityProfile, OnCallContact
from civicflow.events import (
    AlertAcknowledged,
    CaseEvent,
    CaseRerouted,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    RecordedEvent,
    RoutingDecision,
    StaffAlerted,
    current_service_code,
)
from civicflow.eventstore import EventStore, StreamAppend
from civicflow.ids import uuid7
from civicflow.unit_of_work import Decision, Reads
from services.notifier.inbound import Ack
from services.notifier.telephony import Telephony, TelephonyRefused
from services.notifier.texting import CLOCK_SKEW, PROVIDER_SECONDS, body_digest, number_digest

log = structlog.get_logger(__name__)

ACTOR = "notifier"
ALERTING_EVENTS = (CaseRouted.event_type, CaseRerouted.event_type)
AlertReason = Literal["urgent", "hazard"]
# Alerts are for staff, but a case's address may be a resident's home: an alert says where to the block.
_NUMBERED = re.compile(r"^(?P<number>\d{1,6})[A-Za-z]?\s+(?P<street>[^\d,][^,]*)$")
_MOST_PLACE_CHARS = 60
_MOST_SERVICE_CHARS = 60

STAFF_ALERTS = Counter(
    "civicflow_staff_alerts",
    "Alerts to departments' on-call contacts, by channel (sms, voice) and outcome (sent, failed, delivered,"
    " undelivered).",
    ["channel", "outcome"],
)
STAFF_ACKS = Counter(
    "civicflow_staff_alert_acks",
    "On-call replies of ACK, by outcome (taken, already_taken, no_alert).",
    ["outcome"],
)


# --- what to alert about, and the words (pure) ----------------------------------------------------------


def alert_reason(decision: RoutingDecision, history: Sequence[CaseEvent]) -> AlertReason | None:
    """Why a routing decision alerts its department's on-call contacts, or None: an urgent priority, or a
    hazard flagged at submission. A past request imported from the city's old system alerts no one."""
    submitted = next((e for e in history if isinstance(e, CaseSubmitted)), None)
    if submitted is None or submitted.imported is not None:
        return None
    if decision.priority == "urgent":
        return "urgent"
    if "hazard" in submitted.flags:
        return "hazard"
    return None


def block_level(location: Location | None) -> str:
    """Where, no closer than the block: "1200 block of W Madison St", a place or crossing without a house
    number as given, else the point to three decimals (about 110 m)."""
    address = " ".join((location.address or "").split(",", 1)[0].split()) if location else ""
    numbered = _NUMBERED.match(address)
    if numbered:
        return f"{int(numbered['number']) // 100 * 100} block of {numbered['street'].strip()}"[:_MOST_PLACE_CHARS]
    if address and not any(ch.isdigit() for ch in address) and address.isprintable():
        return address[:_MOST_PLACE_CHARS]  # "Main St & Oak Ave", "City Hall"
    if location is not None and location.lat is not None and location.long is not None:
        return f"{location.lat:.3f}, {location.long:.3f}"
    return "no place given"


def alert_text(tracking_number: str, service: str, place: str, code: int, reason: AlertReason) -> str:
    """The alert as texted (and said on a call). A hyphen, not a dash: GSM-7 keeps it to 160 characters a segment."""
    hazard = " (hazard reported)" if reason == "hazard" else ""
    return (
        f"URGENT 311 {tracking_number}: {service[:_MOST_SERVICE_CHARS]} at {place}{hazard}"
        f" - reply ACK {code} to take it"
    )


def alert_twiml(words: str) -> str:
    """The alert as a call: said twice, then the call ends (taking it is by text)."""
    said = f'<Say language="en-US">{escape(words)}</Say>'
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{said}<Pause length="1"/>{said}<Hangup/></Response>'


def acknowledged_answer(name: str, tracking_number: str, taken_by: str | None) -> str:
    if taken_by is None:
        return f"Thanks, {name}: {tracking_number} is yours."
    if taken_by == name:
        return f"311 {tracking_number} is already yours, {name}."
    return f"311 {tracking_number} was already taken by {taken_by}."


def no_alert_answer(code: int | None) -> str:
    if code is None:
        return "311: there is no alert to this phone to take."
    return f"311: there is no alert {code} to this phone; reply ACK and the code in the alert."


# --- alerting ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Send:
    contact: OnCallContact
    digest: str
    fresh: bool  # this delivery wrote the row; otherwise an earlier one did, at since
    since: datetime


class StaffAlerts:
    """The notifier's policy for CaseRouted and CaseRerouted: alert the department's on-call contacts when
    the case is urgent or a hazard; returns StaffAlerted for the kernel to append."""

    def __init__(
        self,
        engine: AsyncEngine,
        telephony: Telephony,
        city: CityProfile,
        digest_key: bytes,
        status_callback: str | None = None,
    ) -> None:
        self._engine = engine
        self._telephony = telephony
        self._city = city
        self._key = digest_key
        self._status_callback = status_callback

    async def __call__(self, event: RecordedEvent, reads: Reads) -> Decision:
        decision = event.data
        assert isinstance(decision, RoutingDecision)
        history = [e.data for e in await reads.stream(event.case_id)]
        reason = alert_reason(decision, history)
        if reason is None:
            return Decision()
        contacts = self._city.on_call.get(decision.department_id, ())
        if not contacts:
            log.warning("no one on call to alert", department_id=decision.department_id, reason=reason)
            return Decision()
        submitted = next(e for e in history if isinstance(e, CaseSubmitted))
        service_code = current_service_code(history) or submitted.service_code
        known = self._city.services.get(service_code)
        service = known.name if known else service_code
        async with self._engine.begin() as tx:  # committed before anyone is called
            code = await _open_alert(tx, event, submitted.tracking_number, decision.department_id)
            words = alert_text(submitted.tracking_number, service, block_level(submitted.location), code, reason)
            sends = await _start_sends(tx, event.event_id, contacts, self._key, words)
        results = await asyncio.gather(
            *(self._alert(event.event_id, send, words) for send in sends), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result  # the provider is down: retried; rows still 'sending' are checked with it first
        recorded = await reads.tx.execute(
            text(
                "UPDATE notifier.staff_alerts SET recorded = true WHERE caused_by = :e AND NOT recorded"
                " RETURNING (SELECT count(*) FROM notifier.staff_alert_sends s"
                " WHERE s.caused_by = :e AND s.status = 'sent')"
            ),
            {"e": event.event_id},
        )
        alerted = recorded.scalar_one_or_none()
        log.info("on-call alerted", department_id=decision.department_id, reason=reason, recorded=alerted is not None)
        if alerted is None:  # an earlier delivery of this event recorded it
            return Decision()
        outcome = StaffAlerted(department_id=decision.department_id, contacts=int(alerted), reason=reason)
        return Decision(appends=[StreamAppend(event.case_id, None, [outcome], event.caused(ACTOR))])

    async def _alert(self, caused_by: UUID, send: _Send, words: str) -> None:
        """Text or call one contact and keep the outcome on its row at once, in a transaction of its own: a
        failure elsewhere (another contact, the resident's email) retries the event without alerting again."""
        status, sid = await self._hand_over(send, words)
        async with self._engine.begin() as tx:
            if await _finish_send(tx, caused_by, send.digest, status, sid):
                STAFF_ALERTS.labels(send.contact.by, "sent" if status == "sent" else "failed").inc()

    async def _hand_over(self, send: _Send, words: str) -> tuple[str, str | None]:
        """('sent', sid) or ('refused', None); TelephonyUnavailable propagates."""
        to = send.contact.phone
        try:
            if send.contact.by == "voice":
                began = time.perf_counter()
                try:
                    call = await self._telephony.place_call(to, alert_twiml(words), self._status_callback)
                finally:
                    PROVIDER_SECONDS.labels("place_call").observe(time.perf_counter() - began)
                return "sent", call.sid
            if not send.fresh:
                began = time.perf_counter()
                try:
                    taken = await self._telephony.texts_to(to, since=send.since - CLOCK_SKEW)
                finally:
                    PROVIDER_SECONDS.labels("texts_to").observe(time.perf_counter() - began)
                earlier = next((m for m in taken if body_digest(m.body) == body_digest(words)), None)
                log.info("redelivery of an alert being sent", found_at_provider=earlier is not None)
                if earlier is not None:
                    return "sent", earlier.sid
            began = time.perf_counter()
            try:
                message = await self._telephony.send_text(to, words, self._status_callback)
            finally:
                PROVIDER_SECONDS.labels("send_text").observe(time.perf_counter() - began)
            return "sent", message.sid
        except TelephonyRefused as exc:  # for what the number is: retrying cannot help
            log.warning("provider refused an alert", channel=send.contact.by, error=exc.code)
            return "refused", None


async def _open_alert(tx: AsyncConnection, event: RecordedEvent, tracking_number: str, department_id: str) -> int:
    """The alert's row (made once per decision event); its ACK code."""
    await tx.execute(
        text(
            "INSERT INTO notifier.staff_alerts (caused_by, case_id, tracking_number, department_id)"
            " VALUES (:e, :c, :t, :d) ON CONFLICT (caused_by) DO NOTHING"
        ),
        {"e": event.event_id, "c": event.case_id, "t": tracking_number, "d": department_id},
    )
    code = await tx.scalar(text("SELECT code FROM notifier.staff_alerts WHERE caused_by = :e"), {"e": event.event_id})
    return int(code)


async def _start_sends(
    tx: AsyncConnection, caused_by: UUID, contacts: Sequence[OnCallContact], key: bytes, words: str
) -> list[_Send]:
    """A 'sending' row per contact; the contacts still to alert (rows this call wrote, or left 'sending')."""
    sends = []
    for contact in contacts:
        digest = number_digest(contact.phone, key)
        await tx.execute(
            text(
                "INSERT INTO notifier.staff_alert_sends (caused_by, contact_digest, channel, status, body_digest)"
                " VALUES (:e, :d, :ch, 'sending', :b) ON CONFLICT (caused_by, contact_digest) DO NOTHING"
            ),
            {"e": caused_by, "d": digest, "ch": contact.by, "b": body_digest(words)},
        )
    # now() is this transaction's start: a row it wrote has that created_at, an earlier delivery's does not
    rows = await tx.execute(
        text(
            "SELECT contact_digest, created_at, created_at = now() AS fresh FROM notifier.staff_alert_sends"
            " WHERE caused_by = :e AND status = 'sending'"
        ),
        {"e": caused_by},
    )
    waiting = {row.contact_digest: row for row in rows}
    for contact in contacts:
        row = waiting.pop(number_digest(contact.phone, key), None)  # one contact's number listed twice: once
        if row is not None:
            sends.append(_Send(contact, row.contact_digest, bool(row.fresh), row.created_at))
    return sends


async def _finish_send(tx: AsyncConnection, caused_by: UUID, digest: str, status: str, sid: str | None) -> bool:
    finished = await tx.execute(
        text(
            "UPDATE notifier.staff_alert_sends SET status = :st, provider_sid = :sid, sent_at = now()"
            " WHERE caused_by = :e AND contact_digest = :d AND status = 'sending' RETURNING 1"
        ),
        {"st": status, "sid": sid, "e": caused_by, "d": digest},
    )
    return finished.first() is not None


async def alert_status(tx: AsyncConnection, sid: str, status: str, error_code: int | None) -> bool:
    """Keep what the provider says of an alert's text or call on its row; False when no alert has that sid."""
    reported = await tx.execute(
        text(
            "UPDATE notifier.staff_alert_sends SET provider_status = :st, provider_error = :err"
            " WHERE provider_sid = :sid RETURNING channel"
        ),
        {"st": status, "err": error_code, "sid": sid},
    )
    channel = reported.scalar_one_or_none()
    if channel is not None and status in ("delivered", "read", "completed"):
        STAFF_ALERTS.labels(channel, "delivered").inc()
    elif channel is not None and status in ("undelivered", "failed", "busy", "no-answer"):
        STAFF_ALERTS.labels(channel, "undelivered").inc()
    return channel is not None


# --- taking an alert -----------------------------------------------------------------------------------


class Acknowledgements:
    """An on-call contact's ACK: who takes which alert. Numbers are recognised by their digest against the
    city file's on-call contacts; a number that is no one's on call gets None (its text is a resident's)."""

    def __init__(self, store: EventStore, city: CityProfile, digest_key: bytes) -> None:
        self._store = store
        self._names: dict[str, dict[str, str]] = {}  # number digest -> department id -> contact's name
        for department_id, contacts in city.on_call.items():
            for contact in contacts:
                self._names.setdefault(number_digest(contact.phone, digest_key), {})[department_id] = contact.name

    def on_call(self, digest: str) -> bool:
        return digest in self._names

    async def __call__(self, tx: AsyncConnection, digest: str, ack: Ack) -> str | None:
        """What to text back, having recorded AlertAcknowledged; None when the number is no one's on call."""
        names = self._names.get(digest)
        if names is None:
            return None
        alert = (
            await tx.execute(
                text(
                    "SELECT a.caused_by, a.case_id, a.tracking_number, a.department_id, a.acknowledged_by"
                    " FROM notifier.staff_alerts a JOIN notifier.staff_alert_sends s USING (caused_by)"
                    " WHERE s.contact_digest = :d AND (CAST(:code AS bigint) IS NULL OR a.code = :code)"
                    " ORDER BY s.created_at DESC, a.code DESC LIMIT 1 FOR UPDATE OF a"
                ),
                {"d": digest, "code": ack.code},
            )
        ).first()
        if alert is None:
            STAFF_ACKS.labels("no_alert").inc()
            return no_alert_answer(ack.code)
        name = names.get(alert.department_id) or next(iter(names.values()))
        if alert.acknowledged_by is not None:
            STAFF_ACKS.labels("already_taken").inc()
            return acknowledged_answer(name, alert.tracking_number, alert.acknowledged_by)
        await tx.execute(
            text("UPDATE notifier.staff_alerts SET acknowledged_by = :n, acknowledged_at = now() WHERE caused_by = :e"),
            {"n": name, "e": alert.caused_by},
        )
        metadata = EventMetadata(correlation_id=uuid7(), actor=ACTOR, channel="sms")
        taken = AlertAcknowledged(by=name, department_id=alert.department_id)
        await self._store.append(tx, alert.case_id, None, [taken], metadata)
        STAFF_ACKS.labels("taken").inc()
        log.info("alert acknowledged", department_id=alert.department_id)
        return acknowledged_answer(name, alert.tracking_number, None)
