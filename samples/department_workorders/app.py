"""The sample department work-order system as a Starlette app: API, in-memory store, simulated crews.

A stand-in for a real department's software, for `civicflow dev` and tests; see the package docstring.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import structlog
import uvicorn
from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from civicflow.secrets import UnsafeSecret, shared_secret
from civicflow.settings import KernelSettings

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Civicflow-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
Status = Literal["open", "in_progress", "done", "rejected"]


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
        """What callbacks are signed with: the bridge's secret (civicflow.secrets.shared_secret)."""
        return shared_secret(self, self.webhook_secret, "CIVICFLOW_WEBHOOK_SECRET", "webhook.key")

    def turns_down(self, department_id: str, service_code: str) -> bool:
        return f"{department_id}/{service_code}" in _listed(self.sample_dept_turns_down)

    def out_of_order(self, department_id: str) -> bool:
        return department_id in _listed(self.sample_dept_out_of_order)


def _listed(setting: str) -> set[str]:
    """The items of a comma-separated setting, trimmed, blanks left out."""
    return {item.strip() for item in setting.split(",") if item.strip()}


class WorkOrderRequest(BaseModel):
    """What a caller sends to open a work order."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    case_id: str = Field(min_length=1, max_length=100)
    tracking_number: str = Field(min_length=1, max_length=100)
    service_code: str = Field(min_length=1, max_length=100)
    summary: str = Field(min_length=1, max_length=2000)
    callback_url: AnyHttpUrl
    due_at: AwareDatetime


@dataclass
class WorkOrder:
    id: str
    department_id: str
    crew: int
    request: WorkOrderRequest
    status: Status = "open"
    note: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "department_id": self.department_id,
            "status": self.status,
            "note": self.note,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            **self.request.model_dump(mode="json"),
        }


class IdempotencyKeyReused(Exception):
    """The key already opened a work order for a different request."""


class WorkOrderStore:
    """The department's work orders, in memory. Opening is atomic: no await between look-up and insert.

    Being a sample, it forgets its work orders when it restarts; their ids carry the run they were
    opened in (WO-<run>-<n>), so a restarted system never hands out an id it handed out before, as a
    real one never would."""

    def __init__(self, crews: int = 6) -> None:
        self._by_id: dict[tuple[str, str], WorkOrder] = {}
        self._by_key: dict[tuple[str, str], tuple[WorkOrderRequest, WorkOrder]] = {}
        self._run = secrets.token_hex(2).upper()
        self._numbers = itertools.count(1)
        self._crews = crews

    def open(self, department_id: str, idempotency_key: str, request: WorkOrderRequest) -> tuple[WorkOrder, bool]:
        """The work order for this key, and whether it was created now."""
        seen = self._by_key.get((department_id, idempotency_key))
        if seen is not None:
            earlier_request, work_order = seen
            if earlier_request != request:
                raise IdempotencyKeyReused(idempotency_key)
            return work_order, False
        number = next(self._numbers)
        work_order = WorkOrder(
            id=f"WO-{self._run}-{number:05d}",
            department_id=department_id,
            crew=1 + number % self._crews,
            request=request,
        )
        self._by_id[(department_id, work_order.id)] = work_order
        self._by_key[(department_id, idempotency_key)] = (request, work_order)
        return work_order, True

    def get(self, department_id: str, work_order_id: str) -> WorkOrder | None:
        return self._by_id.get((department_id, work_order_id))

    def move(self, work_order: WorkOrder, status: Status, note: str) -> None:
        work_order.status = status
        work_order.note = note
        work_order.updated_at = datetime.now(UTC)

    def __len__(self) -> int:
        return len(self._by_id)


def sign(secret: str, body: bytes) -> str:
    """The signature header value for a callback body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


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
    """Simulated field crews: move each new work order along and tell the caller at every change."""

    def __init__(self, store: WorkOrderStore, send: CallbackSender, settings: SampleDepartmentSettings) -> None:
        self._store = store
        self._send = send
        self._settings = settings
        self._secret = settings.signing_secret()
        self._running: set[asyncio.Task[None]] = set()

    def dispatch(self, work_order: WorkOrder) -> None:
        task = asyncio.create_task(self._work(work_order), name=f"crew-{work_order.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _work(self, work_order: WorkOrder) -> None:
        steps: list[tuple[Status, str]] = [
            ("in_progress", f"Crew {work_order.crew} on site"),
            ("done", f"Repaired by crew {work_order.crew}"),
        ]
        if self._settings.turns_down(work_order.department_id, work_order.request.service_code):
            steps = [("rejected", f"Not ours: {work_order.request.service_code} belongs to another department")]
        for status, note in steps:
            await asyncio.sleep(self._settings.sample_dept_step_seconds)
            self._store.move(work_order, status, note)
            await self._call_back(work_order)

    async def _call_back(self, work_order: WorkOrder) -> bool:
        """POST the change to the callback URL, retrying with backoff a bounded number of times."""
        change = {
            "external_id": work_order.id,
            "department_id": work_order.department_id,
            "status": work_order.status,
            "note": work_order.note,
            "changed_at": work_order.updated_at.isoformat(),
        }
        body = json.dumps(change).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
        }
        url = str(work_order.request.callback_url)
        attempts = self._settings.sample_dept_callback_attempts
        for attempt in range(1, attempts + 1):
            try:
                status_code = await self._send(url, body, headers)
                if 200 <= status_code < 300:
                    return True
                problem = f"HTTP {status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.warning(
                "callback failed",
                work_order=work_order.id,
                status=work_order.status,
                attempt=attempt,
                problem=problem,
            )
            if attempt < attempts:
                await asyncio.sleep(self._settings.sample_dept_callback_retry_seconds * 2 ** (attempt - 1))
        log.error("callback given up", work_order=work_order.id, status=work_order.status, attempts=attempts)
        return False

    async def idle(self) -> None:
        """Wait until every crew has finished (for tests and clean shutdown)."""
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
            body = WorkOrderRequest.model_validate_json(await request.body())
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

    @asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        yield
        await crews.stop()
        if owned_sender is not None:
            await owned_sender.aclose()

    app = Starlette(
        routes=[
            Route("/departments/{department_id}/work-orders", open_work_order, methods=["POST"]),
            Route("/departments/{department_id}/work-orders/{work_order_id}", show_work_order, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.crews = crews
    return app


def main() -> None:
    """Serve the sample department system on 127.0.0.1:$CIVICFLOW_SAMPLE_DEPT_PORT (default 8090)."""
    settings = SampleDepartmentSettings()
    try:
        app = create_app(settings)
    except UnsafeSecret as exc:
        raise SystemExit(f"sample department: {exc}") from None
    uvicorn.run(app, host="127.0.0.1", port=settings.sample_dept_port, log_level="info")


if __name__ == "__main__":
    main()
