"""The sample department work-order system as a Starlette app: its API and simulated crews (store.py keeps
its work orders, staff.py moves one by hand).

A stand-in for a real department's software, for `civicflow dev` and tests; see the package docstring.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog
import uvicorn
from pydantic import Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from civicflow.department_systems import department_webhook_secret
from civicflow.secrets import UnsafeSecret, shared_secret
from civicflow.settings import KernelSettings
from samples.department_workorders.staff import set_status_by_hand
from samples.department_workorders.store import (
    CANCELLED,
    FINISHED,
    Cancellation,
    IdempotencyKeyReused,
    StatusChange,
    WorkOrder,
    WorkOrderRequest,
    WorkOrderStore,
)

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Civicflow-Signature"
TIMESTAMP_HEADER = "X-Civicflow-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class SampleDepartmentSettings(KernelSettings):
    """Read from CIVICFLOW_SAMPLE_DEPT_* and CIVICFLOW_WEBHOOK_SECRET (and the state folder and environment,
    which decide where a development secret is kept: the bridge on the same folder finds the same one)."""

    sample_dept_port: int = 8090
    sample_dept_step_seconds: float = Field(default=2.0, ge=0)
    sample_dept_callback_attempts: int = Field(default=5, ge=1)
    sample_dept_callback_retry_seconds: float = Field(default=0.5, ge=0)
    webhook_secret: str = ""
    # "department/SERVICE_CODE,…": work orders a department turns down as not theirs (to show rerouting)
    sample_dept_turns_down: str = ""
    # "department,…": departments whose system is out of order: it answers 503 (to show the bridge waiting)
    sample_dept_out_of_order: str = ""

    def signing_secret(self) -> str:
        """The bridge's secret (civicflow.secrets.shared_secret), which this SAMPLE holds only as a development
        convenience: it serves every department, so it derives each one's webhook secret from it. A real
        department's system holds only its own (`civicflow departments secret DEPARTMENT` prints it)."""
        return shared_secret(self, self.webhook_secret, "CIVICFLOW_WEBHOOK_SECRET", "webhook.key")

    def department_secret(self, department_id: str) -> str:
        """What a department's callbacks are signed with: its own webhook secret, as the bridge derives it."""
        return department_webhook_secret(self.signing_secret(), department_id)

    def turns_down(self, department_id: str, service_code: str) -> bool:
        return f"{department_id}/{service_code}" in _listed(self.sample_dept_turns_down)

    def out_of_order(self, department_id: str) -> bool:
        return department_id in _listed(self.sample_dept_out_of_order)


def _listed(setting: str) -> set[str]:
    """The items of a comma-separated setting, trimmed, blanks left out."""
    return {item.strip() for item in setting.split(",") if item.strip()}


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for a callback body sent at `timestamp` (unix seconds): the HMAC of
    "<timestamp>." and the body, so civicflow can refuse an old body replayed."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


# Sends one callback: (url, raw body, headers) -> HTTP status code; raises on a network failure.
CallbackSender = Callable[[str, bytes, Mapping[str, str]], Awaitable[int]]


class HttpCallbackSender:
    def __init__(self, timeout_seconds: float = 5.0) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_seconds)

    async def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        response = await self._client.post(url, content=body, headers=dict(headers))
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()


