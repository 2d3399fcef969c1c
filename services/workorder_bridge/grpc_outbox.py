"""The grpc connector's feeds: per department, the work orders and cancellations its own system pulls through
WorkOrderSync, in the order they were written, kept until the department acknowledges them.

The connector (kinds/grpc.py) writes; the servicer (grpc_api.py) reads, in whichever bridge replica the
department's client reached, so everything lives in PostgreSQL. Sequences are given under the feed row's lock
and so in commit order: a client that acknowledges sequence N can never have skipped a message numbered below N
that committed later.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.db import as_json

MessageKind = Literal["work_order", "cancellation"]


@dataclass(frozen=True)
class FeedMessage:
    sequence: int
    message_id: uuid.UUID
    kind: MessageKind
    external_id: str
    body: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Feed:
    latest: int
    acknowledged: int
    last_seen_at: datetime | None


class BeyondTheFeed(ValueError):
    """An acknowledgement of a sequence the feed has not reached: the client is confused or hostile."""


def new_external_id() -> str:
    """Our name for a work order in a department's system that keeps none of its own: short enough to read
    over the phone, 64 random bits so two never meet."""
    return "WO-" + uuid.uuid4().hex[:16].upper()


_ENSURE_FEED = text(
    "INSERT INTO workorder_bridge.grpc_feeds (department_id) VALUES (:d) ON CONFLICT (department_id) DO NOTHING"
)


class GrpcOutbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(
        self, department_id: str, kind: MessageKind, idempotency_key: str, external_id: str, body: dict[str, Any]
    ) -> FeedMessage:
        """Writes the message unless one of its kind has this key already (or, for a cancellation, the work order
        was cancelled already): either way, the message that stands."""
        async with self._engine.begin() as tx:
            await tx.execute(_ENSURE_FEED, {"d": department_id})
            latest = (
                await tx.execute(
                    text("SELECT latest FROM workorder_bridge.grpc_feeds WHERE department_id = :d FOR UPDATE"),
                    {"d": department_id},
                )
            ).scalar_one()
            # under the feed's lock: whoever wrote the same message before us has committed
            existing = await self._existing(tx, department_id, kind, idempotency_key, external_id)
            if existing is not None:
                return existing
            row = (
                await tx.execute(
                    text(
                        "INSERT INTO workorder_bridge.grpc_outbox"
                        " (department_id, sequence, message_id, kind, idempotency_key, external_id, body)"
                        f" VALUES (:d, :s, :m, :k, :i, :x, CAST(:b AS jsonb)) RETURNING {_COLUMNS}"
                    ),
                    {
                        "d": department_id,
                        "s": latest + 1,
                        "m": uuid.uuid4(),
                        "k": kind,
                        "i": idempotency_key,
                        "x": external_id,
                        "b": json.dumps(body, separators=(",", ":")),
                    },
                )
            ).one()
            await tx.execute(
                text("UPDATE workorder_bridge.grpc_feeds SET latest = :s WHERE department_id = :d"),
                {"s": latest + 1, "d": department_id},
            )
            return _message(row)

    async def _existing(
        self, tx: AsyncConnection, department_id: str, kind: MessageKind, idempotency_key: str, external_id: str
    ) -> FeedMessage | None:
        by_external_id = " OR external_id = :x" if kind == "cancellation" else ""
        row = (
            await tx.execute(
                text(
                    f"SELECT {_COLUMNS} FROM workorder_bridge.grpc_outbox WHERE department_id = :d AND kind = :k"
                    f" AND (idempotency_key = :i{by_external_id}) ORDER BY sequence LIMIT 1"
                ),
                {"d": department_id, "k": kind, "i": idempotency_key, "x": external_id},
            )
        ).first()
        return None if row is None else _message(row)

    async def work_order_by_key(self, department_id: str, idempotency_key: str) -> FeedMessage | None:
        """The work order message our key wrote on the department's feed, if any."""
        async with self._engine.connect() as conn:
            return await self._existing(conn, department_id, "work_order", idempotency_key, "")

    async def messages_after(self, department_id: str, sequence: int, limit: int = 100) -> list[FeedMessage]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    f"SELECT {_COLUMNS} FROM workorder_bridge.grpc_outbox"
                    " WHERE department_id = :d AND sequence > :s ORDER BY sequence LIMIT :n"
                ),
                {"d": department_id, "s": sequence, "n": limit},
            )
            return [_message(row) for row in rows]

    async def feed(self, department_id: str) -> Feed:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT latest, acknowledged, last_seen_at FROM workorder_bridge.grpc_feeds"
                        " WHERE department_id = :d"
                    ),
                    {"d": department_id},
                )
            ).first()
        return Feed(0, 0, None) if row is None else Feed(row.latest, row.acknowledged, row.last_seen_at)

    async def acknowledge(self, department_id: str, sequence: int, at: datetime) -> Feed:
        """Everything up to `sequence` stored by the department; an acknowledgement never moves back."""
        async with self._engine.begin() as tx:
            await tx.execute(_ENSURE_FEED, {"d": department_id})
            row = (
                await tx.execute(
                    text(
                        "UPDATE workorder_bridge.grpc_feeds"
                        " SET acknowledged = greatest(acknowledged, :s), last_seen_at = :at"
                        " WHERE department_id = :d AND :s <= latest RETURNING latest, acknowledged, last_seen_at"
                    ),
                    {"d": department_id, "s": sequence, "at": at},
                )
            ).first()
            if row is None:
                latest = (
                    await tx.execute(
                        text("SELECT latest FROM workorder_bridge.grpc_feeds WHERE department_id = :d"),
                        {"d": department_id},
                    )
                ).scalar_one()
                raise BeyondTheFeed(
                    f"sequence {sequence} was never sent: the latest message of the feed is {latest}; acknowledge"
                    " the sequence of a message you received"
                )
        return Feed(row.latest, row.acknowledged, row.last_seen_at)

    async def seen(self, department_id: str, at: datetime) -> None:
        """The department's client is there (it pulled, acknowledged or reported)."""
        async with self._engine.begin() as tx:
            await tx.execute(
                text(
                    "INSERT INTO workorder_bridge.grpc_feeds (department_id, last_seen_at) VALUES (:d, :at)"
                    " ON CONFLICT (department_id) DO UPDATE SET last_seen_at = greatest("
                    "workorder_bridge.grpc_feeds.last_seen_at, excluded.last_seen_at)"
                ),
                {"d": department_id, "at": at},
            )

    async def sent_work_order(self, department_id: str, external_id: str) -> bool:
        """Whether this feed ever carried the work order."""
        async with self._engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT 1 FROM workorder_bridge.grpc_outbox"
                    " WHERE department_id = :d AND kind = 'work_order' AND external_id = :x"
                ),
                {"d": department_id, "x": external_id},
            )
            return found.first() is not None


_COLUMNS = "sequence, message_id, kind, external_id, body, created_at"


def _message(row: Any) -> FeedMessage:
    return FeedMessage(row.sequence, row.message_id, row.kind, row.external_id, as_json(row.body), row.created_at)
