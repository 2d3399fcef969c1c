"""Ports a system is started on: drawn distinct, and a taken one refused rather than shared."""

from __future__ import annotations

import pytest

from civicflow.infra import free_ports
from civicflow.launcher import Ports
from civicflow.runtime import build_grpc_server
from civicflow.settings import KernelSettings


def test_a_system_draws_a_different_port_for_each_of_its_servers() -> None:
    for _ in range(50):
        ports = Ports.free()
        drawn = [
            ports.intake,
            ports.query,
            ports.router,
            ports.workorder_bridge,
            ports.notifier,
            ports.bridge_http,
            ports.sample_department,
            ports.smtp,
            ports.phone,
            ports.notifier_http,
            ports.open311,
            *ports.metrics.values(),
        ]
        assert len(set(drawn)) == len(drawn) == 16
    assert len(set(free_ports(100))) == 100


async def test_a_second_grpc_server_on_a_taken_port_is_refused_not_given_half_the_calls() -> None:
    [port] = free_ports(1)
    first = await build_grpc_server(port, [], "first", KernelSettings())
    await first.start()
    try:
        with pytest.raises(OSError, match=f"gRPC port {port} is taken"):
            await build_grpc_server(port, [], "second", KernelSettings())
    finally:
        await first.stop(None)
