"""The inbound webhook of the rest_webhook kind: departments' systems POST signed, timestamped status changes
here, in their own words; served by uvicorn in-process."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

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
    secret: str,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The webhook app. A delivery is accepted only signed over its X-Civicflow-Timestamp and body, and only
    within `tolerance_seconds` of our `clock`: a body captured on the way cannot be replayed later, and a
    redelivery made within the window is recorded once anyway (updates.UpdateRecorder)."""

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
        if not signature_is_valid(secret, body, timestamp.strip(), request.headers.get(SIGNATURE_HEADER)):
            log.warning("webhook signature rejected")
            return _error(
                401,
                f"missing or wrong {SIGNATURE_HEADER}: sign '<{TIMESTAMP_HEADER}>.' followed by the raw body with"
                " HMAC-SHA256 and the shared secret",
            )
        try:
            report = StatusReport.model_validate_json(body)
        except ValidationError as exc:
            details = [
                {"field": ".".join(map(str, e["loc"])) or "(body)", "message": e["msg"]}
                for e in exc.errors(include_input=False)
            ]
            return _error(400, "the status report is not valid", details)
        with structlog.contextvars.bound_contextvars(
            external_id=report.external_id, department_id=report.department_id
        ):
            outcome = await record(report.department_id, as_update(report))
            log.info("status report received", outcome=outcome.value)
        if outcome is Outcome.UNKNOWN_WORK_ORDER:
            return _error(404, f"no work order {report.external_id!r} of department {report.department_id!r}")
        return JSONResponse({"outcome": outcome.value})

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, receive_status, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
