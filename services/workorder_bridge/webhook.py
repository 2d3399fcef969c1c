"""The inbound webhook: departments' systems POST signed status changes here; served by uvicorn in-process."""

from __future__ import annotations

from typing import Protocol

import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.workorder_bridge.connector import Outcome
from services.workorder_bridge.domain import SIGNATURE_HEADER, StatusReport, signature_is_valid

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/work-orders"
MAX_BODY_BYTES = 64 * 1024


class StatusRecorder(Protocol):
    async def __call__(self, report: StatusReport) -> Outcome: ...


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


def create_webhook_app(record: StatusRecorder, secret: str) -> Starlette:
    async def receive_status(request: Request) -> JSONResponse:
        try:
            body = await read_limited(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes; send one status report per request")
        if not signature_is_valid(secret, body, request.headers.get(SIGNATURE_HEADER)):
            log.warning("webhook signature rejected")
            return _error(
                401,
                f"missing or wrong {SIGNATURE_HEADER}: sign the raw body with HMAC-SHA256 and the shared secret",
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
            external_id=report.external_id, department_id=report.department_id, status=report.status
        ):
            outcome = await record(report)
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
