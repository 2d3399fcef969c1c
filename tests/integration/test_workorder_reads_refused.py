"""Reading a work order back (reconciliation) from answers that are not a work order: the rest_webhook kind says
the department cannot tell now (DepartmentUnavailable) rather than None, which would open the work order again;
and the SAMPLE system's "lose" operation refuses what it does not understand and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from civicflow.department_systems import DEFAULT_CONNECTOR
from samples.department_workorders.app import SampleDepartmentSettings, create_app
from services.workorder_bridge.connector import DepartmentUnavailable
from services.workorder_bridge.kinds.rest_webhook import RestWebhookConnector
from tests.connector_contract import a_request

pytestmark = pytest.mark.integration

ANSWERS: dict[str, Response] = {
    "not-json": Response(b"<html>gateway</html>", status_code=200),
    "no-status": JSONResponse({"id": "no-status", "updated_at": "2030-01-01T10:00:00+00:00"}),
    "no-zone": JSONResponse({"id": "no-zone", "status": "resolved", "updated_at": "2030-01-01T10:00:00"}),
    "bad-time": JSONResponse({"id": "bad-time", "status": "resolved", "updated_at": "yesterday"}),
    "note-not-text": JSONResponse(
        {"id": "note-not-text", "status": "resolved", "updated_at": "2030-01-01T10:00:00Z", "note": {"x": 1}}
    ),
    "server-error": JSONResponse({"error": "down"}, status_code=503),
    "unauthorised": JSONResponse({"error": "who are you"}, status_code=401),
}


def hostile_system() -> Starlette:
    async def show(request: Request) -> Response:
        return ANSWERS[request.path_params["work_order_id"]]

    return Starlette(routes=[Route("/departments/{d}/work-orders/{work_order_id}", show, methods=["GET"])])


@pytest.mark.parametrize("work_order", sorted(ANSWERS))
async def test_an_answer_that_is_not_a_work_order_is_unavailable_never_lost(work_order: str) -> None:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=hostile_system()), base_url="http://dept.test")
    connector = RestWebhookConnector("streets", DEFAULT_CONNECTOR, "http://dept.test", timeout_seconds=5, client=client)
    try:
        with pytest.raises(DepartmentUnavailable) as raised:
            await connector.read_work_order(work_order)
        assert "gateway" not in str(raised.value) and "who are you" not in str(raised.value), "never their body"
    finally:
        await client.aclose()


@pytest.fixture
async def sample(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = SampleDepartmentSettings(state_dir=tmp_path, webhook_secret="x" * 32, sample_dept_step_seconds=3600)
    app = create_app(settings)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dept.test")
    yield client
    await client.aclose()
    await app.state.crews.stop()


async def test_the_samples_lose_operation_refuses_what_it_does_not_understand_and_changes_nothing(
    sample: httpx.AsyncClient,
) -> None:
    connector = RestWebhookConnector("streets", DEFAULT_CONNECTOR, "http://dept.test", timeout_seconds=5, client=sample)
    request = a_request()
    opened = await connector.open_work_order(request, "key-1")
    path = f"/departments/streets/work-orders/{opened.external_id}/lose"

    refused = await sample.post(path, params={"keep_key": "perhaps"})
    assert refused.status_code == 400 and "keep_key" in refused.json()["error"]
    unknown = await sample.post("/departments/streets/work-orders/WO-NOPE/lose")
    assert unknown.status_code == 404
    other_department = await sample.post(f"/departments/parks/work-orders/{opened.external_id}/lose")
    assert other_department.status_code == 404
    shown = await connector.read_work_order(opened.external_id)
    assert shown is not None and shown.status == "open", "still there after the refusals"

    assert (await sample.post(path)).status_code == 200
    assert await connector.read_work_order(opened.external_id) is None
    again = await connector.open_work_order(request, "key-1")
    assert again.external_id != opened.external_id, "the key was forgotten with it: the same key opens a new one"
