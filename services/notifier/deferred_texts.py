"""Sending the texts that waited out quiet hours: a periodic task in the notifier reads 'deferred' rows whose
moment has come, and texts each as its stage's event would have, exactly once.

Each row is claimed ('deferred' -> 'sending', started_at, claimed_at; claims.py) with a compare-and-set in a
transaction committed before the provider is called, so of two replicas one texts, and a crash after the
provider took the text leaves it 'sending': once its claim lapsed (LEASE) the task takes it again the same way
and asks the provider (texts_to since started_at) before texting, unless the sid was kept. A row the task fails
on is put off with backoff and the rest go on. What changed while it waited is
honoured: a number that texted STOP, a contact forgotten, a stage already told.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.events import NotificationFailed, NotificationSent
from civicflow.eventstore import EventStore
from civicflow.pii import ContactVault
from services.notifier.claims import LEASE, DeliveryRow, put_off, take
from services.notifier.domain import SendText, choose_delivery, stage_facts
from services.notifier.texting import NOTIFICATIONS, STOPPED, TextDelivery, body_digest, finish, opted_out

log = structlog.get_logger(__name__)

ACTOR = "notifier"
BATCH = 100


class DeferredTexts:
    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        vault: ContactVault,
        texts: TextDelivery,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._store = store
        self._vault = vault
        self._texts = texts
        self._clock = clock

    async def send_due(self) -> int:
        """Text every deferred text whose moment has come; how many were handled."""
        now = self._clock()
        if self._texts.quiet is not None and self._texts.quiet.next_allowed(now) is not None:
            return 0
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT case_id, stage, caused_by, status, claimed_at, failures"
                        " FROM notifier.deliveries WHERE channel = 'sms' AND attempt = 1 AND not_before <= :now"
                        " AND (status = 'deferred' OR (status = 'sending'"
                        " AND coalesce(claimed_at, started_at, created_at) <= :lapsed)) ORDER BY not_before LIMIT :n"
                    ),
                    {"now": now, "lapsed": now - LEASE, "n": BATCH},
                )
            ).all()
        for row in rows:
            try:
                await self._send(row)
            except Exception as exc:  # one row's failure (the provider down for it) holds up no other row
                where = DeliveryRow(row.case_id, row.stage, "sms")
                await put_off(self._engine, where, row.failures, now, "deferred texts", exc)
        return len(rows)

    async def _send(self, row: Any) -> None:
        key = {"c": row.case_id, "s": row.stage}
        async with self._engine.begin() as tx:
            stream = await self._store.read_stream(tx, row.case_id)
            trigger = next((e for e in stream if e.event_id == row.caused_by), None)
            told = any(
                isinstance(e.data, NotificationSent | NotificationFailed) and e.data.stage == row.stage for e in stream
            )
            if trigger is None or told:
                await _close(tx, key, "sent" if told else "refused")
                return
            facts = stage_facts(trigger, stream)
            contact = None
            if facts.sealed_contact is not None:
                contact = await self._vault.unseal(tx, row.case_id, facts.sealed_contact)
            delivery = choose_delivery(facts.sealed_contact is not None, contact, facts.preferred_channel)
            if not isinstance(delivery, SendText) or await opted_out(tx, self._texts.digest(delivery.to)):
                # forgotten or no longer to be texted, or the number texted STOP while it waited
                reason = STOPPED if isinstance(delivery, SendText) else "no longer reachable by text"
                await _close(tx, key, "refused")
                failed = NotificationFailed(stage=row.stage, channel="sms", reason=reason)
                await self._store.append(tx, row.case_id, None, [failed], trigger.caused(ACTOR))
                NOTIFICATIONS.labels("sms", "failed").inc()
                return
            body = self._texts.body(facts)
            # A claim, of a due row or a lapsed one, is one replica's: claimed_at moves only if no one moved it.
            where = DeliveryRow(row.case_id, row.stage, "sms")
            claim = await take(tx, where, row.status, row.claimed_at, self._clock())
            if claim is None:
                return  # another replica claimed it
            await tx.execute(
                text(
                    "UPDATE notifier.deliveries SET body_digest = :b"
                    " WHERE case_id = :c AND stage = :s AND channel = 'sms' AND attempt = 1"
                ),
                {**key, "b": body_digest(body)},
            )
        outcome, status, sid = await self._texts.send(where, delivery.to, body, claim)
        async with self._engine.begin() as tx:
            if await finish(tx, row.case_id, row.stage, status, sid, self._clock()):
                await self._store.append(tx, row.case_id, None, [outcome], trigger.caused(ACTOR))
                NOTIFICATIONS.labels("sms", "sent" if status == "sent" else "failed").inc()
        log.info("deferred text handed over", stage=row.stage, outcome=status)


async def _close(tx: AsyncConnection, key: dict[str, Any], status: str) -> None:
    await tx.execute(
        text(
            "UPDATE notifier.deliveries SET status = :st WHERE case_id = :c AND stage = :s AND channel = 'sms'"
            " AND attempt = 1 AND status IN ('deferred', 'sending')"
        ),
        {**key, "st": status},
    )
