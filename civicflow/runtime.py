"""How a service process runs: relay, consumer, gRPC server with health and reflection, clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from faststream.kafka import KafkaBroker
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.access import AccessControl, Gatekeeper, NoClients
from civicflow.api_clients import PostgresClientDirectory
from civicflow.apikeys import RateLimiter
from civicflow.consumer import CaseEventConsumer
from civicflow.grpc_guard import SERVER_OPTIONS, RequestGuard
from civicflow.grpc_tls import server_credentials
from civicflow.metrics import GrpcMetrics, serve_metrics
from civicflow.relay import Relay
from civicflow.settings import KernelSettings

log = structlog.get_logger(__name__)

AddServicer = Callable[[grpc.aio.Server], None]
Task = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def periodically(every: float, job: Callable[[], Coroutine[Any, Any, object]], what: str) -> Task:
    """A task that runs `job` every `every` seconds until stopped; a failed run is logged and the next
    one comes on time (the database may be briefly away)."""

    async def task(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await job()
            except Exception:
                log.exception(f"{what} failed; trying again next time")
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                pass

    return task


@dataclass
class ServiceProcess:
    """What one service brings to the shared process shape; built by the service's bootstrap."""

    name: str
    settings: KernelSettings
    engine: AsyncEngine
    grpc_port: int
    consumer: CaseEventConsumer | None = None
    servicers: list[tuple[str, AddServicer]] = field(default_factory=list)  # (full service name, adder)
    tasks: list[Task] = field(default_factory=list)


async def build_grpc_server(
    port: int,
    servicers: list[tuple[str, AddServicer]],
    service: str,
    settings: KernelSettings | None = None,
    access: AccessControl | None = None,
) -> grpc.aio.Server:
    """A gRPC server with the given services plus health checking and reflection, bound to the port on
    the settings' host (TLS when they name a certificate); its calls counted and timed under the
    service's name, and each checked by `access` (without one, no key is known: only health answers)."""
    settings = settings or KernelSettings()
    if access is None:
        access = AccessControl(Gatekeeper(NoClients(), RateLimiter(settings.api_key_rate_per_second, 1)))
    # metrics outermost, so they count every status; the guard innermost, so a refused call never reaches it
    server = grpc.aio.server(interceptors=[GrpcMetrics(service), access, RequestGuard()], options=SERVER_OPTIONS)
    for _, add in servicers:
        add(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [name for name, _ in servicers]
    for name in [*names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{settings.grpc_bind_host}:{port}"
    credentials = server_credentials(settings)
    try:
        bound = (
            server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
        )
    except RuntimeError:  # grpcio's "Failed to bind" (a port in use, without SO_REUSEPORT)
        bound = 0
    if bound == 0:
        await server.stop(None)
        raise OSError(f"gRPC port {port} is taken; set another with the service's *_GRPC_PORT setting")
    return server


def access_control(settings: KernelSettings, engine: AsyncEngine) -> AccessControl:
    """Keys looked up in the process's database; reflection open only in development."""
    limiter = RateLimiter(settings.api_key_rate_per_second, settings.api_key_burst)
    return AccessControl(
        Gatekeeper(
            PostgresClientDirectory(engine),
            limiter,
            cache_seconds=settings.api_key_cache_seconds,
            open_reflection=settings.environment == "development",
        )
    )


async def serve(process: ServiceProcess) -> None:
    """Run until SIGTERM/SIGINT, then stop taking work and shut down in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    relay = Relay(process.engine, process.settings)
    background = [asyncio.create_task(relay.run(stop), name="relay")]
    background += [asyncio.create_task(task(stop)) for task in process.tasks]

    settings = process.settings
    broker: KafkaBroker | None = None
    server: grpc.aio.Server | None = None
    stop_metrics: Callable[[], None] | None = None
    try:  # whatever fails to start, what did start is stopped in order below
        if process.consumer is not None:
            broker = KafkaBroker(
                settings.kafka_bootstrap_servers,
                client_id=f"civicflow-{process.name}",
                log_level=logging.DEBUG,  # a line per message is noise at INFO; our handlers log what matters
            )
            process.consumer.register(broker)
            await broker.start()
        if settings.metrics_port:
            stop_metrics = serve_metrics(settings.metrics_host, settings.metrics_port)
        server = await build_grpc_server(
            process.grpc_port, process.servicers, process.name, settings, access_control(settings, process.engine)
        )
        await server.start()
        log.info(
            "service ready",
            grpc_host=settings.grpc_bind_host,
            grpc_port=process.grpc_port,
            metrics_port=settings.metrics_port,
        )
        await stop.wait()
    finally:
        log.info("service stopping")
        stop.set()
        if stop_metrics is not None:
            stop_metrics()
        if server is not None:
            await server.stop(grace=2)
        if broker is not None:
            await broker.stop()
        for task in background:
            task.cancel()
        ended = await asyncio.gather(*background, return_exceptions=True)
        await process.engine.dispose()
    # A task that failed (a port it could not bind, say) stopped the service: exit saying so, not with 0.
    failed = next((e for e in ended if isinstance(e, Exception)), None)
    if failed is not None:
        raise SystemExit(f"{process.name} stopped: a background task failed ({type(failed).__name__}: {failed})")
