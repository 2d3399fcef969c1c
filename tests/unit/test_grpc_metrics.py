"""Every gRPC server counts and times the unary calls it answers, by method and status code."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from civicflow.infra import free_port
from civicflow.runtime import build_grpc_server

CHECK = "/grpc.health.v1.Health/Check"


def counted(service: str, code: str) -> float:
    return (
        REGISTRY.get_sample_value("civicflow_grpc_requests_total", {"service": service, "method": CHECK, "code": code})
        or 0.0
    )


def timed(service: str) -> float:
    labels = {"service": service, "method": CHECK}
    return REGISTRY.get_sample_value("civicflow_grpc_request_seconds_count", labels) or 0.0


async def test_calls_are_counted_by_method_and_status_code_and_timed() -> None:
    service = "grpc-metrics-test"
    before = counted(service, "OK"), counted(service, "NOT_FOUND"), timed(service)
    port = free_port()
    server = await build_grpc_server(port, [], service)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                await health.Check(health_pb2.HealthCheckRequest())
            ).status == health_pb2.HealthCheckResponse.SERVING
            await health.Check(health_pb2.HealthCheckRequest())
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(None)

    after = counted(service, "OK"), counted(service, "NOT_FOUND"), timed(service)
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 3]
