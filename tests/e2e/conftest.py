"""The whole system as separate processes on the test infrastructure, with its own database and topics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Row, text

from civicflow.access import SendsApiKey
from civicflow.db import make_engine
from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.sandbox import isolated_system, scratch_database
from civicflow.v1 import intake_pb2_grpc, query_pb2, query_pb2_grpc, routing_pb2_grpc


@contextlib.asynccontextmanager
async def running_system(infrastructure: Infrastructure, state_dir: Path) -> AsyncIterator[SystemProcesses]:
    """The whole system as processes on a database and topics of its own."""
    async with scratch_database(infrastructure, "e2e") as url:
        own = Infrastructure(url, infrastructure.kafka_bootstrap_servers, infrastructure.kind)
        extra_env = {
            "CIVICFLOW_SAMPLE_DEPT_STEP_SECONDS": "0.5",
            "CIVICFLOW_HANDLER_RETRY_BASE_SECONDS": "0.05",
            "CIVICFLOW_WORKORDER_RETRY_FIRST_SECONDS": "0.5",
            "CIVICFLOW_WORKORDER_RETRY_MAX_SECONDS": "2",
            # The Building Department turns building without a permit down, to show a case being rerouted (Code
            # Enforcement works from its inbox: tests/e2e/test_email_department.py).
            "CIVICFLOW_SAMPLE_DEPT_TURNS_DOWN": "building/BUILDING_NO_PERMIT",
            "CIVICFLOW_RULES_DIR": str(state_dir / "rules"),
            # polling many cases in a tight loop is more than a real client's rate; tests/integration covers the limit
            "CIVICFLOW_API_KEY_RATE_PER_SECOND": "10000",
            "CIVICFLOW_API_KEY_BURST": "10000",
            # texts go at any hour, so no test depends on the clock; tests/integration covers texting hours
            "CIVICFLOW_TEXTING_HOURS": "",
            # a text's delivery report lost on the way (the provider posts it once) is looked up after 3 s, not 2 min
            "CIVICFLOW_TEXT_STATUS_CHECK_SECONDS": "3",
        }
        async with isolated_system(own, state_dir, "e2e", extra_env) as system:
            yield system


@pytest.fixture
async def clients(system: SystemProcesses) -> AsyncIterator[Clients]:
    """gRPC clients of the module's `system`."""
    clients = Clients(system)
    yield clients
    await clients.close()


class Clients:
    """Stubs of the system's services; every call carries the system's API key (every scope)."""

    def __init__(self, system: SystemProcesses) -> None:
        keyed = [SendsApiKey(system.api_key)]
        self._intake = grpc.aio.insecure_channel(f"127.0.0.1:{system.ports.intake}", interceptors=keyed)
        self._query = grpc.aio.insecure_channel(f"127.0.0.1:{system.ports.query}", interceptors=keyed)
        self._router = grpc.aio.insecure_channel(f"127.0.0.1:{system.ports.router}", interceptors=keyed)
        self.intake = intake_pb2_grpc.IntakeServiceStub(self._intake)
        self.query = query_pb2_grpc.CaseQueryServiceStub(self._query)
        self.routing = routing_pb2_grpc.RoutingServiceStub(self._router)

    async def close(self) -> None:
        for channel in (self._intake, self._query, self._router):
            await channel.close()


async def view_reached(clients: Clients, number: str, stage: str) -> query_pb2.CaseView | None:
    """The case's public view once its timeline holds `stage`, else None.

    Waits on the timeline, not the status: a status like "routed" lasts only until the department's
    system answers, and the read model may fold several events at once, so a poll can miss it."""
    try:
        view = await clients.query.GetCase(query_pb2.GetCaseRequest(tracking_number=number))
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return view if any(e.stage == stage for e in view.timeline) else None


async def stored_rows(system: SystemProcesses, sql: str, **params: object) -> list[Row[Any]]:
    """The rows a query finds in the system's database (the event store, a service's tables)."""
    engine = make_engine(system.infra.database_url)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(text(sql), params))
    finally:
        await engine.dispose()
