"""The status webhook per department: each department signs with a secret of its own (derived from the bridge's, or
its connector's `webhook_secret`), a department on another kind is refused, and what became of a report (held,
holds full, too far ahead) is answered in words a department's system acts on."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from civicflow.department_systems import ConnectorSpec, SecretRef, department_webhook_secret
from services.workorder_bridge.cli import departments_app
from services.workorder_bridge.connector import ExternalUpdate, Outcome
from services.workorder_bridge.domain import sign
from services.workorder_bridge.webhook import NotByWebhook, WebhookSecrets, create_webhook_app

SECRET = "unit-test-bridge-secret-Vd84kq"
SENT_AT = 1_795_000_000
CHANGED_AT = datetime(2026, 11, 24, 9, 30, tzinfo=UTC).isoformat()
CONNECTORS = {
    "streets": ConnectorSpec(kind="rest_webhook"),
    "parks": ConnectorSpec(kind="rest_webhook", webhook_secret=SecretRef(env="CIVICFLOW_TEST_PARKS_HOOK_9Z")),
    "water": ConnectorSpec(kind="grpc"),
    "code": ConnectorSpec(kind="email", inbox="code@city.example"),
}


class Recorder:
    def __init__(self, outcome: Outcome = Outcome.RECORDED) -> None:
        self.outcome = outcome
        self.reports: list[tuple[str, ExternalUpdate]] = []

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        self.reports.append((department_id, update))
        return self.outcome


def body_of(department_id: str, **changes: Any) -> bytes:
    report = {"external_id": "WO-1", "department_id": department_id, "status": "in_progress", "changed_at": CHANGED_AT}
    return json.dumps(report | changes).encode()


async def post(
    recorder: Recorder, body: bytes, secret: str, connectors: Mapping[str, ConnectorSpec] = CONNECTORS
) -> httpx.Response:
    app = create_webhook_app(recorder, WebhookSecrets(SECRET, connectors), 300, clock=lambda: SENT_AT)
    headers = {"X-Civicflow-Timestamp": str(SENT_AT), "X-Civicflow-Signature": sign(secret, body, SENT_AT)}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as client:
        return await client.post("/webhooks/work-orders", content=body, headers=headers)


def test_a_departments_secret_is_the_hmac_of_its_id_under_the_bridges_secret_and_no_other_departments() -> None:
    streets = department_webhook_secret(SECRET, "streets")
    assert streets == hmac.new(SECRET.encode(), b"webhook:streets", hashlib.sha256).hexdigest()
    assert streets != department_webhook_secret(SECRET, "signals") and SECRET not in streets
    assert department_webhook_secret("another-bridge-secret-xx", "streets") != streets


async def test_a_report_signed_with_its_departments_own_secret_is_recorded() -> None:
    recorder = Recorder()
    response = await post(recorder, body_of("streets"), department_webhook_secret(SECRET, "streets"))
    assert response.status_code == 200 and [d for d, _ in recorder.reports] == ["streets"]


async def test_a_department_not_in_the_city_file_is_a_rest_webhook_one_with_its_own_derived_secret() -> None:
    recorder = Recorder()
    response = await post(recorder, body_of("signals"), department_webhook_secret(SECRET, "signals"))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "secret",
    [SECRET, department_webhook_secret(SECRET, "signals")],
    ids=["the-bridges-own-secret", "another-departments-secret"],
)
async def test_no_department_can_sign_for_another_nor_with_the_bridges_secret(secret: str) -> None:
    recorder = Recorder()
    response = await post(recorder, body_of("streets", status="not_our_responsibility"), secret)
    assert response.status_code == 401 and "of the department the report names" in response.json()["error"]
    assert recorder.reports == []


@pytest.mark.parametrize(("department", "kind"), [("water", "grpc"), ("code", "email")])
async def test_a_department_on_another_kind_is_refused_403_whatever_it_signs_with(department: str, kind: str) -> None:
    recorder = Recorder()
    response = await post(recorder, body_of(department), department_webhook_secret(SECRET, department))
    assert response.status_code == 403
    assert response.json()["error"] == f"{department} does not report by webhook (its connector is {kind})"
    assert recorder.reports == []


async def test_a_connectors_own_webhook_secret_is_the_one_and_a_derived_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CIVICFLOW_TEST_PARKS_HOOK_9Z", "parks-own-secret-from-their-vendor")
    recorder = Recorder()
    own = await post(recorder, body_of("parks"), "parks-own-secret-from-their-vendor")
    derived = await post(recorder, body_of("parks"), department_webhook_secret(SECRET, "parks"))
    assert (own.status_code, derived.status_code) == (200, 401)
    assert len(recorder.reports) == 1


async def test_a_connectors_webhook_secret_that_names_nothing_refuses_only_that_departments_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CIVICFLOW_TEST_PARKS_HOOK_9Z", raising=False)
    recorder = Recorder()
    parks = await post(recorder, body_of("parks"), department_webhook_secret(SECRET, "parks"))
    streets = await post(recorder, body_of("streets"), department_webhook_secret(SECRET, "streets"))
    assert parks.status_code == 503 and "webhook_secret is not set" in parks.json()["error"]
    assert streets.status_code == 200 and [d for d, _ in recorder.reports] == ["streets"]


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"department_id": 7}', b'{"department_id": "   "}', json.dumps({"department_id": "x" * 101}).encode()],
)
async def test_a_body_naming_no_department_is_400_before_any_secret_is_tried(body: bytes) -> None:
    recorder = Recorder()
    response = await post(recorder, body, SECRET)
    assert response.status_code == 400 and response.json()["details"][0]["field"] == "department_id"
    assert recorder.reports == []


def test_only_a_rest_webhook_connector_takes_a_webhook_secret() -> None:
    with pytest.raises(ValueError, match="webhook_secret: not a setting of an open311 connector"):
        ConnectorSpec(kind="open311", endpoint="http://x.test", webhook_secret=SecretRef(env="X"))
    assert WebhookSecrets(SECRET, CONNECTORS).for_department("streets") == department_webhook_secret(SECRET, "streets")
    with pytest.raises(NotByWebhook):
        WebhookSecrets(SECRET, CONNECTORS).for_department("water")


# --- what became of the report ---------------------------------------------------------------------


async def test_a_report_on_a_work_order_not_recorded_yet_is_held_202_so_the_department_does_not_give_up() -> None:
    response = await post(Recorder(Outcome.HELD), body_of("streets"), department_webhook_secret(SECRET, "streets"))
    assert response.status_code == 202 and response.json() == {"outcome": "held"}


async def test_a_report_that_cannot_be_held_now_is_503_with_a_retry_after() -> None:
    response = await post(Recorder(Outcome.HOLD_FULL), body_of("streets"), department_webhook_secret(SECRET, "streets"))
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert "send it again later" in response.json()["error"]


async def test_a_report_stamped_more_than_a_day_ahead_is_400_saying_so() -> None:
    body = body_of("streets", changed_at="2099-01-01T00:00:00Z")
    response = await post(Recorder(Outcome.TOO_FAR_AHEAD), body, department_webhook_secret(SECRET, "streets"))
    assert response.status_code == 400 and "more than a day ahead" in response.json()["error"]


# --- civicflow departments secret ----------------------------------------------------------------------


@pytest.fixture
def city(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    city_file = tmp_path / "city.yaml"
    city_file.write_text(
        "departments:\n"
        "  streets: {name: Streets}\n"
        "  water: {name: Water, connector: {kind: grpc}}\n"
        "  parks: {name: Parks, connector: {kind: rest_webhook, webhook_secret: {env: PARKS_HOOK}}}\n"
    )
    monkeypatch.setenv("CIVICFLOW_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CIVICFLOW_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("CIVICFLOW_CITY_FILE", str(city_file))
    return city_file


def test_the_secret_command_prints_the_departments_derived_secret(city: Path) -> None:
    result = CliRunner().invoke(departments_app, ["secret", "streets"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == department_webhook_secret(SECRET, "streets")


@pytest.mark.parametrize(
    ("department", "says"), [("water", "does not report by webhook"), ("parks", "names its own webhook_secret")]
)
def test_the_secret_command_prints_no_secret_for_a_department_that_has_none_derived(
    city: Path, department: str, says: str
) -> None:
    result = CliRunner().invoke(departments_app, ["secret", department])
    assert result.exit_code == 1 and says in result.output
    assert department_webhook_secret(SECRET, department) not in result.output


def test_the_secret_command_refuses_in_production_without_a_real_bridge_secret(
    city: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICFLOW_ENVIRONMENT", "production")
    monkeypatch.setenv("CIVICFLOW_WEBHOOK_SECRET", "")
    result = CliRunner().invoke(departments_app, ["secret", "streets"])
    assert result.exit_code == 1 and "CIVICFLOW_WEBHOOK_SECRET is empty" in result.output
