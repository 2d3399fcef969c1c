"""workorder_bridge without a database: domain rules, the webhook endpoint, the REST connector."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import string
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from civicflow.department_systems import ConnectorSpec, MissingSecret, SecretRef, department_webhook_secret
from civicflow.events import (
    CaseReopened,
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    Location,
    RecordedEvent,
    ResolutionDisputed,
    WorkOrderReferred,
    WorkOrderRejected,
    WorkOrderStatusChanged,
)
from civicflow.secrets import UnsafeSecret
from samples.department_workorders.app import SampleDepartmentSettings, create_app
from services.workorder_bridge.connector import (
    CannotCancel,
    ConnectorContext,
    DepartmentUnavailable,
    ExternalUpdate,
    Outcome,
    WorkOrderRefused,
)
from services.workorder_bridge.domain import (
    CaseNotSubmitted,
    StatusChange,
    StatusReport,
    WorkOrderRequest,
    events_for_status,
    is_resolved,
    report_may_act,
    sign,
    signature_is_valid,
    submission_of,
    timestamp_problem,
    update_may_act,
    work_order_request,
)
from services.workorder_bridge.kinds import BUILDERS, rest_webhook
from services.workorder_bridge.kinds.rest_webhook import RestWebhookConnector
from services.workorder_bridge.main import BridgeSettings, bootstrap
from services.workorder_bridge.webhook import MAX_BODY_BYTES, WebhookSecrets, create_webhook_app
from tests.factories import recorded as stored

SECRET = "unit-test-webhook-secret-7Qm2"
STREETS_SECRET = department_webhook_secret(SECRET, "streets")  # what streets' system signs its reports with
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


SENT_AT = 1_795_000_000  # the unix time the tests' webhook deliveries are signed with and received at


# --- signatures --------------------------------------------------------------------------------


def test_a_signature_made_with_the_secret_over_the_timestamp_and_body_is_valid() -> None:
    body = b'{"status": "done"}'
    assert signature_is_valid(SECRET, body, str(SENT_AT), sign(SECRET, body, SENT_AT))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        sign("another-secret", b'{"status": "done"}', SENT_AT),
        sign(SECRET, b'{"status": "open"}', SENT_AT),  # signed a different body
        sign(SECRET, b'{"status": "done"}', SENT_AT + 1),  # signed another time: a replay restamped
        sign(SECRET, b'{"status": "done"}', SENT_AT).removeprefix("sha256="),  # no scheme
        sign(SECRET, b'{"status": "done"}', SENT_AT).replace("sha256=", "sha1="),
    ],
)
def test_anything_else_is_not_a_valid_signature(header: str | None) -> None:
    assert not signature_is_valid(SECRET, b'{"status": "done"}', str(SENT_AT), header)


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "missing"),
        ("", "missing"),
        ("  ", "missing"),
        ("nan", "not a unix time"),
        ("NaN", "not a unix time"),
        ("inf", "not a unix time"),
        ("1.795e9", "not a unix time"),
        ("-1795000000", "not a unix time"),
        ("1795000000.5", "not a unix time"),
        ("\uff11" * 10, "not a unix time"),  # full-width digits are digits to str.isdigit
        ("9" * 40, "not a unix time"),
        (str(SENT_AT - 301), "301 s old"),
        (str(SENT_AT + 301), "301 s in the future"),
    ],
)
def test_a_timestamp_missing_malformed_or_outside_the_window_is_refused_saying_why(
    header: str | None, says: str
) -> None:
    problem = timestamp_problem(header, SENT_AT, 300)
    assert problem is not None and says in problem


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
def test_a_timestamp_within_the_window_either_way_is_accepted(offset: int) -> None:
    assert timestamp_problem(str(SENT_AT + offset), SENT_AT, 300) is None


# --- what a department's update means ----------------------------------------------------------

REST = ConnectorSpec(kind="rest_webhook")


def change(theirs: str, note: str | None = "crew note", refers_to: str | None = None) -> StatusChange:
    return StatusChange(
        department_id="streets",
        external_id="WO-000001",
        theirs=theirs,
        ours=REST.ours(theirs),
        changed_at=NOW,
        note=note,
        refers_to=refers_to,
    )


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ("open", "open"),
        ("acknowledged", "acknowledged"),
        ("In Progress", "in_progress"),
        ("action-scheduled", "action_scheduled"),
    ],
)
def test_a_progress_update_is_a_status_change_only_in_ours_with_theirs_beside_it(theirs: str, ours: str) -> None:
    assert events_for_status(change(theirs)) == [
        WorkOrderStatusChanged(external_id="WO-000001", status=ours, note="crew note", external_status=theirs)
    ]


@pytest.mark.parametrize("theirs", ["resolved", "done", "fixed"])
def test_resolved_changes_the_status_and_resolves_the_case_with_the_crews_note(theirs: str) -> None:
    assert events_for_status(change(theirs, "Repaired by crew 4")) == [
        WorkOrderStatusChanged(
            external_id="WO-000001", status="resolved", note="Repaired by crew 4", external_status=theirs
        ),
        CaseResolved(resolution="Repaired by crew 4", resolved_at=NOW),
    ]


def test_resolved_without_a_note_still_resolves_the_case() -> None:
    events = events_for_status(change("resolved", None))

    assert isinstance(events[-1], CaseResolved)
    assert "WO-000001" in events[-1].resolution


def test_closed_resolves_the_case_as_closed_by_the_department_unless_the_note_says_more() -> None:
    bare = events_for_status(change("closed", None))[-1]
    said = events_for_status(change("closed", "No defect found on inspection"))[-1]
    assert bare == CaseResolved(resolution="closed by the department", resolved_at=NOW)
    assert isinstance(said, CaseResolved) and said.resolution == "No defect found on inspection"


def test_a_duplicate_resolves_the_case_naming_the_other_request_when_told_which() -> None:
    named = events_for_status(change("duplicate", None, refers_to="SC-2026-000041"))[-1]
    unnamed = events_for_status(change("duplicate", "reported twice"))[-1]
    hostile = events_for_status(change("duplicate", None, refers_to="see http://evil.example/x"))[-1]

    assert named == CaseResolved(
        resolution="a duplicate of SC-2026-000041", resolved_at=NOW, duplicate_of="SC-2026-000041"
    )
    assert unnamed == CaseResolved(resolution="a duplicate of another request: reported twice", resolved_at=NOW)
    assert isinstance(hostile, CaseResolved) and "evil" not in hostile.model_dump_json()


@pytest.mark.parametrize(
    ("theirs", "note", "reason"),
    [
        ("not_our_responsibility", "belongs to the county", "belongs to the county"),
        ("rejected", None, "the department says it is not theirs"),
        ("cancelled", "crew withdrawn", "the department cancelled its work order: crew withdrawn"),
        ("cancelled", None, "the department cancelled its work order"),
    ],
)
def test_not_ours_or_cancelled_sends_the_case_back_to_the_router_with_the_reason_in_words(
    theirs: str, note: str | None, reason: str
) -> None:
    assert events_for_status(change(theirs, note))[-1] == WorkOrderRejected(
        department_id="streets", reason=reason, external_id="WO-000001"
    )


@pytest.mark.parametrize(
    ("refers_to", "to"), [("water", "water"), ("county-roads", None), (None, None), ("streets", None)]
)
def test_an_internal_referral_names_the_department_only_when_it_is_one_we_know(
    refers_to: str | None, to: str | None
) -> None:
    events = events_for_status(change("internal_referral", "not a sewer", refers_to), True, {"streets", "water"})
    assert events[-1] == WorkOrderReferred(
        department_id="streets", to_department_id=to, external_id="WO-000001", note="not a sewer"
    )


def test_reopened_reopens_the_case_and_the_same_work_orders_next_resolved_resolves_it_again() -> None:
    case_id = uuid.uuid4()
    first = recorded(case_id, 2, routed())
    stream = [
        recorded(case_id, 1, submitted()),
        first,
        recorded(case_id, 3, CaseResolved(resolution="Filled", resolved_at=NOW)),
    ]
    assert update_may_act(stream, first.event_id, "reopened")
    assert not update_may_act(stream, first.event_id, "resolved"), "resolved once"
    reopened = events_for_status(change("reopened", "failed inspection"), True)
    assert reopened[-1] == CaseReopened(department_id="streets", external_id="WO-000001", note="failed inspection")
    stream.append(recorded(case_id, 4, reopened[-1]))

    assert not is_resolved(e.data for e in stream)
    assert not update_may_act(stream, first.event_id, "reopened"), "nothing to reopen while it is open"
    assert update_may_act(stream, first.event_id, "resolved")
    assert isinstance(events_for_status(change("resolved", "Filled properly"), True)[-1], CaseResolved)


def test_a_replaced_work_order_reopening_its_job_does_not_reopen_the_case() -> None:
    case_id = uuid.uuid4()
    first = recorded(case_id, 2, routed())
    rerouted = CaseRerouted(**routed().model_dump(), reason="recategorised", previous_department_id="streets")
    stream = [
        recorded(case_id, 1, submitted()),
        first,
        recorded(case_id, 3, rerouted),
        recorded(case_id, 4, CaseResolved(resolution="done elsewhere", resolved_at=NOW)),
    ]
    assert not update_may_act(stream, first.event_id, "reopened")


def test_a_status_no_mapping_knows_is_recorded_as_unmapped_with_their_words_and_acts_on_nothing() -> None:
    assert events_for_status(change("awaiting parts", "ordered a valve")) == [
        WorkOrderStatusChanged(
            external_id="WO-000001", status="unmapped", note="ordered a valve", external_status="awaiting parts"
        )
    ]


def test_the_city_files_reverse_mapping_is_laid_over_the_kinds() -> None:
    spec = ConnectorSpec.model_validate(
        {"kind": "rest_webhook", "statuses": {"reverse": {"Awaiting Parts": "action_scheduled"}}}
    )
    assert spec.ours("awaiting parts") == "action_scheduled"
    assert spec.ours("done") == "resolved"


@pytest.mark.parametrize("theirs", ["resolved", "closed", "duplicate", "not_our_responsibility", "cancelled"])
@pytest.mark.parametrize("more", ["internal_referral", "reopened", "in_progress", "open", "awaiting parts"])
def test_an_update_that_may_not_act_is_only_the_work_orders_change(theirs: str, more: str) -> None:
    for status in (theirs, more):
        events = events_for_status(change(status, "later"), acts=False, known_departments={"water"})
        assert [type(e) for e in events] == [WorkOrderStatusChanged]


def test_a_case_is_resolved_once_it_holds_a_resolution() -> None:
    resolution = CaseResolved(resolution="fixed", resolved_at=NOW)
    assert not is_resolved([submitted(), routed()])
    assert is_resolved([submitted(), routed(), resolution, WorkOrderStatusChanged(external_id="x", status="open")])


def test_a_disputed_resolution_is_resolved_again_by_the_reopened_work_orders_resolved() -> None:
    resolution = CaseResolved(resolution="fixed", resolved_at=NOW)
    disputed = [submitted(), routed(), resolution, ResolutionDisputed(call_sid="CA1")]
    assert not is_resolved(disputed)
    again = events_for_status(change("resolved", "fixed properly"), acts=True)
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
    assert not update_may_act(history, first.event_id, "reopened"), "the resident reopened it already"
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
        ({"status": ""}, "status"),
        ({"status": "x" * 65}, "status"),
        ({"status": "done\u0000"}, "status"),
        ({"status": "in\nprogress"}, "status"),
        ({"status": 7}, "status"),
        ({"changed_at": "2026-11-24T09:30:00"}, "changed_at"),  # no time zone
        ({"external_id": ""}, "external_id"),
        ({"external_id": "WO\u00001"}, "external_id"),
        ({"department_id": None}, "department_id"),
        ({"refers_to": "x" * 101}, "refers_to"),
        ({"update_id": "u\u0007"}, "update_id"),
    ],
)
def test_a_malformed_status_report_is_refused(changes: dict[str, Any], bad_field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StatusReport.model_validate_json(json.dumps(report(**changes)))
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
    """Stands in for the recorder (tested against PostgreSQL in tests/integration): what reached it, in order."""

    def __init__(self, outcome: Outcome = Outcome.RECORDED) -> None:
        self.outcome = outcome
        self.reports: list[tuple[str, ExternalUpdate]] = []

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        self.reports.append((department_id, update))
        return self.outcome


def webhook_app(recorder: FakeRecorder, now: float = SENT_AT) -> Any:
    return create_webhook_app(recorder, WebhookSecrets(SECRET), 300, clock=lambda: now)


def signed(body: bytes, at: int = SENT_AT, secret: str = STREETS_SECRET) -> dict[str, str]:
    return {"X-Civicflow-Timestamp": str(at), "X-Civicflow-Signature": sign(secret, body, at)}


async def post_webhook(
    recorder: FakeRecorder, body: bytes, headers: Mapping[str, str] | None = None, now: float = SENT_AT
) -> httpx.Response:
    app = webhook_app(recorder, now)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as client:
        return await client.post(
            "/webhooks/work-orders", content=body, headers=signed(body) if headers is None else dict(headers)
        )


async def test_a_signed_report_reaches_the_recorder_in_their_words() -> None:
    recorder = FakeRecorder()
    body = report(status="Awaiting Parts", refers_to="SC-2026-000041", update_id="WO-000001.3")

    response = await post_webhook(recorder, json.dumps(body).encode())

    assert response.status_code == 200
    assert response.json() == {"outcome": "recorded"}
    assert recorder.reports == [
        (
            "streets",
            ExternalUpdate(
                external_id="WO-000001",
                status="Awaiting Parts",
                changed_at=NOW,
                note="Crew 2 on site",
                update_id="WO-000001.3",
                refers_to="SC-2026-000041",
            ),
        )
    ]


@pytest.mark.parametrize("signature", [None, "sha256=00", "sign-me"])
async def test_a_report_without_the_right_signature_is_401_and_records_nothing(signature: str | None) -> None:
    recorder = FakeRecorder()
    headers = {"X-Civicflow-Timestamp": str(SENT_AT)}
    if signature is not None:
        headers["X-Civicflow-Signature"] = signature

    response = await post_webhook(recorder, json.dumps(report()).encode(), headers)

    assert response.status_code == 401
    assert "X-Civicflow-Signature" in response.json()["error"]
    assert recorder.reports == []


async def test_a_report_signed_with_another_secret_is_401() -> None:
    recorder = FakeRecorder()
    body = json.dumps(report()).encode()

    response = await post_webhook(recorder, body, signed(body, secret="guess"))

    assert response.status_code == 401
    assert recorder.reports == []


async def test_a_report_signed_without_the_timestamp_as_before_is_401_saying_the_timestamp_is_missing() -> None:
    recorder = FakeRecorder()
    body = json.dumps(report()).encode()
    old_style = "sha256=" + hmac.new(STREETS_SECRET.encode(), body, hashlib.sha256).hexdigest()

    response = await post_webhook(recorder, body, {"X-Civicflow-Signature": old_style})

    assert response.status_code == 401
    assert "X-Civicflow-Timestamp header is missing" in response.json()["error"]
    assert recorder.reports == []


@pytest.mark.parametrize(
    ("received_at", "says"), [(SENT_AT + 301, "s old"), (SENT_AT + 86_400 * 30, "s old"), (SENT_AT - 301, "future")]
)
async def test_a_signed_body_replayed_later_or_stamped_ahead_is_401_saying_which(received_at: int, says: str) -> None:
    recorder = FakeRecorder()
    body = json.dumps(report(status="resolved")).encode()

    response = await post_webhook(recorder, body, signed(body), now=received_at)

    assert response.status_code == 401
    assert says in response.json()["error"]
    assert recorder.reports == []


async def test_a_replay_restamped_with_a_fresh_time_fails_the_signature() -> None:
    recorder = FakeRecorder()
    body = json.dumps(report(status="resolved")).encode()
    captured = signed(body, at=SENT_AT - 3600)
    restamped = {**captured, "X-Civicflow-Timestamp": str(SENT_AT)}

    response = await post_webhook(recorder, body, restamped)

    assert response.status_code == 401
    assert "X-Civicflow-Signature" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps([1, 2]).encode(),
        json.dumps(report(status="")).encode(),
        json.dumps(report(status="resolved\u0000")).encode(),
        b'{"external_id": "WO-1", "department_id": "streets", "status": "\xff\xfe",'
        b' "changed_at": "2026-11-24T09:30:00Z"}',
        json.dumps(report(changed_at="NaN")).encode(),
    ],
    ids=["not-json", "a-list", "empty-status", "nul-in-status", "invalid-utf8", "nan-time"],
)
async def test_a_signed_but_invalid_report_is_400(body: bytes) -> None:
    recorder = FakeRecorder()

    response = await post_webhook(recorder, body)

    assert response.status_code == 400
    assert response.json()["error"] == "the status report is not valid"
    assert recorder.reports == []


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=2048),
        st.builds(
            lambda fields: json.dumps(report(**fields)).encode(),
            st.dictionaries(
                st.sampled_from(["status", "note", "external_id", "refers_to", "update_id", "changed_at"]),
                st.one_of(st.text(max_size=80), st.none(), st.integers(), st.floats(allow_nan=True)),
                max_size=3,
            ),
        ),
    )
)
async def test_whatever_a_signed_body_holds_the_answer_is_a_clear_200_or_400_never_a_crash(body: bytes) -> None:
    recorder = FakeRecorder()

    response = await post_webhook(recorder, body)

    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert recorder.reports == [] and response.json()["error"] == "the status report is not valid"
    else:
        [(_, update)] = recorder.reports
        assert 1 <= len(update.status) <= 64 and not any(ord(c) < 32 or ord(c) == 127 for c in update.status)


@hypothesis_settings(max_examples=150, deadline=None)
@given(
    timestamp=st.one_of(
        st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=20),
        st.integers(min_value=-(10**15), max_value=10**15).map(str),
        st.integers(min_value=SENT_AT - 400, max_value=SENT_AT + 400).map(str),
        st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "1e9", "0x6A", "1_795_000_000", "+1795000000"]),
    )
)
async def test_whatever_a_timestamp_header_holds_it_is_accepted_only_when_it_is_a_fresh_whole_second(
    timestamp: str,
) -> None:
    recorder = FakeRecorder()
    body = json.dumps(report()).encode()
    headers = {
        "X-Civicflow-Timestamp": timestamp,
        "X-Civicflow-Signature": sign(STREETS_SECRET, body, timestamp.strip()),
    }

    response = await post_webhook(recorder, body, headers)

    value = timestamp.strip()
    fresh = value.isdigit() and abs(int(value) - SENT_AT) <= 300
    assert response.status_code == (200 if fresh else 401), response.text
    assert len(recorder.reports) == (1 if fresh else 0)


async def test_a_hostile_note_is_recorded_as_plain_text_without_links() -> None:
    recorder = FakeRecorder()
    note = "<b>Fixed</b>\x07\r\nConfirm your details at http://evil.example/x \u200b" + "z" * 1500

    response = await post_webhook(recorder, json.dumps(report(status="done", note=note)).encode())

    assert response.status_code == 200
    [recorded_note] = [u.note for _, u in recorder.reports]
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
    app = webhook_app(recorder)

    status, pulled = await post_raw(app, 800, 64 * 1024, [(b"content-length", str(50 * 1024 * 1024).encode())])

    assert (status, pulled) == (413, 0)
    assert recorder.reports == []


@pytest.mark.parametrize("declared", [None, b"100"], ids=["chunked", "content-length-lies"])
async def test_a_large_body_is_read_no_further_than_the_limit(declared: bytes | None) -> None:
    recorder = FakeRecorder()
    app = webhook_app(recorder)
    headers = [] if declared is None else [(b"content-length", declared)]

    status, pulled = await post_raw(app, 50 * 64, 16 * 1024, headers)  # 50 MB offered

    assert status == 413
    assert pulled <= MAX_BODY_BYTES + 16 * 1024, f"the app pulled {pulled} bytes"
    assert recorder.reports == []


# --- the rest_webhook connector ----------------------------------------------------------------


def a_request(attributes: dict[str, str] | None = None) -> WorkOrderRequest:
    case_id = uuid.uuid4()
    return work_order_request(
        case_id, submitted(), routed(), "http://bridge.test/webhooks/work-orders", attributes=attributes
    )


MAPPED = ConnectorSpec(
    kind="rest_webhook",
    endpoint="http://department.test/api/",
    services={"POTHOLE": "PW-ROAD-07"},
    attributes={"depth": "hole_depth_cm"},
)


def connector_answering(
    answer: httpx.Response | Exception, seen: list[httpx.Request], spec: ConnectorSpec = MAPPED
) -> RestWebhookConnector:
    """The connector against a transport that answers as a department's system would (status codes no sample
    system can be made to give on demand)."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return RestWebhookConnector(
        "streets", spec, spec.endpoint or "http://department.test", timeout_seconds=5, token="t0k3n", client=client
    )


