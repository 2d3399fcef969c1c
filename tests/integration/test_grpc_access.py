"""The intake gRPC server with keys from PostgreSQL: who is refused and how, and who an accepted case names."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import grpc
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.access import AccessControl, Gatekeeper, SendsApiKey
from civicflow.api_clients import (
    ClientRefused,
    PostgresClientDirectory,
    create_client,
    list_clients,
    local_key,
    revoke_client,
)
from civicflow.apikeys import ALL_SCOPES, ApiKey, RateLimiter, Scope
from civicflow.eventstore import PostgresEventStore
from civicflow.infra import free_port
from civicflow.pii import ContactVault
from civicflow.runtime import build_grpc_server
from civicflow.settings import KernelSettings
from civicflow.v1 import common_pb2, intake_pb2, intake_pb2_grpc
from services.intake.grpc_api import IntakeServicer
from services.intake.handlers import Intake

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()


def unique(name: str) -> str:
    return f"{name}-{uuid4().hex[:8]}"


class StoppedClock:
    """Time that does not pass: a bucket never refills during the test."""

    def __call__(self) -> float:
        return 0.0


@contextlib.asynccontextmanager
async def intake_server(engine: AsyncEngine, limiter: RateLimiter) -> AsyncIterator[str]:
    """Intake's servicer on a server that looks keys up in the database (no caching, so a revocation shows at once)."""
    servicer = IntakeServicer(Intake(engine, STORE, ContactVault(Fernet.generate_key())), engine, STORE)
    port = free_port()
    gatekeeper = Gatekeeper(PostgresClientDirectory(engine), limiter, cache_seconds=0)
    server = await build_grpc_server(
        port,
        [("civicflow.v1.IntakeService", lambda s: intake_pb2_grpc.add_IntakeServiceServicer_to_server(servicer, s))],
        "access-test",
        KernelSettings(),
        AccessControl(gatekeeper),
    )
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def pothole() -> intake_pb2.SubmitRequestRequest:
    return intake_pb2.SubmitRequestRequest(
        service_code="POTHOLE",
        description="Deep pothole in the eastbound lane",
        location=common_pb2.Location(address="1200 W Madison St"),
        channel="phone",
    )


async def submit(address: str, key: str | None) -> intake_pb2.SubmitRequestResponse:
    interceptors = [SendsApiKey(key)] if key else []
    async with grpc.aio.insecure_channel(address, interceptors=interceptors) as channel:
        reply: intake_pb2.SubmitRequestResponse = await intake_pb2_grpc.IntakeServiceStub(channel).SubmitRequest(
            pothole(), timeout=10
        )
        return reply


