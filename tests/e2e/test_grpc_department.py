"""The SAMPLE gRPC department as `civicflow dev` runs it: its own process with the key the launcher made, pulling
the water department's feed from the bridge process; the grpc connector sees it up, and down once it is gone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest

from civicflow.db import make_engine
from civicflow.department_systems import ConnectorSpec
from civicflow.infra import Infrastructure
from civicflow.launcher import SAMPLE_GRPC_DEPARTMENT, SystemProcesses
from civicflow.sandbox import isolated_system, scratch_database
from services.workorder_bridge.grpc_outbox import GrpcOutbox
from services.workorder_bridge.kinds.grpc import GrpcConnector
from tests.conftest import eventually
from tests.connector_contract import a_request

pytestmark = pytest.mark.e2e
WINDOW = 3.0


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    state_dir = tmp_path_factory.mktemp("grpc-department")
    async with scratch_database(infrastructure, "e2e") as url:
        own = Infrastructure(url, infrastructure.kafka_bootstrap_servers, infrastructure.kind)
        extra_env = {
            "CIVICFLOW_SAMPLE_GRPC_STEP_SECONDS": "0.5",
            "CIVICFLOW_WORKORDER_GRPC_CLIENT_WINDOW_SECONDS": str(WINDOW),
        }
        async with isolated_system(own, state_dir, "e2e-grpc", extra_env) as running:
            yield running


async def test_the_sample_pulls_the_water_feed_and_health_follows_it(system: SystemProcesses) -> None:
    engine = make_engine(system.infra.database_url, pool_size=2)
    try:
        connector = GrpcConnector(
            SAMPLE_GRPC_DEPARTMENT, ConnectorSpec(kind="grpc"), GrpcOutbox(engine), client_window_seconds=WINDOW
        )
        assert (await connector.health()).up, "the launcher waited for the sample to connect"
        opened = await connector.open_work_order(a_request("WATER_LEAK"), str(uuid4()))
        folder = system.grpc_department_dir / SAMPLE_GRPC_DEPARTMENT

        async def stored() -> dict[str, object] | None:
            path = folder / f"{opened.external_id}.json"
            return json.loads(path.read_text()) if path.exists() else None

        # The bridge has no work_orders row for it (the opener did not open it), so the sample's reports are
        # "not recorded yet" (UNAVAILABLE) and it keeps trying; the file shows the feed reached it.
        record = await eventually(stored, timeout=30, what="the sample to store the work order")
        assert record["tracking_number"] and (folder.parent / "client.key").exists()
        await connector.cancel_work_order(opened.external_id, "the case moved on", str(uuid4()))

        async def cancelled() -> bool:
            return json.loads((folder / f"{opened.external_id}.json").read_text())["status"] == "cancelled"

        await eventually(cancelled, timeout=30, what="the cancellation in the sample's file")

        system.kill("grpc_department")

        async def down() -> str | None:
            health = await connector.health()
            return None if health.up else health.detail

        detail = await eventually(down, timeout=WINDOW * 10, what="health to say the client is gone")
        assert detail.startswith("no client connected for")
    finally:
        await engine.dispose()


def test_the_key_is_kept_for_the_next_start(system: SystemProcesses) -> None:
    path: Path = system.grpc_department_dir / "client.key"
    before = path.read_text()
    system.keep_grpc_department_key()
    assert path.read_text() == before