class Crews:
    """Simulated field crews: move each new work order along and tell the caller at every change. Staff can
    move a work order by hand, or civicflow cancel it: its crew then stops."""

    def __init__(self, store: WorkOrderStore, send: CallbackSender, settings: SampleDepartmentSettings) -> None:
        self._store = store
        self._send = send
        self._settings = settings
        self._secret = settings.signing_secret()
        self._running: set[asyncio.Task[Any]] = set()
        self._crews: dict[str, asyncio.Task[None]] = {}

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def dispatch(self, work_order: WorkOrder) -> None:
        task = asyncio.create_task(self._work(work_order), name=f"crew-{work_order.id}")
        self._crews[work_order.id] = task
        task.add_done_callback(lambda _: self._crews.pop(work_order.id, None))
        self._track(task)

    def recall(self, work_order: WorkOrder) -> None:
        """The crew stops where it is: the work order was cancelled or staff took it in hand."""
        crew = self._crews.pop(work_order.id, None)
        if crew is not None:
            crew.cancel()

    def set_by_hand(self, work_order: WorkOrder, status: str, note: str | None, refers_to: str | None) -> None:
        """Staff moved the work order: the crew stops, and civicflow is told."""
        self.recall(work_order)
        self._store.move(work_order, status, note, refers_to)
        self._tell(work_order)

    def _tell(self, work_order: WorkOrder) -> None:
        change = self._change(work_order)
        self._track(asyncio.create_task(self._call_back(work_order, change), name=f"callback-{work_order.id}"))

    async def _work(self, work_order: WorkOrder) -> None:
        steps: list[tuple[str, str]] = [
            ("in_progress", f"Crew {work_order.crew} on site"),
            ("resolved", f"Repaired by crew {work_order.crew}"),
        ]
        if self._settings.turns_down(work_order.department_id, work_order.request.service_code):
            steps = [
                (
                    "not_our_responsibility",
                    f"Not ours: {work_order.request.service_code} belongs to another department",
                )
            ]
        for status, note in steps:
            await asyncio.sleep(self._settings.sample_dept_step_seconds)
            self._store.move(work_order, status, note)
            await self._call_back(work_order, self._change(work_order))

    def _change(self, work_order: WorkOrder) -> dict[str, Any]:
        """The change as civicflow's webhook takes it, taken when it happens (a later change does not alter it)."""
        return {
            "external_id": work_order.id,
            "department_id": work_order.department_id,
            "status": work_order.status,
            "note": work_order.note,
            "refers_to": work_order.refers_to,
            "update_id": f"{work_order.id}.{work_order.changes}",
            "changed_at": work_order.updated_at.isoformat(),
        }

    async def _call_back(self, work_order: WorkOrder, change: dict[str, Any]) -> bool:
        """POST the change to the callback URL, retrying with backoff a bounded number of times; each attempt
        signed with the time it is sent."""
        body = json.dumps(change).encode()
        url = str(work_order.request.callback_url)
        attempts = self._settings.sample_dept_callback_attempts
        for attempt in range(1, attempts + 1):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(
                    department_webhook_secret(self._secret, work_order.department_id), body, timestamp
                ),
            }
            try:
                status_code = await self._send(url, body, headers)
                if 200 <= status_code < 300:
                    return True
                problem = f"HTTP {status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.warning(
                "callback failed", work_order=work_order.id, status=change["status"], attempt=attempt, problem=problem
            )
            if attempt < attempts:
                await asyncio.sleep(self._settings.sample_dept_callback_retry_seconds * 2 ** (attempt - 1))
        log.error("callback given up", work_order=work_order.id, status=change["status"], attempts=attempts)
        return False

    async def idle(self) -> None:
        """Wait until every crew and callback has finished (for tests and clean shutdown)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def stop(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


def _error(status_code: int, message: str, details: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status_code)


MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    pass


async def _limited_body(request: Request) -> bytes:
    """The body, read no further than MAX_BODY_BYTES (BodyTooLarge beyond: answered 413)."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge
    return bytes(body)


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(map(str, e["loc"])) or "(body)", "message": e["msg"]}
        for e in exc.errors(include_input=False)
    ]


