"""What became of a call, from the provider's status callbacks: answered, or tried again, or, after the last
call, the text or email the message falls back to (call_retries says when and which)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.events import CaseEvent, NotificationDelivered, NotificationFailed
from civicflow.eventstore import EventStore
from civicflow.pii import ContactVault
from services.notifier.call_retries import FINAL, UNANSWERED, fallback_for, next_call_at, outcome_of
from services.notifier.calls import deferred_row, take_report
from services.notifier.domain import stage_facts
from services.notifier.quiet_hours import QuietHours
from services.notifier.texting import NOTIFICATIONS, number_digest, opted_out

# a call's own delivery row (a 'voice' row that falls back to a text or an email is not a call)
_CALLS = "channel = 'voice' AND falls_back_to IS NULL"

log = structlog.get_logger(__name__)

ACTOR = "notifier"


class CallOutcomes:
    """The provider's status callbacks for calls: a final status is recorded as NotificationDelivered, and an
    unanswered call is tried again (call_retries) or, after the last, falls back to a text or an email; only
    when nothing is left to try is NotificationFailed recorded, with the provider's error code. Callbacks for
    anything that is not a call go to `others` (the texts' status reports)."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        vault: ContactVault,
        digest_key: bytes,
        quiet: QuietHours | None,
        others: Callable[[str, str, int | None], Awaitable[bool]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._store = store
        self._vault = vault
        self._key = digest_key
        self._quiet = quiet
        self._others = others
        self._clock = clock

    async def __call__(self, sid: str, status: str, error_code: int | None) -> bool:
        """False when no text or call of ours has that sid."""
        async with self._engine.begin() as tx:
            # Only the first final status of a call acts: a repeated callback finds it already final.
            row = await take_report(tx, sid, status, error_code, _CALLS, FINAL)
            if row is None:
                known = (
                    await tx.execute(
                        text(f"SELECT 1 FROM notifier.deliveries WHERE provider_sid = :sid AND ({_CALLS})"),
                        {"sid": sid},
                    )
                ).first()
                if known is not None:
                    return True  # a call already settled, or a status arriving after its final one
            elif status in FINAL:
                await self._settle(tx, row, status, error_code)
        if row is None:  # not a call: a text, the fallback's text among them
            return await self._others(sid, status, error_code)
        return True

    async def _settle(self, tx: AsyncConnection, row: Any, status: str, error_code: int | None) -> None:
        stream = await self._store.read_stream(tx, row.case_id)
        trigger = next((e for e in stream if e.event_id == row.caused_by), None)
        if trigger is None:
            return
        now = self._clock()
        told = NotificationDelivered(
            stage=row.stage, channel="voice", outcome=outcome_of(status), attempt=row.attempt, error_code=error_code
        )
        events: list[CaseEvent] = []
        if status in UNANSWERED:
            retry_at = next_call_at(row.attempt, now, self._quiet)
            fallback: str | None = None
            if retry_at is None:
                facts = stage_facts(trigger, stream)
                contact = None
                if facts.sealed_contact is not None:
                    contact = await self._vault.unseal(tx, row.case_id, facts.sealed_contact)
                stopped = bool(
                    contact and contact.phone and await opted_out(tx, number_digest(contact.phone, self._key))
                )
                fallback = fallback_for(bool(contact and contact.phone), stopped, bool(contact and contact.email))
            told = told.model_copy(update={"retry_at": retry_at, "fallback": fallback})
            if retry_at is not None or fallback is not None:
                when = retry_at or (self._quiet.next_allowed(now) if self._quiet else None) or now
                then = deferred_row(row.case_id, row.stage, row.attempt + 1, row.caused_by, when, fallback)
                await tx.execute(then.sql, then.params)
            else:
                reason = f"the call was not answered ({status}) after {row.attempt} calls, and nothing else to try"
                if error_code is not None:
                    reason += f" (error {error_code})"
                events.append(NotificationFailed(stage=row.stage, channel="voice", reason=reason))
        NOTIFICATIONS.labels("voice", "answered" if status == "completed" else "unanswered").inc()
        await self._store.append(tx, row.case_id, None, [told, *events], trigger.caused(ACTOR))
        log.info("call outcome", stage=row.stage, attempt=row.attempt, outcome=outcome_of(status))