async def test_the_connector_posts_in_their_words_with_the_idempotency_key_and_the_token() -> None:
    seen: list[httpx.Request] = []
    connector = connector_answering(httpx.Response(201, json={"id": "WO-000007", "status": "open"}), seen)
    request = a_request({"depth": "12", "caller_mood": "angry"})

    opened = await connector.open_work_order(request, "event-123")

    assert opened.external_id == "WO-000007"
    assert str(seen[0].url) == "http://department.test/api/departments/streets/work-orders"
    assert seen[0].headers["Idempotency-Key"] == "event-123"
    assert seen[0].headers["Authorization"] == "Bearer t0k3n"
    sent = json.loads(seen[0].content)
    assert sent["service_code"] == "PW-ROAD-07", "their service code"
    assert sent["attributes"] == {"hole_depth_cm": "12"}, "only mapped attributes, under their names"
    assert sent["tracking_number"] == request.tracking_number


async def test_with_nothing_mapped_the_connector_sends_our_code_and_no_attributes() -> None:
    seen: list[httpx.Request] = []
    connector = connector_answering(httpx.Response(200, json={"id": "WO-1"}), seen, ConnectorSpec(kind="rest_webhook"))

    await connector.open_work_order(a_request({"depth": "12"}), "event-1")

    sent = json.loads(seen[0].content)
    assert sent["service_code"] == "POTHOLE" and "attributes" not in sent
    assert str(seen[0].url) == "http://department.test/departments/streets/work-orders"


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
        await connector.open_work_order(a_request(), "event-123")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(200, json={}), None),
        (httpx.Response(204), None),
        (httpx.Response(409, json={"error": "resolved already"}), CannotCancel),
        (httpx.Response(404), CannotCancel),
        # read and refused: the department is told by its channel, never parked as if its system were down
        (httpx.Response(400), WorkOrderRefused),
        (httpx.Response(422), WorkOrderRefused),
        (httpx.Response(503), DepartmentUnavailable),
        (httpx.ConnectError("refused"), DepartmentUnavailable),
    ],
)
async def test_a_cancellation_is_posted_with_its_key_and_reason_and_says_what_became_of_it(
    answer: httpx.Response | Exception, error: type[Exception] | None
) -> None:
    seen: list[httpx.Request] = []
    connector = connector_answering(answer, seen)

    if error is None:
        await connector.cancel_work_order("WO 7/8", "the case went to water", "cause-1")
    else:
        with pytest.raises(error):
            await connector.cancel_work_order("WO 7/8", "the case went to water", "cause-1")

    assert str(seen[0].url) == "http://department.test/api/departments/streets/work-orders/WO%207%2F8/cancel"
    assert seen[0].headers["Idempotency-Key"] == "cause-1"
    assert json.loads(seen[0].content) == {"reason": "the case went to water"}


