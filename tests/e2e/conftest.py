"""The whole system as separate processes on the test infrastructure, with its own database and topics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import grpc
from cryptography.fernet import Fernet

from civicflow.infra import Infrastructure
from civicflow.kafka import ensure_topics
from civicflow.launcher import Ports, SystemProcesses
from civicflow.settings import KernelSettings
from civicflow.v1 import intake_pb2_grpc, query_pb2_grpc, routing_pb2_grpc
from tests.conftest import fresh_database


@contextlib.asynccontextmanager
async def running_system(infrastructure: Infrastructure, state_dir: Path) -> AsyncIterator[SystemProcesses]:
    async with fresh_database(infrastructure) as url:
        suffix = uuid4().hex[:10]
        topics = {
            "CIVICFLOW_CASE_EVENTS_TOPIC": f"civicflow.case-events.e2e.{suffix}",
            "CIVICFLOW_DEAD_LETTER_TOPIC": f"civicflow.case-events.e2e.{suffix}.dlq",
        }
        await ensure_topics(
            KernelSettings(
                kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
                case_events_topic=topics["CIVICFLOW_CASE_EVENTS_TOPIC"],
                dead_letter_topic=topics["CIVICFLOW_DEAD_LETTER_TOPIC"],
            )
        )
        system = SystemProcesses(
            Infrastructure(url, infrastructure.kafka_bootstrap_servers, infrastructure.kind),
            state_dir,
            Ports.free(),
            extra_env={
                **topics,
                "CIVICFLOW_PII_MASTER_KEY": Fernet.generate_key().decode(),
                "CIVICFLOW_SAMPLE_DEPT_STEP_SECONDS": "0.5",
                "CIVICFLOW_HANDLER_RETRY_BASE_SECONDS": "0.05",
                # Code Enforcement turns graffiti down, to show a case being rerouted.
                "CIVICFLOW_SAMPLE_DEPT_TURNS_DOWN": "code/GRAFFITI",
            },
        )
        try:
            await asyncio.to_thread(system.start_all)
            yield system
        finally:
            await asyncio.to_thread(system.stop_all)


class Clients:
    def __init__(self, system: SystemProcesses) -> None:
        self._intake = grpc.aio.insecure_channel(f"127.0.0.1:{system.ports.intake}")
        self._query = grpc.aio.insecure_channel(f"127.0.0.1:{system.ports.query}")
        self._router = grpc.aio.insecure_channel(f"127.0.0.1:{system.ports.router}")
        self.intake = intake_pb2_grpc.IntakeServiceStub(self._intake)
        self.query = query_pb2_grpc.CaseQueryServiceStub(self._query)
        self.routing = routing_pb2_grpc.RoutingServiceStub(self._router)

    async def close(self) -> None:
        for channel in (self._intake, self._query, self._router):
            await channel.close()