async def refused(address: str, key: str | None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await submit(address, key)
    return error.value


async def test_only_a_live_key_with_the_scope_submits_and_the_case_names_its_client(engine: AsyncEngine) -> None:
    callcentre, reader, former = unique("callcentre"), unique("reader"), unique("former")
    good = (await create_client(engine, callcentre, frozenset({Scope.SUBMIT, Scope.TRACK}))).reveal()
    track_only = (await create_client(engine, reader, frozenset({Scope.TRACK}))).reveal()
    revoked = (await create_client(engine, former, ALL_SCOPES)).reveal()
    await revoke_client(engine, former)

    async with intake_server(engine, RateLimiter(100, 100)) as address:
        no_key = await refused(address, None)
        assert no_key.code() == grpc.StatusCode.UNAUTHENTICATED
        assert no_key.details() == (
            "no API key: send `authorization: Bearer <key>`; create one with `civicflow keys create`"
        )
        wrong = await refused(address, ApiKey.issue().reveal())
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED and "not recognised" in (wrong.details() or "")
        gone = await refused(address, revoked)
        assert gone.code() == grpc.StatusCode.UNAUTHENTICATED and f"'{former}' was revoked" in (gone.details() or "")
        lacking = await refused(address, track_only)
        assert lacking.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"key '{reader}' lacks scope 'submit'" in (lacking.details() or "")

        reply = await submit(address, good)

    async with engine.connect() as conn:
        [submitted] = await STORE.read_stream(conn, UUID(reply.case_id))
    assert submitted.type == "CaseSubmitted"
    assert submitted.metadata.actor == f"client:{callcentre}"
    [listed] = [c for c in await list_clients(engine) if c.name == callcentre]
    assert listed.last_used_at is not None and listed.revoked_at is None


async def test_a_key_over_its_rate_is_told_when_to_retry(engine: AsyncEngine) -> None:
    key = (await create_client(engine, unique("portal"), frozenset({Scope.SUBMIT}))).reveal()
    async with intake_server(engine, RateLimiter(per_second=2, burst=1, clock=StoppedClock())) as address:
        await submit(address, key)
        limited = await refused(address, key)
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in 0.50 s" in (limited.details() or "")
    assert ("retry-after", "0.500") in list(limited.trailing_metadata() or ())


async def test_keys_are_revoked_by_name_and_one_name_has_one_live_key(engine: AsyncEngine) -> None:
    name = unique("web-portal")
    first = await create_client(engine, name, frozenset({Scope.SUBMIT}))
    with pytest.raises(ClientRefused, match="already has a live key"):
        await create_client(engine, name, frozenset({Scope.SUBMIT}))
    with pytest.raises(ClientRefused, match="not allowed"):
        await create_client(engine, "Web Portal", frozenset({Scope.SUBMIT}))
    assert (await revoke_client(engine, name)).key_id == first.key_id
    second = await create_client(engine, name, frozenset({Scope.SUBMIT}))
    assert (await revoke_client(engine, second.key_id)).name == name
    with pytest.raises(ClientRefused, match="no live key"):
        await revoke_client(engine, name)
    stored = [c for c in await list_clients(engine) if c.name == name]
    assert len(stored) == 2 and all(c.revoked_at for c in stored)
    assert all(first.secret not in repr(c) for c in stored)


async def test_the_local_cli_key_is_kept_while_the_database_knows_it(engine: AsyncEngine) -> None:
    name = unique("local-cli")
    made = await local_key(engine, None, name)
    assert await local_key(engine, made, name) == made
    again = await local_key(engine, "cf_000000000000_" + "x" * 43, name)  # unknown here: a fresh database
    assert again != made
    live = [c for c in await list_clients(engine) if c.name == name and c.revoked_at is None]
    assert [c.key_id for c in live] == [ApiKey.parse(again).key_id]
    assert live[0].scopes == ALL_SCOPES


async def test_a_local_cli_key_made_before_a_scope_existed_is_made_again_with_every_scope(
    engine: AsyncEngine,
) -> None:
    name = unique("local-cli")
    older = (await create_client(engine, name, ALL_SCOPES - {Scope.PREFERENCES})).reveal()

    now = await local_key(engine, older, name)

    assert now != older
    live = [c for c in await list_clients(engine) if c.name == name and c.revoked_at is None]
    assert [c.key_id for c in live] == [ApiKey.parse(now).key_id] and live[0].scopes == ALL_SCOPES


def test_keys_from_the_command_line_show_the_key_once_and_never_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from civicflow.cli import app

    monkeypatch.setenv("CIVICFLOW_DATABASE_URL", database_url)
    runner = CliRunner()
    name = unique("callcentre")
    made = runner.invoke(app, ["keys", "create", name, "--scope", "submit", "--scope", "track"])
    assert made.exit_code == 0, made.output
    key = next(line for line in made.output.splitlines() if line.startswith("cf_"))
    listed = runner.invoke(app, ["keys", "list"])
    line = next(line for line in listed.output.splitlines() if line.startswith(name))
    assert ApiKey.parse(key).key_id in line and "submit,track" in line and ApiKey.parse(key).secret not in listed.output
    unknown = runner.invoke(app, ["keys", "create", unique("x"), "--scope", "admin"])
    assert unknown.exit_code != 0 and "no scope 'admin'" in unknown.output
    revoked = runner.invoke(app, ["keys", "revoke", name])
    assert revoked.exit_code == 0 and "servers refuse it within 5 s" in revoked.output
