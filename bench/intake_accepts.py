"""Accepted requests a second through an in-process intake gRPC server, with many callers at once.

    .venv/bin/python -m bench.intake_accepts [--requests N] [--callers C] [--window-ms W] [--max-group G]

Starts embedded PostgreSQL (or uses CIVICFLOW_DATABASE_URL) with a scratch database, serves intake's
servicer on a free port behind the real access control, and has C callers submit N requests in all.
It measures; it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from uuid import uuid4

import grpc
from cryptography.fernet import Fernet

from civicflow.access import AccessControl, Gatekeeper, SendsApiKey
from civicflow.api_clients import PostgresClientDirectory, create_client
from civicflow.apikeys import RateLimiter, Scope
from civicflow.db import make_engine
from civicflow.eventstore import PostgresEventStore
from civicflow.infra import Infrastructure, free_port, provide
from civicflow.pii import ContactVault
from civicflow.runtime import build_grpc_server
from civicflow.sandbox import scratch_database
from civicflow.settings import KernelSettings
from civicflow.v1 import common_pb2, intake_pb2, intake_pb2_grpc
from services.intake.grpc_api import IntakeServicer
from services.intake.handlers import Intake

STATE_DIR = Path(__file__).resolve().parents[1] / ".civicflow" / "intake-accepts"


def pothole(n: int) -> intake_pb2.SubmitRequestRequest:
    return intake_pb2.SubmitRequestRequest(
        service_code="POTHOLE",
        description=f"pothole number {n} in the eastbound lane",
        location=common_pb2.Location(address="1200 W Madison St"),
        contact=intake_pb2.ResidentContact(email=f"resident{n}@example.org"),
        channel="phone",
    )


async def measure(infra: Infrastructure, requests: int, callers: int, window_ms: float, max_group: int) -> None:
    async with scratch_database(infra, "accepts") as url:
        engine = make_engine(url, pool_size=20)
        store = PostgresEventStore()
        intake = Intake(
            engine, store, ContactVault(Fernet.generate_key()), group_window_s=window_ms / 1000, max_group=max_group
        )
        servicer = IntakeServicer(intake, engine, store)
        key = (await create_client(engine, f"bench-{uuid4().hex[:8]}", frozenset({Scope.SUBMIT}))).reveal()
        port = free_port()
        gatekeeper = Gatekeeper(PostgresClientDirectory(engine), RateLimiter(1e9, 10**9), cache_seconds=600)

        def add(server: grpc.aio.Server) -> None:
            intake_pb2_grpc.add_IntakeServiceServicer_to_server(servicer, server)

        server = await build_grpc_server(
            port,
            [("civicflow.v1.IntakeService", add)],
            "intake-accepts",
            KernelSettings(),
            AccessControl(gatekeeper),
        )
        await server.start()
        numbers = iter(range(requests))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=[SendsApiKey(key)]) as channel:
                stub = intake_pb2_grpc.IntakeServiceStub(channel)
                await stub.SubmitRequest(pothole(-1), timeout=30)  # warm: key lookup, pool, prepared statements

                async def caller() -> None:
                    for n in numbers:
                        await stub.SubmitRequest(pothole(n), timeout=60)

                started = time.perf_counter()
                await asyncio.gather(*(caller() for _ in range(callers)))
                elapsed = time.perf_counter() - started
        finally:
            await server.stop(None)
            await intake.close()
            await engine.dispose()
    print(
        f"{requests} requests, {callers} callers, window {window_ms:g} ms, groups of at most {max_group}:"
        f" {elapsed:.2f} s, {requests / elapsed:.0f} accepted/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--window-ms", type=float, default=2.0, help="CIVICFLOW_INTAKE_GROUP_COMMIT_MS")
    parser.add_argument("--max-group", type=int, default=64, help="1: every request in a transaction of its own")
    args = parser.parse_args()
    os.environ.setdefault("CIVICFLOW_USE_TESTCONTAINERS", "no")
    os.environ.setdefault("CIVICFLOW_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # intake alone needs no broker
    with provide(STATE_DIR) as infra:
        asyncio.run(measure(infra, args.requests, args.callers, args.window_ms, args.max_group))


if __name__ == "__main__":
    main()
