"""The rest_webhook kind: a department system with a REST API that posts status changes back to our signed webhook.

Its protocol (samples/department_workorders is a real one to try it against):

- ``POST {endpoint}/departments/{department_id}/work-orders`` with ``Idempotency-Key``: opens a work order (201)
  or finds the one that key opened (200); the body is the WorkOrderRequest in their words: their service code
  (the connector's `services`) and only the attributes the connector maps, under their field names;
- ``POST {endpoint}/departments/{department_id}/work-orders/{id}/cancel`` with ``Idempotency-Key`` and
  ``{"reason": …}``: cancels it (200, however often asked);
- ``GET {endpoint}/departments/{department_id}/work-orders/{id}``: the work order as it stands (status, note,
  refers_to, updated_at), 404 when their system does not know it: read back when no news came for too long;
- ``GET {endpoint}/healthz``: answers 200 while the system is up;
- status changes come back to the bridge's webhook (services/workorder_bridge/webhook.py), signed over a
  timestamp and the body, so `updates_since` has nothing to poll.

`endpoint` is the department's, else the city's CIVICFLOW_WORKORDER_BASE_URL; `credentials`, when given, are a
bearer token sent with every call.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from civicflow.department_systems import ConnectorSpec, MissingSecret
from services.workorder_bridge.connector import (
    MISCONFIGURED,
    REFUSALS,
    CannotCancel,
    ConnectorContext,
    ConnectorError,
    DepartmentUnavailable,
    ExternalUpdate,
    Health,
    OpenedWorkOrder,
    UpdatesPage,
    WorkOrderRefused,
)
from services.workorder_bridge.domain import WorkOrderRequest

KIND = "rest_webhook"
# A cancellation their system will not make: it has finished the work order, or does not know it.
CANNOT_CANCEL = frozenset({404, 409, 410})


class RestWebhookConnector:
    """One department's REST work-order system (see the module docstring for the protocol)."""

    kind = KIND

    def __init__(
        self,
        department_id: str,
        spec: ConnectorSpec,
        endpoint: str,
        *,
        timeout_seconds: float,
        token: str | None = None,
        callback_url: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.department_id = department_id
        self.spec = spec
        self._callback_url = callback_url
        self._endpoint = endpoint.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = client or httpx.AsyncClient(timeout=timeout_seconds)
        self._headers = headers
        self._owns_client = client is None

    @property
    def _work_orders(self) -> str:
        return f"{self._endpoint}/departments/{quote(self.department_id, safe='')}/work-orders"

    def body(self, request: WorkOrderRequest) -> dict[str, Any]:
        """The request in their words: their service code, and only the attributes they map, as they name them;
        their system calls back to the bridge's webhook this connector was built with (else the request's)."""
        body = request.model_dump(mode="json", exclude={"attributes"})
        body["service_code"] = self.spec.their_service(request.service_code)
        if self._callback_url:
            body["callback_url"] = self._callback_url
        attributes = {
            their: request.attributes[ours]
            for ours, their in self.spec.attributes.items()
            if ours in request.attributes
        }
        if attributes:
            body["attributes"] = attributes
        return body

    async def _post(self, url: str, body: dict[str, Any], idempotency_key: str) -> httpx.Response:
        headers = {**self._headers, "Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        try:
            return await self._client.post(url, content=json.dumps(body).encode(), headers=headers)
        except httpx.HTTPError as exc:
            raise DepartmentUnavailable(f"{self.department_id}: {url} did not answer ({type(exc).__name__})") from exc

    def _unavailable(self, url: str, status_code: int) -> DepartmentUnavailable:
        hint = "" if status_code >= 500 or status_code in (408, 429) else MISCONFIGURED
        return DepartmentUnavailable(f"{self.department_id}: {url} answered HTTP {status_code}{hint}")

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder:
        url = self._work_orders
        response = await self._post(url, self.body(request), idempotency_key)
        if response.status_code in REFUSALS:
            # Not the body: a department's error message may echo what it was sent, and this text reaches
            # logs and the case's history.
            raise WorkOrderRefused(self.department_id, response.status_code)
        if response.status_code not in (200, 201):
            raise self._unavailable(url, response.status_code)
        try:
            answer = response.json()
            return OpenedWorkOrder(external_id=str(answer["id"]), status=str(answer.get("status", "open")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectorError(f"{self.department_id}: {url} answered without a work order id") from exc

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None:
        url = f"{self._work_orders}/{quote(external_id, safe='')}/cancel"
        response = await self._post(url, {"reason": reason}, idempotency_key)
        if response.status_code in (200, 201, 202, 204):
            return
        if response.status_code in CANNOT_CANCEL:
            raise CannotCancel(
                f"{self.department_id}: their system will not cancel work order {external_id}"
                f" (HTTP {response.status_code}: finished already, or unknown to it)"
            )
        if response.status_code in REFUSALS:
            # it read the cancellation and will not make it: asking again will not help, so the department is told
            # by its channel (cancellation.py), never parked as if its system were down
            raise WorkOrderRefused(self.department_id, response.status_code)
        raise self._unavailable(url, response.status_code)

    async def updates_since(self, cursor: str | None) -> UpdatesPage:
        """Nothing to poll: their system posts each change to our webhook."""
        return UpdatesPage(updates=[], cursor=cursor)

    async def read_work_order(self, external_id: str) -> ExternalUpdate | None:
        """The work order as their system shows it now (GET …/work-orders/{id}); None on 404, which this protocol
        answers for a work order it does not know (not for a wrong address: the department's base path answers
        404 for no other reason while healthz answers)."""
        url = f"{self._work_orders}/{quote(external_id, safe='')}"
        try:
            response = await self._client.get(url, headers=self._headers)
        except httpx.HTTPError as exc:
            raise DepartmentUnavailable(f"{self.department_id}: {url} did not answer ({type(exc).__name__})") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._unavailable(url, response.status_code)
        try:
            shown = response.json()
            status = shown["status"]
            changed_at = datetime.fromisoformat(shown["updated_at"])
            note, refers_to = shown.get("note"), shown.get("refers_to")
            if not isinstance(status, str) or not status or changed_at.tzinfo is None:
                raise ValueError("no status, or a time without a zone")
            if not isinstance(note, str | None) or not isinstance(refers_to, str | None):
                raise ValueError("note or refers_to is not text")
        except (ValueError, KeyError, TypeError) as exc:
            raise DepartmentUnavailable(
                f"{self.department_id}: {url} answered with no readable work order ({type(exc).__name__})"
            ) from exc
        return ExternalUpdate(
            external_id=external_id, status=status, changed_at=changed_at, note=note, refers_to=refers_to
        )

    async def health(self) -> Health:
        url = f"{self._endpoint}/healthz"
        try:
            response = await self._client.get(url, headers=self._headers)
        except httpx.HTTPError as exc:
            return Health(up=False, detail=f"{url} did not answer ({type(exc).__name__})")
        if response.status_code != 200:
            return Health(up=False, detail=f"{url} answered HTTP {response.status_code}")
        return Health(up=True, detail=f"{url} answered")

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def build(context: ConnectorContext) -> RestWebhookConnector:
    """The department's connector: its endpoint (else the city's work-order base URL), its timeout (else the
    city's), its bearer token when it names one. A token reference that names nothing is a MissingSecret: the
    department is misconfigured, and saying so at start beats a 401 on every work order."""
    spec = context.spec
    settings = context.settings
    endpoint = spec.endpoint or settings.workorder_base_url
    timeout = spec.timeout_seconds if "timeout_seconds" in spec.model_fields_set else settings.workorder_timeout_seconds
    token = None
    if spec.credentials is not None:
        try:
            token = spec.credentials.resolve(context.city_dir)
        except MissingSecret as exc:
            raise MissingSecret(f"departments.{context.department_id}.connector.credentials: {exc}") from None
    return RestWebhookConnector(
        context.department_id,
        spec,
        endpoint,
        timeout_seconds=timeout,
        token=token,
        callback_url=context.callback_url,
    )
