"""Departments' systems as operations see them, through the running system: `civicflow departments status` and
the bridge's metrics say a department is up after its work orders open, down with its parked work orders while
its system is stopped, and up again once they open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.v1 import intake_pb2
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, view_reached
from tests.e2e.test_lifecycle import pothole

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("departments")) as running:
        yield running


def signal_out() -> intake_pb2.SubmitRequestRequest:
    """A dark traffic signal: the sample city's signals department works on the rest_webhook kind."""
    request = pothole()
    request.service_code = "SIGNAL_OUT"
    return request


def departments_status(system: SystemProcesses) -> dict[str, dict[str, Any]]:
    from civicflow.cli import app

    shown = CliRunner().invoke(
        app, ["departments", "status", "--json"], env={"CIVICFLOW_DATABASE_URL": system.infra.database_url}
    )
    assert shown.exit_code == 0, shown.output
    return {line["department"]: line for line in json.loads(shown.output)}


def bridge_metrics(system: SystemProcesses) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body = httpx.get(f"http://127.0.0.1:{system.ports.metrics['workorder_bridge']}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


async def test_a_stopped_department_system_shows_as_down_with_its_parked_work_orders_then_up_again(
    system: SystemProcesses,
) -> None:
    clients = Clients(system)
    try:
        first = await clients.intake.SubmitRequest(signal_out())
        view = await eventually(lambda: view_reached(clients, first.tracking_number, "work_order_opened"), timeout=60)
        department = view.department_id

        async def up() -> dict[str, Any] | None:
            line = (await asyncio.to_thread(departments_status, system)).get(department)
            return line if line and line["up"] is True else None

        line = await eventually(up, timeout=30, what="the department shown up")
        assert line["kind"] == "rest_webhook" and line["parked_work_orders"] == 0 and line["last_success_at"]
        metrics = await asyncio.to_thread(bridge_metrics, system)
        opened = (
            "civicflow_workorders_opened_total",
            frozenset({("department", department), ("kind", "rest_webhook")}),
        )
        assert metrics[opened] >= 1

        await asyncio.to_thread(system.kill, "sample_department")
        try:
            waiting = await clients.intake.SubmitRequest(signal_out())
            await eventually(lambda: view_reached(clients, waiting.tracking_number, "work_order_waiting"), timeout=60)

            async def down() -> dict[str, Any] | None:
                line = (await asyncio.to_thread(departments_status, system)).get(department)
                return line if line and line["up"] is False and line["parked_work_orders"] >= 1 else None

            line = await eventually(down, timeout=30, what="the department shown down with its parked work order")
            assert "did not answer" in line["last_error"]

            async def gauges() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
                found = await asyncio.to_thread(bridge_metrics, system)
                key = ("civicflow_department_parked_work_orders", frozenset({("department", department)}))
                return found if found.get(key, 0) >= 1 else None

            found = await eventually(gauges, timeout=30, what="the parked work order in the bridge's metrics")
            assert (
                found[("civicflow_department_up", frozenset({("department", department), ("kind", "rest_webhook")}))]
                == 0
            )
        finally:
            system.start("sample_department")
            await asyncio.to_thread(system.wait_ready, ("sample_department",))

        await eventually(lambda: view_reached(clients, waiting.tracking_number, "work_order_opened"), timeout=60)

        async def up_and_nothing_waits() -> dict[str, Any] | None:
            line = await up()
            return line if line and line["parked_work_orders"] == 0 else None

        await eventually(up_and_nothing_waits, timeout=30, what="the department shown up again, nothing parked")
    finally:
        await clients.close()