@pytest.mark.parametrize(
    ("answer", "up"), [(httpx.Response(200), True), (httpx.Response(500), False), (httpx.ConnectError("x"), False)]
)
async def test_health_asks_their_healthz(answer: httpx.Response | Exception, up: bool) -> None:
    seen: list[httpx.Request] = []
    health = await connector_answering(answer, seen).health()

    assert health.up is up and health.detail and "t0k3n" not in health.detail
    assert str(seen[0].url) == "http://department.test/api/healthz"


async def test_a_push_kind_has_nothing_to_poll() -> None:
    page = await connector_answering(httpx.Response(500), []).updates_since("c1")
    assert page.updates == [] and page.cursor == "c1"


def context(spec: ConnectorSpec, tmp_path: Path) -> ConnectorContext:
    return ConnectorContext(
        department_id="streets",
        spec=spec,
        settings=BridgeSettings(workorder_base_url="http://city-default.test", workorder_timeout_seconds=7),
        city_dir=tmp_path,
        callback_url="http://bridge.test/webhooks/work-orders",
        public_url="http://bridge.test",
    )


async def test_the_kind_is_registered_and_built_from_the_city_file_with_the_citys_defaults(tmp_path: Path) -> None:
    (tmp_path / "streets.token").write_text("from-a-file\n")
    default = BUILDERS["rest_webhook"](context(ConnectorSpec(kind="rest_webhook"), tmp_path))
    own = rest_webhook.build(
        context(
            ConnectorSpec(
                kind="rest_webhook",
                endpoint="http://streets.test",
                timeout_seconds=3,
                credentials=SecretRef(file="streets.token"),
            ),
            tmp_path,
        )
    )
    try:
        assert isinstance(default, RestWebhookConnector) and default.kind == "rest_webhook"
        assert default._endpoint == "http://city-default.test" and default._client.timeout.read == 7
        assert own._endpoint == "http://streets.test" and own._client.timeout.read == 3
        assert own._headers == {"Authorization": "Bearer from-a-file"}
    finally:
        await default.aclose()
        await own.aclose()