def create_app(
    settings: SampleDepartmentSettings | None = None,
    *,
    send: CallbackSender | None = None,
    store: WorkOrderStore | None = None,
) -> Starlette:
    """The app; tests pass a fake `send` to capture callbacks instead of making HTTP calls."""
    settings = settings or SampleDepartmentSettings()
    store = store or WorkOrderStore()
    owned_sender: HttpCallbackSender | None = None
    if send is None:
        send = owned_sender = HttpCallbackSender()
    crews = Crews(store, send, settings)

    async def open_work_order(request: Request) -> JSONResponse:
        department_id = request.path_params["department_id"]
        if settings.out_of_order(department_id):
            return _error(503, f"the {department_id} work-order system is out of order; try again later")
        key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
        if not key:
            return _error(400, f"the {IDEMPOTENCY_HEADER} header is required: send a unique key per work order")
        if len(key) > 255:
            return _error(400, f"the {IDEMPOTENCY_HEADER} header is longer than 255 characters")
        try:
            body = WorkOrderRequest.model_validate_json(await _limited_body(request))
        except ValidationError as exc:
            return _error(400, "the work order is not valid", _field_errors(exc))
        try:
            work_order, created = store.open(department_id, key, body)
        except IdempotencyKeyReused:
            return _error(
                409,
                f"{IDEMPOTENCY_HEADER} {key!r} was already used for a different work order; use a new key",
            )
        if created:
            crews.dispatch(work_order)
            log.info("work order opened", work_order=work_order.id, department_id=department_id)
        return JSONResponse(work_order.as_json(), status_code=201 if created else 200)

    async def show_work_order(request: Request) -> JSONResponse:
        work_order = store.get(request.path_params["department_id"], request.path_params["work_order_id"])
        if work_order is None:
            return _error(404, "no such work order in this department")
        return JSONResponse(work_order.as_json())

    async def list_work_orders(request: Request) -> JSONResponse:
        found = store.of_department(request.path_params["department_id"])
        return JSONResponse({"work_orders": [w.as_json() for w in found]})

    async def cancel_work_order(request: Request) -> JSONResponse:
        """Idempotent: a cancelled work order answers 200 however often it is cancelled again; one already
        finished another way (resolved, turned down...) cannot be cancelled (409)."""
        department_id = request.path_params["department_id"]
        if settings.out_of_order(department_id):
            return _error(503, f"the {department_id} work-order system is out of order; try again later")
        work_order = store.get(department_id, request.path_params["work_order_id"])
        if work_order is None:
            return _error(404, "no such work order in this department")
        key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
        if not key or len(key) > 255:
            return _error(400, f"the {IDEMPOTENCY_HEADER} header is required (at most 255 characters)")
        try:
            cancellation = Cancellation.model_validate_json(await _limited_body(request))
        except ValidationError as exc:
            return _error(400, "the cancellation is not valid", _field_errors(exc))
        if work_order.status == CANCELLED:
            return JSONResponse(work_order.as_json())
        if work_order.status in FINISHED:
            return _error(409, f"the work order is {work_order.status} already and cannot be cancelled")
        work_order.cancel_reason = cancellation.reason
        crews.set_by_hand(work_order, CANCELLED, f"Cancelled by 311: {cancellation.reason}", None)
        log.info("work order cancelled", work_order=work_order.id, department_id=department_id)
        return JSONResponse(work_order.as_json())

    async def set_status(request: Request) -> JSONResponse:
        """Staff move a work order to any status by hand (for demos and the connector's contract test)."""
        department_id = request.path_params["department_id"]
        work_order = store.get(department_id, request.path_params["work_order_id"])
        if work_order is None:
            return _error(404, "no such work order in this department")
        try:
            change = StatusChange.model_validate_json(await _limited_body(request))
        except ValidationError as exc:
            return _error(400, "the status change is not valid", _field_errors(exc))
        crews.set_by_hand(work_order, change.status, change.note, change.refers_to)
        return JSONResponse(work_order.as_json())

    async def lose_work_order(request: Request) -> JSONResponse:
        """SAMPLE only, to show reconciliation: the system forgets the work order (its crew stops, nothing is
        called back) and the idempotency key that opened it, unless `?keep_key=true`."""
        work_order = store.get(request.path_params["department_id"], request.path_params["work_order_id"])
        if work_order is None:
            return _error(404, "no such work order in this department")
        keep_key = request.query_params.get("keep_key", "false").lower()
        if keep_key not in ("true", "false"):
            return _error(400, "keep_key is true or false")
        crews.recall(work_order)
        store.lose(work_order, keep_key=keep_key == "true")
        log.warning("work order lost on purpose", work_order=work_order.id, keep_key=keep_key)
        return JSONResponse({"lost": work_order.id, "key_kept": keep_key == "true"})

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "work_orders": len(store)})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        yield
        await crews.stop()
        if owned_sender is not None:
            await owned_sender.aclose()

    async def too_large(_: Request, __: Exception) -> JSONResponse:
        return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")

    app = Starlette(
        exception_handlers={BodyTooLarge: too_large},
        routes=[
            Route("/departments/{department_id}/work-orders", open_work_order, methods=["POST"]),
            Route("/departments/{department_id}/work-orders", list_work_orders, methods=["GET"]),
            Route("/departments/{department_id}/work-orders/{work_order_id}", show_work_order, methods=["GET"]),
            Route(
                "/departments/{department_id}/work-orders/{work_order_id}/cancel", cancel_work_order, methods=["POST"]
            ),
            Route("/departments/{department_id}/work-orders/{work_order_id}/status", set_status, methods=["POST"]),
            Route("/departments/{department_id}/work-orders/{work_order_id}/lose", lose_work_order, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.crews = crews
    return app


def main() -> None:
    """Serve the sample department system on 127.0.0.1:$CIVICFLOW_SAMPLE_DEPT_PORT (default 8090); with
    `set-status …`, move one of its work orders by hand instead."""
    if sys.argv[1:2] == ["set-status"]:
        raise SystemExit(set_status_by_hand(sys.argv[2:]))
    settings = SampleDepartmentSettings()
    try:
        app = create_app(settings)
    except UnsafeSecret as exc:
        raise SystemExit(f"sample department: {exc}") from None
    uvicorn.run(app, host="127.0.0.1", port=settings.sample_dept_port, log_level="info")


if __name__ == "__main__":
    main()
