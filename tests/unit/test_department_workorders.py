"""The sample department work-order system, driven over HTTP in process (httpx.ASGITransport)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from samples.department_workorders.app import SampleDepartmentSettings, create_app

SECRET = "unit-test-webhook-secret-7Qm2"


@dataclass
class FakeCallbackReceiver:
    """Captures callbacks; answers with the scripted outcomes first (a status code or an exception)."""

    script: list[int | Exception] = field(default_factory=list)
    received: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    attempts: int = 0

    async def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.attempts += 1
        if self.script:
            outcome = self.script.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            if outcome >= 300:
                return outcome
        self.received.append((url, body, dict(headers)))
        return 204

    def changes(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, _ in self.received]


def settings(attempts: int = 3) -> SampleDepartmentSettings:
    return SampleDepartmentSettings(
        sample_dept_step_seconds=0.001,
        sample_dept_callback_attempts=attempts,
        sample_dept_callback_retry_seconds=0.001,
        webhook_secret=SECRET,
    )


def work_order_body(**changes: Any) -> dict[str, Any]:
    body = {
        "case_id": str(uuid.uuid4()),
        "tracking_number": "SC-2026-000042",
        "service_code": "POTHOLE",
        "summary": "311 case SC-2026-000042: POTHOLE for Public Works - Streets, priority normal",
        "callback_url": "http://bridge.test/webhooks/work-orders",
        "due_at": "2026-12-01T17:00:00+00:00",
    }
    body.update(changes)
    return body


async def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://department.test")


@pytest.fixture
def receiver() -> FakeCallbackReceiver:
    return FakeCallbackReceiver()


@pytest.fixture
async def app(receiver: FakeCallbackReceiver) -> AsyncIterator[Starlette]:
    app = create_app(settings(), send=receiver)
    yield app
    await app.state.crews.stop()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(app) as client:
        yield client


async def crews_finished(app: Starlette) -> None:
    await asyncio.wait_for(app.state.crews.idle(), timeout=5)


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def test_missing_idempotency_key_is_refused_and_opens_nothing(client: httpx.AsyncClient, app: Starlette) -> None:
    response = await client.post("/departments/streets/work-orders", json=work_order_body())

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]
    assert len(app.state.store) == 0


async def test_same_key_returns_the_same_work_order(client: httpx.AsyncClient, app: Starlette) -> None:
    headers, body = key(), work_order_body()

    first = await client.post("/departments/streets/work-orders", json=body, headers=headers)
    again = await client.post("/departments/streets/work-orders", json=body, headers=headers)

    assert first.status_code == 201
    assert first.json()["id"].startswith("WO-")
    assert first.json()["status"] == "open"
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert len(app.state.store) == 1


async def test_a_new_key_opens_a_new_work_order(client: httpx.AsyncClient, app: Starlette) -> None:
    body = work_order_body()

    first = await client.post("/departments/streets/work-orders", json=body, headers=key())
    second = await client.post("/departments/streets/work-orders", json=body, headers=key())

    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
    assert len(app.state.store) == 2


async def test_reusing_a_key_for_a_different_work_order_is_a_conflict(client: httpx.AsyncClient) -> None:
    headers = key()
    await client.post("/departments/streets/work-orders", json=work_order_body(), headers=headers)

    response = await client.post(
        "/departments/streets/work-orders", json=work_order_body(service_code="GRAFFITI"), headers=headers
    )

    assert response.status_code == 409
    assert "already used" in response.json()["error"]


@pytest.mark.parametrize(
    ("changes", "bad_field"),
    [
        ({"due_at": "next tuesday"}, "due_at"),
        ({"due_at": "2026-12-01T17:00:00"}, "due_at"),  # no time zone
        ({"attributes": {"depth": 12}}, "attributes.depth"),
        ({"attributes": {"depth": "x" * 501}}, "attributes.depth"),
        ({"callback_url": "not a url"}, "callback_url"),
        ({"tracking_number": ""}, "tracking_number"),
        ({"priority": "high"}, "priority"),  # unknown field
    ],
)
async def test_invalid_bodies_get_a_specific_error(
    client: httpx.AsyncClient, app: Starlette, changes: dict[str, Any], bad_field: str
) -> None:
    response = await client.post("/departments/streets/work-orders", json=work_order_body(**changes), headers=key())

    assert response.status_code == 400
    assert [d["field"] for d in response.json()["details"]] == [bad_field]
    assert len(app.state.store) == 0


async def test_a_missing_field_is_named(client: httpx.AsyncClient) -> None:
    body = work_order_body()
    del body["service_code"]

    response = await client.post("/departments/streets/work-orders", json=body, headers=key())

    assert response.status_code == 400
    assert response.json()["details"] == [{"field": "service_code", "message": "Field required"}]


async def test_a_body_that_is_not_json_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/departments/streets/work-orders", content=b"{oops", headers=key())

    assert response.status_code == 400
    assert response.json()["error"] == "the work order is not valid"


async def test_get_shows_a_work_order_only_in_its_department(client: httpx.AsyncClient) -> None:
    body = work_order_body()
    opened = (await client.post("/departments/streets/work-orders", json=body, headers=key())).json()

    shown = await client.get(f"/departments/streets/work-orders/{opened['id']}")
    elsewhere = await client.get(f"/departments/parks/work-orders/{opened['id']}")
    unknown = await client.get("/departments/streets/work-orders/WO-999999")

    assert shown.status_code == 200
    assert shown.json()["case_id"] == body["case_id"]
    assert shown.json()["tracking_number"] == body["tracking_number"]
    assert elsewhere.status_code == 404
    assert unknown.status_code == 404


async def test_the_crew_moves_the_work_order_along_and_calls_back_signed(
    client: httpx.AsyncClient, app: Starlette, receiver: FakeCallbackReceiver
) -> None:
    opened = (await client.post("/departments/streets/work-orders", json=work_order_body(), headers=key())).json()

    await crews_finished(app)

    changes = receiver.changes()
    assert [c["status"] for c in changes] == ["in_progress", "resolved"]
    assert all(c["external_id"] == opened["id"] and c["department_id"] == "streets" for c in changes)
    assert [c["update_id"] for c in changes] == [f"{opened['id']}.1", f"{opened['id']}.2"]
    assert changes[-1]["note"].startswith("Repaired by crew ")
    for url, body, headers in receiver.received:
        assert url == "http://bridge.test/webhooks/work-orders"
        timestamp = headers["X-Civicflow-Timestamp"]
        signed = f"{timestamp}.".encode() + body
        # signed with the department's own secret (derived from the bridge's), never the bridge's secret itself
        own = hmac.new(SECRET.encode(), b"webhook:streets", hashlib.sha256).hexdigest()
        expected = "sha256=" + hmac.new(own.encode(), signed, hashlib.sha256).hexdigest()
        assert headers["X-Civicflow-Signature"] == expected
    shown = (await client.get(f"/departments/streets/work-orders/{opened['id']}")).json()
    assert shown["status"] == "resolved"


async def test_a_failing_callback_is_retried_until_it_is_accepted() -> None:
    receiver = FakeCallbackReceiver(script=[503, httpx.ConnectError("refused")])
    app = create_app(settings(attempts=3), send=receiver)
    async with await client_for(app) as client:
        await client.post("/departments/streets/work-orders", json=work_order_body(), headers=key())
        await crews_finished(app)

    assert [c["status"] for c in receiver.changes()] == ["in_progress", "resolved"]
    assert receiver.attempts == 4  # in_progress took three tries, done one


async def test_callback_retries_are_bounded() -> None:
    receiver = FakeCallbackReceiver(script=[500] * 100)
    app = create_app(settings(attempts=3), send=receiver)
    async with await client_for(app) as client:
        opened = (await client.post("/departments/streets/work-orders", json=work_order_body(), headers=key())).json()
        await crews_finished(app)
        shown = (await client.get(f"/departments/streets/work-orders/{opened['id']}")).json()

    assert receiver.attempts == 6  # three per change, then given up
    assert receiver.received == []
    assert shown["status"] == "resolved"  # the crew's work does not wait on the caller


async def test_a_case_without_a_due_date_opens_a_work_order_too(client: httpx.AsyncClient) -> None:
    body = work_order_body(due_at=None, attributes={"hole_depth_cm": "12"})
    response = await client.post("/departments/streets/work-orders", json=body, headers=key())

    assert response.status_code == 201
    assert response.json()["due_at"] is None and response.json()["attributes"] == {"hole_depth_cm": "12"}


async def test_a_work_order_turned_down_says_not_our_responsibility() -> None:
    receiver = FakeCallbackReceiver()
    turning = settings()
    turning.sample_dept_turns_down = "streets/GRAFFITI"
    app = create_app(turning, send=receiver)
    async with await client_for(app) as client:
        body = work_order_body(service_code="GRAFFITI")
        await client.post("/departments/streets/work-orders", json=body, headers=key())
        await crews_finished(app)

    assert [c["status"] for c in receiver.changes()] == ["not_our_responsibility"]


def slow_app(receiver: FakeCallbackReceiver) -> Starlette:
    """Crews that would take an hour per step: only what staff or civicflow do moves a work order."""
    slow = settings()
    slow.sample_dept_step_seconds = 3600
    return create_app(slow, send=receiver)


async def test_a_cancelled_work_order_stops_shows_cancelled_and_cancelling_again_changes_nothing() -> None:
    receiver = FakeCallbackReceiver()
    app = slow_app(receiver)
    async with await client_for(app) as client:
        opened = (await client.post("/departments/streets/work-orders", json=work_order_body(), headers=key())).json()
        url = f"/departments/streets/work-orders/{opened['id']}/cancel"
        first = await client.post(url, json={"reason": "the case went to water"}, headers=key())
        again = await client.post(url, json={"reason": "the case went to water"}, headers=key())
        await crews_finished(app)
        listed = (await client.get("/departments/streets/work-orders")).json()["work_orders"]

    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == "cancelled" and first.json()["cancel_reason"] == "the case went to water"
    assert [w["status"] for w in listed] == ["cancelled"]
    assert [c["status"] for c in receiver.changes()] == ["cancelled"], "told once; the crew never got going"


@pytest.mark.parametrize(
    ("body", "headers", "status_code"),
    [
        ({"reason": ""}, key(), 400),
        ({"reason": "x" * 501}, key(), 400),
        ({"why": "moved"}, key(), 400),
        ({"reason": "moved"}, {}, 400),
    ],
)
async def test_a_bad_cancellation_is_refused_and_changes_nothing(
    body: dict[str, Any], headers: dict[str, str], status_code: int
) -> None:
    app = slow_app(FakeCallbackReceiver())
    async with await client_for(app) as client:
        opened = (await client.post("/departments/streets/work-orders", json=work_order_body(), headers=key())).json()
        response = await client.post(
            f"/departments/streets/work-orders/{opened['id']}/cancel", json=body, headers=headers
        )
        shown = (await client.get(f"/departments/streets/work-orders/{opened['id']}")).json()
    await app.state.crews.stop()

    assert response.status_code == status_code and response.json()["error"]
    assert shown["status"] == "open"


async def test_a_finished_or_unknown_work_order_cannot_be_cancelled(client: httpx.AsyncClient, app: Starlette) -> None:
    opened = (await client.post("/departments/streets/work-orders", json=work_order_body(), headers=key())).json()
    await crews_finished(app)

    finished = await client.post(
        f"/departments/streets/work-orders/{opened['id']}/cancel", json={"reason": "moved"}, headers=key()
    )
    unknown = await client.post("/departments/streets/work-orders/WO-0/cancel", json={"reason": "moved"}, headers=key())

    assert finished.status_code == 409 and "resolved already" in finished.json()["error"]
    assert unknown.status_code == 404


async def test_staff_can_move_a_work_order_to_any_status_and_civicflow_is_told() -> None:
    receiver = FakeCallbackReceiver()
    app = slow_app(receiver)
    async with await client_for(app) as client:
        opened = (await client.post("/departments/streets/work-orders", json=work_order_body(), headers=key())).json()
        url = f"/departments/streets/work-orders/{opened['id']}/status"
        moved = await client.post(url, json={"status": "Awaiting Parts", "note": "valve ordered"})
        referred = await client.post(url, json={"status": "internal_referral", "refers_to": "water"})
        await crews_finished(app)

    assert moved.status_code == referred.status_code == 200
    assert [(c["status"], c["note"], c["refers_to"]) for c in receiver.changes()] == [
        ("Awaiting Parts", "valve ordered", None),
        ("internal_referral", None, "water"),
    ]


@pytest.mark.parametrize(
    "body", [{"status": ""}, {"status": "x" * 65}, {"status": "done\u0000"}, {"status": "ok", "refers_to": "a\nb"}]
)
async def test_a_bad_status_change_is_refused(body: dict[str, Any]) -> None:
    app = slow_app(FakeCallbackReceiver())
    async with await client_for(app) as client:
        opened = (await client.post("/departments/streets/work-orders", json=work_order_body(), headers=key())).json()
        response = await client.post(f"/departments/streets/work-orders/{opened['id']}/status", json=body)
    await app.state.crews.stop()

    assert response.status_code == 400 and response.json()["error"] == "the status change is not valid"


async def test_health_answers_while_the_system_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


async def test_a_huge_body_is_413_and_changes_nothing(client: httpx.AsyncClient, app: Starlette) -> None:
    opened = (await client.post("/departments/streets/work-orders", json=work_order_body(), headers=key())).json()
    huge = b"{" + b" " * (1024 * 1024) + b"}"

    for path in ("/departments/streets/work-orders", f"/departments/streets/work-orders/{opened['id']}/status"):
        response = await client.post(path, content=huge, headers=key())
        assert response.status_code == 413 and "larger than" in response.json()["error"]
    assert len(app.state.store) == 1