def test_a_token_reference_that_names_nothing_stops_the_build_saying_which_department(tmp_path: Path) -> None:
    spec = ConnectorSpec(kind="rest_webhook", credentials=SecretRef(env="CIVICFLOW_TEST_UNSET_TOKEN_7Q"))
    with pytest.raises(MissingSecret, match=r"departments\.streets\.connector\.credentials"):
        rest_webhook.build(context(spec, tmp_path))


# --- the bridge against the sample department system (their contract) -------------------------


async def test_the_sample_department_and_the_bridges_webhook_agree_end_to_end() -> None:
    """The sample system's signed, timestamped callbacks go through the real webhook app to the recorder."""
    recorder = FakeRecorder()
    bridge = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_webhook_app(recorder, WebhookSecrets(SECRET))),
        base_url="http://bridge.test",
    )

    async def deliver(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        return (await bridge.post(url, content=body, headers=dict(headers))).status_code

    department = create_app(
        SampleDepartmentSettings(sample_dept_step_seconds=0.001, webhook_secret=SECRET), send=deliver
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=department))
    connector = RestWebhookConnector(
        "streets", ConnectorSpec(kind="rest_webhook"), "http://department.test", timeout_seconds=5, client=client
    )
    request, event_id = a_request(), str(uuid.uuid4())

    opened = await connector.open_work_order(request, event_id)
    reopened = await connector.open_work_order(request, event_id)
    await asyncio.wait_for(department.state.crews.idle(), timeout=5)
    await client.aclose()
    await bridge.aclose()

    assert reopened == opened
    assert len(department.state.store) == 1
    assert [(d, u.external_id, u.status) for d, u in recorder.reports] == [
        ("streets", opened.external_id, "in_progress"),
        ("streets", opened.external_id, "resolved"),
    ]
    assert len({u.update_id for _, u in recorder.reports}) == 2, "each change numbered"
    last = recorder.reports[-1][1]
    change = StatusChange("streets", last.external_id, last.status, REST.ours(last.status), last.changed_at, last.note)
    resolved = events_for_status(change)[-1]
    assert isinstance(resolved, CaseResolved)
    assert resolved.resolution.startswith("Repaired by crew ")
