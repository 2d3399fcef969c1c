"""Department connectors: how a work order is opened in a department's own system (REST for now)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

from services.workorder_bridge.domain import WorkOrderRequest


@dataclass(frozen=True)
class OpenedWorkOrder:
    external_id: str
    status: str


# The answers that mean the department's system read the work order and will not take it.
REFUSALS = frozenset({400, 409, 422})
MISCONFIGURED = "; check CIVICFLOW_WORKORDER_BASE_URL and the department system's credentials"


class ConnectorError(Exception):
    """Opening a work order failed."""


class DepartmentUnavailable(ConnectorError):
    """The department's system did not answer, failed, or cannot be reached as configured (network error,
    timeout, 5xx, 429, 408; a redirect, 401, 403 or 404 means our address or credentials are wrong): try
    again later (the bridge parks the work order and retries it, see opener.py)."""


class WorkOrderRefused(ConnectorError):
    """The department's system read this work order and will not take it (400, 409, 422); retrying will
    not help, so the bridge tells the router the department turned the case down (see opener.py)."""

    def __init__(self, department_id: str, status_code: int) -> None:
        super().__init__(f"{department_id}: the work-order system refused the work order with HTTP {status_code}")
        self.status_code = status_code


class DepartmentConnector(Protocol):
    system: str

    async def open_work_order(
        self, department_id: str, request: WorkOrderRequest, idempotency_key: str
    ) -> OpenedWorkOrder: ...


class RestWorkOrderConnector:
    """Opens work orders with POST {base}/departments/{department_id}/work-orders, idempotently:
    the same key always names the same work order, so a retry never opens a second one."""

    system = "rest-webhook"

    def __init__(self, base_url: str, *, timeout_seconds: float = 10.0, client: httpx.AsyncClient | None = None):
        self._base_url = base_url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=timeout_seconds)

    async def open_work_order(
        self, department_id: str, request: WorkOrderRequest, idempotency_key: str
    ) -> OpenedWorkOrder:
        url = f"{self._base_url}/departments/{department_id}/work-orders"
        try:
            response = await self._client.post(
                url,
                content=request.model_dump_json(),
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": idempotency_key,
                },
            )
        except httpx.HTTPError as exc:
            raise DepartmentUnavailable(f"{department_id}: {url} did not answer ({type(exc).__name__})") from exc
        if response.status_code in REFUSALS:
            # Not the body: a department's error message may echo what it was sent, and this text reaches
            # logs and the case's history.
            raise WorkOrderRefused(department_id, response.status_code)
        if response.status_code not in (200, 201):
            hint = "" if response.status_code >= 500 or response.status_code in (408, 429) else MISCONFIGURED
            raise DepartmentUnavailable(f"{department_id}: {url} answered HTTP {response.status_code}{hint}")
        try:
            body = response.json()
            return OpenedWorkOrder(external_id=str(body["id"]), status=str(body.get("status", "open")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectorError(f"{department_id}: {url} answered without a work order id") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
