"""The inbound webhook of the rest_webhook kind: departments' systems POST signed, timestamped status changes
here, in their own words; served by uvicorn in-process.

Each department signs with a secret of its own (`WebhookSecrets`): its connector's `webhook_secret`, else one
derived from the bridge's signing secret for it (civicflow.department_systems.department_webhook_secret), so no
department's system can sign a report for another's work orders."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from civicflow.department_systems import ConnectorSpec, MissingSecret, department_webhook_secret
from services.workorder_bridge.connector import ExternalUpdate, Outcome, RecordUpdate
from services.workorder_bridge.domain import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    StatusReport,
    signature_is_valid,
    timestamp_problem,
)

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/work-orders"
MAX_BODY_BYTES = 64 * 1024
DEFAULT_TOLERANCE_SECONDS = 300.0
RETRY_AFTER_SECONDS = 300
MAX_DEPARTMENT_CHARS = 100


class NotByWebhook(LookupError):
    """The department named is not on the rest_webhook kind: its system reports another way."""


class NoWebhookSecret(LookupError):
    """The department's connector names a webhook_secret that is not set: the bridge cannot check its reports."""


class WebhookSecrets:
    """The secret each department's webhook deliveries are signed with.

    A department on rest_webhook (in the city file, or any department it does not name: the default kind) signs
    with its connector's `webhook_secret`, else with `department_webhook_secret(signing secret, department)`; a
    department on another kind does not report here at all."""

    def __init__(
        self,
        signing_secret: str,
        connectors: Mapping[str, ConnectorSpec] | None = None,
        city_dir: Path | None = None,
    ) -> None:
        self._signing_secret = signing_secret
        self._kinds = {d: spec.kind for d, spec in (connectors or {}).items()}
        self._own: dict[str, str | None] = {}
        for department_id, spec in (connectors or {}).items():
            if spec.kind == "rest_webhook" and spec.webhook_secret is not None:
                try:
                    self._own[department_id] = spec.webhook_secret.resolve(city_dir)
                except MissingSecret as exc:
                    # said at start; its reports are refused until it is set (the others are checked as ever)
                    log.error(
                        "a department's webhook secret is not set; its status reports are refused",
                        department_id=department_id,
                        problem=f"departments.{department_id}.connector.webhook_secret: {exc}",
                    )
                    self._own[department_id] = None

    def for_department(self, department_id: str) -> str:
        """The department's secret; NotByWebhook or NoWebhookSecret when it has none to check a report by."""
        kind = self._kinds.get(department_id, "rest_webhook")
        if kind != "rest_webhook":
            raise NotByWebhook(f"{department_id} does not report by webhook (its connector is {kind})")
        if department_id in self._own:
            own = self._own[department_id]
            if own is None:
                raise NoWebhookSecret(
                    f"civicflow cannot check {department_id}'s reports: its connector's webhook_secret is not set;"
                    " report again once the city's operator has set it"
                )
            return own
        return department_webhook_secret(self._signing_secret, department_id)


def named_department(body: bytes) -> str | None:
    """The department_id a body names (as the status report will read it), before the body is trusted: which
    secret it must be signed with. None when it names none."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    department = data.get("department_id") if isinstance(data, dict) else None
    if not isinstance(department, str) or not 0 < len(department.strip()) <= MAX_DEPARTMENT_CHARS:
        return None
    return department.strip()


def _error(status_code: int, message: str, details: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, object] = {"error": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status_code)


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, or BodyTooLarge as soon as it is known to exceed limit: a declared Content-Length over it
    is refused unread, and a body without one (or longer than it said) is read no further than the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def answer_for(outcome: Outcome, external_id: str, department_id: str) -> JSONResponse:
    """What a department's system is answered for what became of its report: 200 recorded (or a duplicate, or
    outdated), 202 held until the work order is recorded, 503 with Retry-After when it cannot be held now, 400 for
    a time far ahead."""
    if outcome is Outcome.HELD:
        return JSONResponse({"outcome": outcome.value}, status_code=202)
    if outcome is Outcome.HOLD_FULL:
        response = _error(
            503,
            f"work order {external_id!r} is not recorded yet and civicflow holds no more reports for department"
            f" {department_id!r} now; send it again later",
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if outcome is Outcome.TOO_FAR_AHEAD:
        return _error(
            400,
            "changed_at is more than a day ahead of civicflow's clock: send when the status changed in your system,"
            " with its zone (and check your system's clock)",
        )
    if outcome is Outcome.UNKNOWN_WORK_ORDER:
        return _error(404, f"no work order {external_id!r} of department {department_id!r}")
    return JSONResponse({"outcome": outcome.value})


def as_update(report: StatusReport) -> ExternalUpdate:
    return ExternalUpdate(
        external_id=report.external_id,
        status=report.status,
        changed_at=report.changed_at,
        note=report.note,
        update_id=report.update_id,
        refers_to=report.refers_to,
    )


def create_webhook_app(
    record: RecordUpdate,
    secrets: WebhookSecrets,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The webhook app. A delivery is accepted only signed over its X-Civicflow-Timestamp and body with the secret
    of the department it names, and only within `tolerance_seconds` of our `clock`: a body captured on the way
    cannot be replayed later, and a redelivery made within the window is recorded once anyway
    (updates.UpdateRecorder). A report on a work order not recorded yet is held (202), not refused: the
    department's system would give up on it."""

    async def receive_status(request: Request) -> JSONResponse:
        try:
            body = await read_limited(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes; send one status report per request")
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        problem = timestamp_problem(timestamp, clock(), tolerance_seconds)
        if problem is not None:
            log.warning("webhook timestamp refused")
            return _error(401, problem)
        assert timestamp is not None
        department_id = named_department(body)
        if department_id is None:
            said = "is required: the department whose work order it is (its webhook secret signs the report)"
            return _error(400, "the status report is not valid", [{"field": "department_id", "message": said}])
        try:
            secret = secrets.for_department(department_id)
        except NotByWebhook as exc:
            log.warning("webhook report for a department that does not report by webhook", department_id=department_id)
            return _error(403, str(exc))
        except NoWebhookSecret as exc:
            return _error(503, str(exc))
        if not signature_is_valid(secret, body, timestamp.strip(), request.headers.get(SIGNATURE_HEADER)):
            log.warning("webhook signature rejected", department_id=department_id)
            return _error(
                401,
                f"missing or wrong {SIGNATURE_HEADER}: sign '<{TIMESTAMP_HEADER}>.' followed by the raw body with"
                " HMAC-SHA256 and the webhook secret of the department the report names",
            )
        try:
            report = StatusReport.model_validate_json(body)
        except ValidationError as exc:
            details = [
                {"field": ".".join(map(str, e["loc"])) or "(body)", "message": e["msg"]}
                for e in exc.errors(include_input=False)
            ]
            return _error(400, "the status report is not valid", details)
        if report.department_id != department_id:  # cannot happen (both strip the same string); never trust it
            return _error(400, "the status report is not valid")
        with structlog.contextvars.bound_contextvars(
            external_id=report.external_id, department_id=report.department_id
        ):
            outcome = await record(report.department_id, as_update(report))
            log.info("status report received", outcome=outcome.value)
        return answer_for(outcome, report.external_id, report.department_id)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, receive_status, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
