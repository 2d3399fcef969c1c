"""The notifier against real PostgreSQL and the real SMTP sink: an address that cannot be delivered to is
recorded as failed, once, without the address; a mail server that is down is retried."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiosmtplib import SMTPConnectError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import (
    CaseEvent,
    CaseResolved,
    CaseSubmitted,
    EventMetadata,
    Location,
    NotificationFailed,
    NotificationSent,
    RecordedEvent,
    ResolutionDisputed,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.pii import ContactVault, ResidentContact, load_master_key
from civicflow.unit_of_work import UnitOfWork, in_order
from samples.smtp_sink.sink import read_messages, start_sink
from services.notifier.domain import MessageTemplates
from services.notifier.mail import SmtpSender
from services.notifier.main import NotificationHandler

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()


@pytest.fixture
def vault(tmp_path: Path) -> ContactVault:
    return ContactVault(load_master_key("", tmp_path))


async def submitted_case(engine: AsyncEngine, vault: ContactVault, address: str) -> RecordedEvent:
    case_id = uuid7()
    async with engine.begin() as tx:
        sealed = await vault.seal(tx, case_id, ResidentContact(email=address))
        event = CaseSubmitted(
            tracking_number="T" + case_id.hex[-6:],
            service_code="POTHOLE",
            description="a hole",
            location=Location(lat=41.88, long=-87.63),
            submitted_at=datetime.now(UTC),
            sealed_contact=sealed,
            preferred_channel="email",
            has_email=True,
        )
        [recorded] = await STORE.append(
            tx, case_id, 0, [event], EventMetadata(correlation_id=uuid7(), actor="test", channel="web")
        )
    return recorded


def handler(engine: AsyncEngine, vault: ContactVault, port: int) -> Callable[[RecordedEvent], Awaitable[int]]:
    """The notifier's policy as its consumer runs it, each event in a unit of work of its own."""
    policy = NotificationHandler(
        engine,
        vault,
        SmtpSender("127.0.0.1", port, 5),
        MessageTemplates(ZoneInfo("UTC")),
        "311 <no-reply@civicflow.local>",
    )
    unit = UnitOfWork(engine, "notifier", STORE)
    return lambda event: unit.run([event], in_order({event.type: policy}))


async def delivery_status(engine: AsyncEngine, event: RecordedEvent) -> str | None:
    async with engine.connect() as conn:
        status: str | None = await conn.scalar(
            text("SELECT status FROM notifier.deliveries WHERE case_id = :c"), {"c": event.case_id}
        )
        return status


async def test_a_non_ascii_address_is_recorded_as_failed_without_the_address(
    engine: AsyncEngine, vault: ContactVault, tmp_path: Path
) -> None:
    sink = await start_sink(tmp_path / "mail", port=0)
    notify = handler(engine, vault, sink.sockets[0].getsockname()[1])
    case = await submitted_case(engine, vault, "jöe.bloggs@example.org")
    try:
        await notify(case)
        await notify(case)  # a redelivery: decided once
    finally:
        sink.close()
        await sink.wait_closed()

    async with engine.connect() as conn:
        history = await STORE.read_stream(conn, case.case_id)
    failures = [e.data for e in history if isinstance(e.data, NotificationFailed)]
    assert failures == [
        NotificationFailed(
            stage="submitted", channel="email", reason="mail server cannot take a non-ASCII address (no SMTPUTF8)"
        )
    ]
    assert "jöe" not in history[-1].model_dump_json()
    assert await delivery_status(engine, case) == "refused"
    assert read_messages(tmp_path / "mail") == []


async def test_a_mail_server_that_is_down_is_retried_not_recorded_as_failed(
    engine: AsyncEngine, vault: ContactVault, tmp_path: Path
) -> None:
    sink = await start_sink(tmp_path / "mail", port=0)
    port = sink.sockets[0].getsockname()[1]
    sink.close()
    await sink.wait_closed()
    case = await submitted_case(engine, vault, "joe.bloggs@example.org")

    with pytest.raises(SMTPConnectError):  # the consumer retries it
        await handler(engine, vault, port)(case)

    async with engine.connect() as conn:
        assert [e.type for e in await STORE.read_stream(conn, case.case_id)] == ["CaseSubmitted"]
    assert await delivery_status(engine, case) == "sending", "the next attempt sends it"


async def appended(engine: AsyncEngine, case: RecordedEvent, event: CaseEvent) -> RecordedEvent:
    async with engine.begin() as tx:
        [recorded] = await STORE.append(
            tx, case.case_id, None, [event], EventMetadata(correlation_id=uuid7(), actor="test", channel="system")
        )
    return recorded


async def test_a_case_resolved_again_after_a_dispute_is_told_again_with_its_own_message_id(
    engine: AsyncEngine, vault: ContactVault, tmp_path: Path
) -> None:
    sink = await start_sink(tmp_path / "mail", port=0)
    notify = handler(engine, vault, sink.sockets[0].getsockname()[1])
    case = await submitted_case(engine, vault, "resident@example.org")
    try:
        first = await appended(engine, case, CaseResolved(resolution="filled", resolved_at=datetime.now(UTC)))
        await notify(first)
        await appended(engine, case, ResolutionDisputed(call_sid="CA0001"))
        second = await appended(engine, case, CaseResolved(resolution="filled again", resolved_at=datetime.now(UTC)))
        await notify(second)
        await notify(second)  # a redelivery: still told once
        await notify(first)  # a late redelivery of the first: nothing new
    finally:
        sink.close()
        await sink.wait_closed()

    async with engine.connect() as conn:
        history = await STORE.read_stream(conn, case.case_id)
    told = [(e.data.stage, e.data.message_id) for e in history if isinstance(e.data, NotificationSent)]
    assert told == [
        ("resolved", f"<{case.case_id}.resolved@civicflow.local>"),
        ("resolved.2", f"<{case.case_id}.resolved.2@civicflow.local>"),
    ]
    assert len(read_messages(tmp_path / "mail")) == 2
