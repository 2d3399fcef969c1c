"""workorder_bridge without a database: domain rules, the webhook endpoint, the REST connector."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from civicflow.events import (
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    Location,
    RecordedEvent,
    ResolutionDisputed,
    WorkOrderStatusChanged,
)
from civicflow.secrets import UnsafeSecret
from samples.department_workorders.app import SampleDepartmentSettings, create_app
from services.workorder_bridge.connector import (
    DepartmentUnavailable,
    Outcome,
    RestWorkOrderConnector,
    WorkOrderRefused,
)
from services.workorder_bridge.domain import (
    CaseNotSubmitted,
    StatusReport,
    WorkOrderRequest,
    events_for_status,
    is_resolved,
    report_may_act,
    sign,
    signature_is_valid,
    submission_of,
    work_order_request,
)
from services.workorder_bridge.main import BridgeSettings, bootstrap
from services.workorder_bridge.webhook import MAX_BODY_BYTES, create_webhook_app
from tests.factories import recorded as stored

SECRET = "unit-test-webhook-secret-7Qm2"
NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def submitted() -> CaseSubmitted:
    return CaseSubmitted(
        tracking_number="SC-2026-000042",
        service_code="POTHOLE",
        description="Deep pothole outside my house, call me on 555-0100",
        location=Location(address="12 Elm Street"),
        submitted_at=NOW,
        sealed_contact="sealed",
        has_email=True,
    )


def routed() -> CaseRouted:
    return CaseRouted(
        department_id="streets",
        department_name="Public Works - Streets",
        priority="normal",
        due_at=NOW + timedelta(days=5),
        rule_id="service:POTHOLE",
        rule_set_version="2026-11-23.1",
    )


def recorded(case_id: uuid.UUID, version: int, data: Any) -> RecordedEvent:
    return stored(data, case_id=case_id, version=version, at=NOW)


def report(**changes: Any) -> dict[str, Any]:
    body = {
        "external_id": "WO-000001",
        "department_id": "streets",
        "status": "in_progress",
        "note": "Crew 2 on site",
        "changed_at": NOW.isoformat(),
    }
    body.update(changes)
    return body


# --- signatures --------------------------------------------------------------------------------


def test_a_signature_made_with_the_secret_is_valid() -> None:
    body = b'{"status": "done"}'
    assert signature_is_valid(SECRET, body, sign(SECRET, body))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        sign("another-secret", b'{"status": "done"}'),
        sign(SECRET, b'{"status": "open"}'),  # signed a different body
        sign(SECRET, b'{"status": "done"}').removeprefix("sha256="),  # no scheme
        sign(SECRET, b'{"status": "done"}').replace("sha256=", "sha1="),
    ],
)
def test_anything_else_is_not_a_valid_signature(header: str | None) -> None:
    assert not signature_is_valid(SECRET, b'{"status": "done"}', header)


# --- status mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["open", "in_progress"])
def test_an_open_or_in_progress_report_is_a_status_change_only(status: str) -> None:
    events = events_for_status(StatusReport.model_validate(report(status=status)))

    assert events == [WorkOrderStatusChanged(external_id="WO-000001", status=status, note="Crew 2 on site")]


def test_done_changes_the_status_and_resolves_the_case_with_the_crews_note() -> None:
    events = events_for_status(StatusReport.model_validate(report(status="done", note="Repaired by crew 4")))

    assert events == [
        WorkOrderStatusChanged(external_id="WO-000001", status="done", note="Repaired by crew 4"),
        CaseResolved(resolution="Repaired by crew 4", resolved_at=NOW),
    ]


def test_done_without_a_note_still_resolves_the_case() -> None:
    events = events_for_status(StatusReport.model_validate(report(status="done", note=None)))

    assert isinstance(events[-1], CaseResolved)
    assert "WO-000001" in events[-1].resolution


@pytest.mark.parametrize("status", ["done", "rejected", "in_progress", "open"])
def test_once_the_case_is_resolved_a_report_is_only_the_work_orders_change(status: str) -> None:
    events = events_for_status(StatusReport.model_validate(report(status=status, note="later")), acts=False)

    assert events == [WorkOrderStatusChanged(external_id="WO-000001", status=status, note="later")]


def test_a_case_is_resolved_once_it_holds_a_resolution() -> None:
    resolution = CaseResolved(resolution="fixed", resolved_at=NOW)
    assert not is_resolved([submitted(), routed()])
    assert is_resolved([submitted(), routed(), resolution, WorkOrderStatusChanged(external_id="x", status="open")])


def test_a_disputed_resolution_is_resolved_again_by_the_reopened_work_orders_done() -> None:
    resolution = CaseResolved(resolution="fixed", resolved_at=NOW)
    disputed = [submitted(), routed(), resolution, ResolutionDisputed(call_sid="CA1")]
    assert not is_resolved(disputed)
    again = events_for_status(StatusReport.model_validate(report(status="done", note="fixed properly")), acts=True)
    assert isinstance(again[-1], CaseResolved)
    assert is_resolved([*disputed, again[-1]])


def test_only_the_work_order_of_the_standing_decision_acts_and_only_while_the_case_is_not_resolved() -> None:
    case_id = uuid.uuid4()
    first = recorded(case_id, 2, routed())
    history = [recorded(case_id, 1, submitted()), first]
    assert report_may_act(history, first.event_id)
    history.append(recorded(case_id, 3, CaseResolved(resolution="fixed", resolved_at=NOW)))
    assert not report_may_act(history, first.event_id), "a resolved case is resolved once"
    history.append(recorded(case_id, 4, ResolutionDisputed(call_sid="CA1")))
    assert not report_may_act(history, first.event_id), "disputed, not rerouted yet: no work order acts"
    reopened = recorded(
        case_id, 5, CaseRerouted(**routed().model_dump(), reason="disputed", previous_department_id="streets")
    )
    history.append(reopened)
    assert not report_may_act(history, first.event_id), "the disputed work order no longer acts"
    assert report_may_act(history, reopened.event_id)
    assert not report_may_act(history[:1], first.event_id), "no routing decision: nothing of ours stands"


@pytest.mark.parametrize(
    ("changes", "bad_field"),
    [
        ({"status": "scheduled"}, "status"),
        ({"changed_at": "2026-11-24T09:30:00"}, "changed_at"),  # no time zone
        ({"external_id": ""}, "external_id"),
        ({"department_id": None}, "department_id"),
    ],
)
def test_a_malformed_status_report_is_refused(changes: dict[str, Any], bad_field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StatusReport.model_validate(report(**changes))
    assert [e["loc"][0] for e in caught.value.errors()] == [bad_field]


# --- what the department is sent ---------------------------------------------------------------


def test_the_work_order_carries_the_tracking_number_and_no_resident_data() -> None:
    case_id = uuid.uuid4()
    stream = [recorded(case_id, 1, submitted()), recorded(case_id, 2, routed())]

    request = work_order_request(case_id, submission_of(stream), routed(), "http://bridge/webhooks/work-orders")

    assert request.case_id == str(case_id)
    assert request.tracking_number == "SC-2026-000042"
    assert request.service_code == "POTHOLE"
    assert request.due_at == NOW + timedelta(days=5)
    # The REST body (model_dump_json) leaves the place out; only kinds that need the work's place send it (Open311).
    sent = request.model_dump_json()
    for personal in ("pothole outside my house", "555-0100", "12 Elm Street", "sealed"):
        assert personal not in sent


def test_a_stream_without_submission_cannot_open_a_work_order() -> None:
    case_id = uuid.uuid4()
    with pytest.raises(CaseNotSubmitted):
        submission_of([recorded(case_id, 1, routed())])


# --- the webhook secret ------------------------------------------------------------------------


def test_the_bridge_and_the_sample_department_share_a_generated_secret_in_development(tmp_path: Path) -> None:
    bridge = BridgeSettings(state_dir=tmp_path).signing_secret()
    department = SampleDepartmentSettings(state_dir=tmp_path).signing_secret()

    assert bridge == department and len(bridge) >= 32
    assert BridgeSettings(state_dir=tmp_path / "other").signing_secret() != bridge, "one secret per state folder"


@pytest.mark.parametrize("configured", ["", "dev-webhook-secret", "short"])
def test_production_refuses_a_missing_published_or_short_webhook_secret(tmp_path: Path, configured: str) -> None:
    for settings in (
        BridgeSettings(environment="production", state_dir=tmp_path, webhook_secret=configured),
        SampleDepartmentSettings(environment="production", state_dir=tmp_path, webhook_secret=configured),
    ):
        with pytest.raises(UnsafeSecret, match="CIVICFLOW_WEBHOOK_SECRET"):
            settings.signing_secret()
    with pytest.raises(UnsafeSecret):
        bootstrap(BridgeSettings(environment="production", state_dir=tmp_path, webhook_secret=configured))
    assert not (tmp_path / "secrets").exists(), "production never falls back to a generated secret"


def test_a_configured_secret_is_used_as_given(tmp_path: Path) -> None:
    settings = BridgeSettings(environment="production", state_dir=tmp_path, webhook_secret=SECRET)
    assert settings.signing_secret() == SECRET


def test_callbacks_go_to_the_public_url_when_one_is_set() -> None:
    assert BridgeSettings(bridge_http_port=9001).callback_url == "http://127.0.0.1:9001/webhooks/work-orders"
    public = BridgeSettings(bridge_public_url="https://bridge.city.example/")
    assert public.callback_url == "https://bridge.city.example/webhooks/work-orders"


# --- the webhook endpoint ----------------------------------------------------------------------


class FakeRecorder:
    def __init__(self, outcome: Outcome = Outcome.RECORDED) -> None:
        self.outcome = outcome
        self.reports: list[StatusReport] = []

    async def __call__(self, status_report: StatusReport) -> Outcome:
        self.reports.append(status_report)
        return self.outcome


async def post_webhook(recorder: FakeRecorder, body: bytes, headers: Mapping[str, str] | None = None) -> httpx.Response:
    app = create_webhook_app(recorder, SECRET)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as client:
        signed = {"X-Civicflow-Signature": sign(SECRET, body)} if headers is None else dict(headers)
        return await client.post("/webhooks/work-orders", content=body, headers=signed)


async def test_a_signed_report_is_recorded() -> None:
    recorder = FakeRecorder()

    response = await post_webhook(recorder, json.dumps(report(status="done")).encode())

    assert response.status_code == 200
    assert response.json() == {"outcome": "recorded"}
    assert [r.status for r in recorder.reports] == ["done"]


@pytest.mark.parametrize("signature", [None, "sha256=00", "sign-me"])
async def test_a_report_without_the_right_signature_is_401_and_records_nothing(signature: str | None) -> None:
    recorder = FakeRecorder()
    headers = {} if signature is None else {"X-Civicflow-Signature": signature}

    response = await post_webhook(recorder, json.dumps(report()).encode(), headers)

    assert response.status_code == 401
    assert "X-Civicflow-Signature" in response.json()["error"]
    assert recorder.reports == []


async def test_a_report_signed_with_another_secret_is_401() -> None:
    recorder = FakeRecorder()
    body = json.dumps(report()).encode()

    response = await post_webhook(recorder, body, {"X-Civicflow-Signature": sign("guess", body)})

    assert response.status_code == 401
    assert recorder.reports == []


@pytest.mark.parametrize("body", [b"not json", json.dumps(report(status="lost")).encode(), json.dumps([1, 2]).encode()])
async def test_a_signed_but_invalid_report_is_400(body: bytes) -> None:
    recorder = FakeRecorder()

    response = await post_webhook(recorder, body)

    assert response.status_code == 400
    assert response.json()["error"] == "the status report is not valid"
    assert recorder.reports == []


async def test_a_hostile_note_is_recorded_as_plain_text_without_links() -> None:
    recorder = FakeRecorder()
    note = "<b>Fixed</b>\x07\r\nConfirm your details at http://evil.example/x \u200b" + "z" * 1500

    response = await post_webhook(recorder, json.dumps(report(status="done", note=note)).encode())

    assert response.status_code == 200
    [recorded_note] = [r.note for r in recorder.reports]
    assert recorded_note is not None and recorded_note.startswith("Fixed Confirm your details at [link removed]")
    assert len(recorded_note) <= 500 and "evil" not in recorded_note and "\x07" not in recorded_note


@pytest.mark.parametrize("note", ["", "  ", "<br>", "\u200b\x00"])
def test_a_note_with_nothing_readable_is_no_note(note: str) -> None:
    assert StatusReport.model_validate(report(note=note)).note is None


async def test_a_note_longer_than_2000_characters_is_400_and_a_megabyte_one_413() -> None:
    recorder = FakeRecorder()

    too_long = await post_webhook(recorder, json.dumps(report(note="x" * 2001)).encode())
    huge = await post_webhook(recorder, json.dumps(report(note="x" * 1_000_000)).encode())

    assert too_long.status_code == 400 and too_long.json()["details"][0]["field"] == "note"
    assert huge.status_code == 413
    assert recorder.reports == []


async def test_a_report_for_an_unknown_work_order_is_404() -> None:
    response = await post_webhook(FakeRecorder(Outcome.UNKNOWN_WORK_ORDER), json.dumps(report()).encode())

    assert response.status_code == 404
    assert "WO-000001" in response.json()["error"]


async def test_a_redelivered_report_is_200() -> None:
    response = await post_webhook(FakeRecorder(Outcome.DUPLICATE), json.dumps(report()).encode())

    assert response.status_code == 200
    assert response.json() == {"outcome": "duplicate"}


async def post_raw(app: Any, chunks: int, chunk_size: int, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """POST a body of chunks straight into the ASGI app; (status code, bytes the app pulled)."""
    pulled, sent, status = 0, 0, 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled, sent
        sent += 1
        if sent > chunks:
            return {"type": "http.disconnect"}
        pulled += chunk_size
        return {"type": "http.request", "body": b"x" * chunk_size, "more_body": sent < chunks}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/work-orders",
        "raw_path": b"/webhooks/work-orders",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("bridge", 80),
    }
    await app(scope, receive, send)
    return status, pulled


async def test_a_body_declared_too_large_is_413_before_a_byte_of_it_is_read() -> None:
    recorder = FakeRecorder()
    app = create_webhook_app(recorder, SECRET)

    status, pulled = await post_raw(app, 800, 64 * 1024, [(b"content-length", str(50 * 1024 * 1024).encode())])

    assert (status, pulled) == (413, 0)
    assert recorder.reports == []


@pytest.mark.parametrize("declared", [None, b"100"], ids=["chunked", "content-length-lies"])
async def test_a_large_body_is_read_no_further_than_the_limit(declared: bytes | None) -> None:
    recorder = FakeRecorder()
    app = create_webhook_app(recorder, SECRET)
    headers = [] if declared is None else [(b"content-length", declared)]

    status, pulled = await post_raw(app, 50 * 64, 16 * 1024, headers)  # 50 MB offered

    assert status == 413
    assert pulled <= MAX_BODY_BYTES + 16 * 1024, f"the app pulled {pulled} bytes"
    assert recorder.reports == []


# --- the REST connector ------------------------------------------------------------------------


def a_request() -> WorkOrderRequest:
    case_id = uuid.uuid4()
    return work_order_request(case_id, submitted(), routed(), "http://bridge.test/webhooks/work-orders")


def connector_answering(answer: httpx.Response | Exception, seen: list[httpx.Request]) -> RestWorkOrderConnector:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return RestWorkOrderConnector("http://department.test/", client=client)


async def test_the_connector_posts_with_the_idempotency_key() -> None:
    seen: list[httpx.Request] = []
    connector = connector_answering(httpx.Response(201, json={"id": "WO-000007", "status": "open"}), seen)
    request = a_request()

    opened = await connector.open_work_order("streets", request, "event-123")

    assert opened.external_id == "WO-000007"
    assert str(seen[0].url) == "http://department.test/departments/streets/work-orders"
    assert seen[0].headers["Idempotency-Key"] == "event-123"
    # the REST body is the request without its place (kept for kinds that send one: WorkOrderRequest)
    assert WorkOrderRequest.model_validate_json(seen[0].content) == request.model_copy(
        update={"lat": None, "long": None, "address": None}
    )
    assert request.address == "12 Elm Street", "the case's place travels with the request"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(503), DepartmentUnavailable),
        (httpx.Response(429), DepartmentUnavailable),
        (httpx.ConnectError("refused"), DepartmentUnavailable),
        (httpx.ReadTimeout("slow"), DepartmentUnavailable),
        (httpx.Response(408), DepartmentUnavailable),
        (httpx.Response(404), DepartmentUnavailable),  # a wrong base URL: parked until someone fixes it
        (httpx.Response(401), DepartmentUnavailable),  # wrong credentials: likewise
        (httpx.Response(302, headers={"Location": "/login"}), DepartmentUnavailable),
        (httpx.Response(400, json={"error": "the work order is not valid"}), WorkOrderRefused),
        (httpx.Response(409), WorkOrderRefused),
        (httpx.Response(422), WorkOrderRefused),
    ],
)
async def test_the_connector_says_whether_trying_again_can_help(
    answer: httpx.Response | Exception, error: type[Exception]
) -> None:
    connector = connector_answering(answer, [])

    with pytest.raises(error):
        await connector.open_work_order("streets", a_request(), "event-123")


# --- the bridge against the sample department system (their contract) -------------------------


async def test_the_bridge_and_the_sample_department_agree_on_the_contract() -> None:
    callbacks: list[tuple[bytes, dict[str, str]]] = []

    async def capture(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        callbacks.append((body, dict(headers)))
        return 200

    department = create_app(
        SampleDepartmentSettings(sample_dept_step_seconds=0.001, webhook_secret=SECRET), send=capture
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=department))
    connector = RestWorkOrderConnector("http://department.test", client=client)
    request, event_id = a_request(), str(uuid.uuid4())

    opened = await connector.open_work_order("streets", request, event_id)
    reopened = await connector.open_work_order("streets", request, event_id)
    await asyncio.wait_for(department.state.crews.idle(), timeout=5)
    await client.aclose()

    assert reopened == opened
    assert len(department.state.store) == 1
    reports = []
    for body, headers in callbacks:
        assert signature_is_valid(SECRET, body, headers["X-Civicflow-Signature"])
        reports.append(StatusReport.model_validate_json(body))
    assert [(r.external_id, r.department_id, r.status) for r in reports] == [
        (opened.external_id, "streets", "in_progress"),
        (opened.external_id, "streets", "done"),
    ]
    resolved = events_for_status(reports[-1])[-1]
    assert isinstance(resolved, CaseResolved)
    assert resolved.resolution.startswith("Repaired by crew ")
