"""The rest_webhook kind meets the connector contract against the real SAMPLE department system and the real
bridge webhook, each served over HTTP on a free port in this process."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from civicflow.department_systems import ConnectorSpec
from samples.department_workorders.app import SampleDepartmentSettings, create_app
from services.workorder_bridge.connector import ConnectorContext, ExternalUpdate, Outcome
from services.workorder_bridge.kinds import BUILDERS
from services.workorder_bridge.kinds.rest_webhook import RestWebhookConnector
from services.workorder_bridge.main import BridgeSettings
from services.workorder_bridge.webhook import WEBHOOK_PATH, WebhookSecrets, create_webhook_app
from tests.conftest import eventually
from tests.connector_contract import ConnectorContract, a_request

pytestmark = pytest.mark.integration

SECRET = "contract-test-webhook-secret-4Rk8"


class Served:
    """A Starlette app served by uvicorn on 127.0.0.1 and a port the OS picked, lifespan included."""

    def __init__(self, app: Starlette) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))

        async def started() -> bool | None:
            if self._task is not None and self._task.done():
                self._task.result()  # it failed: say why
            return self._server.started or None

        await eventually(started, timeout=10, what="the server to start")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._task = None
        self._sock.close()


class ArrivedAtTheBridge:
    """The bridge's side of the webhook: what reached its recorder, in the department's words (the recorder
    itself, against PostgreSQL, is tests/integration/test_workorder_bridge_store.py)."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, ExternalUpdate]] = []

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        self.updates.append((department_id, update))
        return Outcome.RECORDED


class RestWebhookDepartment:
    """streets on the rest_webhook kind, its system the sample department app, its staff driving it over HTTP."""

    can_cancel = True

    def __init__(self, connector: RestWebhookConnector, system: Served, arrived: ArrivedAtTheBridge) -> None:
        self.connector = connector
        self.spec = connector.spec
        self._system = system
        self._arrived = arrived
        self._staff = httpx.AsyncClient(base_url=system.url, timeout=10)

    def _work_order(self, external_id: str) -> str:
        return f"/departments/{self.connector.department_id}/work-orders/{external_id}"

    async def change_status(self, external_id: str, their_status: str, note: str | None = None) -> None:
        response = await self._staff.post(
            f"{self._work_order(external_id)}/status", json={"status": their_status, "note": note}
        )
        assert response.status_code == 200, response.text

    async def updates(self) -> list[ExternalUpdate]:
        return [u for d, u in self._arrived.updates if d == self.connector.department_id]

    async def cancelled_there(self, external_id: str) -> bool:
        shown = await self._staff.get(self._work_order(external_id))
        return bool(shown.status_code == 200 and shown.json()["status"] == "cancelled")

    async def stop_system(self) -> None:
        await self._system.stop()

    async def aclose(self) -> None:
        await self._staff.aclose()


@pytest.fixture
async def bridge() -> AsyncIterator[tuple[Served, ArrivedAtTheBridge]]:
    arrived = ArrivedAtTheBridge()
    served = Served(create_webhook_app(arrived, WebhookSecrets(SECRET)))
    await served.start()
    yield served, arrived
    await served.stop()


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[Served]:
    # crews that would take an hour a step: only what the tests do moves a work order
    settings = SampleDepartmentSettings(state_dir=tmp_path, webhook_secret=SECRET, sample_dept_step_seconds=3600)
    served = Served(create_app(settings))
    await served.start()
    yield served
    await served.stop()


def build(spec: ConnectorSpec, system: Served, bridge: Served, tmp_path: Path) -> RestWebhookConnector:
    context = ConnectorContext(
        department_id="streets",
        spec=spec,
        settings=BridgeSettings(state_dir=tmp_path, workorder_base_url=system.url),
        city_dir=tmp_path,
        callback_url=bridge.url + WEBHOOK_PATH,
        public_url=bridge.url,
    )
    connector = BUILDERS["rest_webhook"](context)
    assert isinstance(connector, RestWebhookConnector)
    return connector


class TestRestWebhookConnector(ConnectorContract):
    @pytest.fixture
    async def department(
        self, system: Served, bridge: tuple[Served, ArrivedAtTheBridge], tmp_path: Path
    ) -> AsyncIterator[RestWebhookDepartment]:
        served_bridge, arrived = bridge
        connector = build(ConnectorSpec(kind="rest_webhook"), system, served_bridge, tmp_path)
        department = RestWebhookDepartment(connector, system, arrived)
        yield department
        await department.aclose()
        await connector.aclose()

    async def test_a_cancellation_tells_the_bridge_once_however_often_it_is_asked(
        self, department: RestWebhookDepartment
    ) -> None:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        for _ in range(3):  # by three causes, each its own key: still one cancellation
            await department.connector.cancel_work_order(opened.external_id, "recategorised", str(uuid.uuid4()))
        await department.change_status(opened.external_id, "noted", "a marker after the cancellations")

        async def both() -> list[ExternalUpdate] | None:
            found = [u for u in await department.updates() if u.external_id == opened.external_id]
            return found if {u.status for u in found} >= {"cancelled", "noted"} else None

        # each change is posted on its own, so the two may arrive in either order
        updates = await eventually(both, timeout=30, what="the cancellation and the marker to reach the bridge")
        assert sorted(u.status for u in updates) == ["cancelled", "noted"]


async def test_the_departments_own_words_go_out_and_come_back_mapped(
    system: Served, bridge: tuple[Served, ArrivedAtTheBridge], tmp_path: Path
) -> None:
    served_bridge, arrived = bridge
    spec = ConnectorSpec.model_validate(
        {
            "kind": "rest_webhook",
            "endpoint": system.url,
            "services": {"POTHOLE": "PW-ROAD-07"},
            "attributes": {"depth": "hole_depth_cm"},
            "statuses": {"reverse": {"Crew Booked": "action_scheduled"}},
        }
    )
    connector = build(spec, system, served_bridge, tmp_path)
    department = RestWebhookDepartment(connector, system, arrived)
    try:
        request = a_request().model_copy(update={"attributes": {"depth": "12", "caller_mood": "cross"}})
        opened = await connector.open_work_order(request, str(uuid.uuid4()))
        async with httpx.AsyncClient(base_url=system.url) as staff:
            shown = (await staff.get(f"/departments/streets/work-orders/{opened.external_id}")).json()
        assert shown["service_code"] == "PW-ROAD-07" and shown["attributes"] == {"hole_depth_cm": "12"}
        assert shown["callback_url"] == served_bridge.url + WEBHOOK_PATH

        await department.change_status(opened.external_id, "Crew Booked", "Tuesday")

        async def arrived_here() -> list[ExternalUpdate] | None:
            return [u for u in await department.updates() if u.external_id == opened.external_id] or None

        [update] = await eventually(arrived_here, timeout=30, what="the update to reach the bridge")
        assert (spec.ours(update.status), update.note) == ("action_scheduled", "Tuesday")
        assert update.update_id, "the sample numbers its updates"
    finally:
        await department.aclose()
        await connector.aclose()
