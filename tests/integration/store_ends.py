"""Where the event store ends in its readers' (commit) order, for tests that wait for a reader to get there."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from civicflow.eventstore import START, Checkpoint


async def end_of_store(conn: AsyncConnection) -> Checkpoint:
    """The last event in (transaction id, position) order; START for an empty store."""
    row = (
        await conn.execute(
            text(
                "SELECT CAST(xid AS text) AS xid_text, position FROM events.case_events"
                " ORDER BY xid DESC, position DESC LIMIT 1"
            )
        )
    ).first()
    return START if row is None else Checkpoint(int(row.xid_text), row.position)
