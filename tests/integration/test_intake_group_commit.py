"""Intake's group commit against real PostgreSQL: requests arriving together share one transaction, and
keep every promise a request made alone (idempotency, its own client as actor, a bad one failing alone)."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import grpc
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow import tracking
from civicflow.access import AccessControl, Gatekeeper, SendsApiKey
from civicflow.api_clients import PostgresClientDirectory, create_client
from civicflow.apikeys import CALLING_CLIENT, RateLimiter, Scope
from civicflow.eventstore import PostgresEventStore
from civicflow.infra import free_port
from civicflow.pii import ContactVault, ResidentContact
from civicflow.runtime import build_grpc_server
from civicflow.settings import KernelSettings
from civicflow.v1 import common_pb2, intake_pb2, intake_pb2_grpc
from services.intake.domain import ContactDetails, ReportedLocation, ServiceRequest
from services.intake.grpc_api import IntakeServicer
from services.intake.handlers import Accepted, IdempotencyKeyReused, Intake

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()


class VaultThatBreaksOn(ContactVault):
    """Seals like the real vault, but a contact with the given name makes the database refuse the transaction."""

    def __init__(self, poison_name: str) -> None:
        super().__init__(Fernet.generate_key())
        self._poison = poison_name

    async def seal(self, tx: AsyncConnection, case_id: UUID, contact: ResidentContact) -> str:
        if contact.name == self._poison:
            await tx.execute(text("SELECT 1 / 0"))
        return await super().seal(tx, case_id, contact)


def request(description: str = "a deep one", name: str | None = None) -> ServiceRequest:
    return ServiceRequest(
        service_code="POTHOLE",
        description=description,
        location=ReportedLocation(lat=41.88, long=-87.63),
        contact=ContactDetails(name=name, email="resident@example.org") if name else None,
    )


def intake(engine: AsyncEngine, vault: ContactVault | None = None) -> Intake:
    return Intake(engine, STORE, vault or ContactVault(Fernet.generate_key()), group_window_s=0.2, max_group=64)


async def as_client(client: str, intake: Intake, req: ServiceRequest, key: str | None = None) -> Accepted:
    CALLING_CLIENT.set(client)  # this task's own context, as in a gRPC call
    return await intake.submit(req, key)


async def writers(engine: AsyncEngine, table: str, case_ids: list[UUID]) -> set[str]:
    """The transactions that wrote the cases' rows (xmin is the inserting transaction)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT DISTINCT xmin::text FROM {table} WHERE case_id = ANY(:ids)"), {"ids": case_ids}
        )
        return {row[0] for row in rows}


async def test_concurrent_submissions_share_one_transaction_and_each_gets_its_own_number(engine: AsyncEngine) -> None:
    door = intake(engine)
    try:
        accepted = await asyncio.gather(
            *(as_client(f"portal-{n}", door, request(f"hole {n}", name=f"resident {n}")) for n in range(10))
        )
    finally:
        await door.close()

    ids = [a.case_id for a in accepted]
    assert len({a.tracking_number for a in accepted}) == 10 and not any(a.replayed for a in accepted)
    assert len(await writers(engine, "intake.requests", ids)) == 1
    assert await writers(engine, "events.case_events", ids) == await writers(engine, "intake.requests", ids)
    assert len(await writers(engine, "events.case_keys", ids)) == 1, "each case's sealed contact, same transaction"
    async with engine.connect() as conn:
        for n, a in enumerate(accepted):
            [submitted] = await STORE.read_stream(conn, a.case_id)
            assert submitted.metadata.actor == f"client:portal-{n}", "the actor is the caller's, not the flusher's"
            assert submitted.data.tracking_number == a.tracking_number  # type: ignore[union-attr]


async def test_one_key_twice_in_a_group_opens_one_case_and_a_reused_key_fails_only_its_caller(
    engine: AsyncEngine,
) -> None:
    known = f"group-known-{tracking.issue()}"
    door = intake(engine)
    try:
        first = await door.submit(request("already here"), known)
        same_new = f"group-new-{tracking.issue()}"
        results = await asyncio.gather(
            door.submit(request("twice"), same_new),
            door.submit(request("twice"), same_new),
            door.submit(request("already here"), known),
            door.submit(request("something else"), known),
            door.submit(request("bystander"), None),
            return_exceptions=True,
        )
    finally:
        await door.close()

    once, again, replay, reused, bystander = results
    assert isinstance(once, Accepted) and isinstance(again, Accepted)
    assert not once.replayed and again.replayed and again.case_id == once.case_id
    assert again.tracking_number == once.tracking_number
    assert isinstance(replay, Accepted) and replay.replayed and replay.case_id == first.case_id
    assert isinstance(reused, IdempotencyKeyReused)
    assert isinstance(bystander, Accepted) and not bystander.replayed
    assert len(await writers(engine, "intake.requests", [once.case_id, bystander.case_id])) == 1
    async with engine.connect() as conn:
        assert len(await STORE.read_stream(conn, once.case_id)) == 1


async def test_a_request_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_accepted(
    engine: AsyncEngine,
) -> None:
    door = intake(engine, VaultThatBreaksOn("poison"))
    try:
        results = await asyncio.gather(
            door.submit(request("fine 1", name="resident"), None),
            door.submit(request("breaks", name="poison"), None),
            door.submit(request("fine 2", name="resident"), None),
            return_exceptions=True,
        )
    finally:
        await door.close()

    fine = [r for r in results if isinstance(r, Accepted)]
    assert len(fine) == 2 and isinstance(results[1], Exception)
    async with engine.connect() as conn:
        for a in fine:
            assert [e.type for e in await STORE.read_stream(conn, a.case_id)] == ["CaseSubmitted"]
        stored = await conn.scalar(
            text("SELECT count(*) FROM intake.requests WHERE case_id = ANY(:ids)"), {"ids": [a.case_id for a in fine]}
        )
    assert stored == 2


async def test_a_request_reaching_an_intake_that_is_closing_is_told_to_try_again(engine: AsyncEngine) -> None:
    door = intake(engine)
    await door.close()
    servicer = IntakeServicer(door, engine, STORE)
    key = (await create_client(engine, f"closing-{uuid4().hex[:8]}", frozenset({Scope.SUBMIT}))).reveal()
    port = free_port()
    gatekeeper = Gatekeeper(PostgresClientDirectory(engine), RateLimiter(100, 100), cache_seconds=0)
    server = await build_grpc_server(
        port,
        [("civicflow.v1.IntakeService", lambda s: intake_pb2_grpc.add_IntakeServiceServicer_to_server(servicer, s))],
        "closing-test",
        KernelSettings(),
        AccessControl(gatekeeper),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=[SendsApiKey(key)]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await intake_pb2_grpc.IntakeServiceStub(channel).SubmitRequest(
                    intake_pb2.SubmitRequestRequest(
                        service_code="POTHOLE",
                        description="late",
                        location=common_pb2.Location(address="1200 W Madison St"),
                    ),
                    timeout=10,
                )
    finally:
        await server.stop(None)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "same idempotency key" in (refused.value.details() or "")
