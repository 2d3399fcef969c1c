"""The grpc connector kind: a department whose own integration pulls its work orders from civicflow.

Nothing is called out: opening a work order writes it to the department's feed (grpc_outbox.py), which the
department's client reads through WorkOrderSync.WorkOrders (grpc_api.py) and acknowledges; its status comes
back on WorkOrderSync.ReportStatus (push), so updates_since has nothing to poll. Its health is whether the
client has been there lately: a system that pulls is down for us when it stops pulling.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.db import make_engine
from civicflow.department_systems import ConnectorSpec
from services.workorder_bridge.connector import (
    CannotRead,
    Connector,
    ConnectorContext,
    ExternalUpdate,
    Health,
    OpenedWorkOrder,
    UpdatesPage,
)
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.grpc_outbox import GrpcOutbox, new_external_id

Clock = Callable[[], datetime]
DEFAULT_CLIENT_WINDOW_SECONDS = 60.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def work_order_body(spec: ConnectorSpec, request: WorkOrderRequest) -> dict[str, Any]:
    """What the department's client is sent for a work order, in its own service code and field names. The
    callback URL is not sent: its reports go to ReportStatus."""
    priority = request.priority
    answers = request.attributes
    return {
        "tracking_number": request.tracking_number,
        "service_code": spec.their_service(request.service_code),
        "summary": request.summary,
        "due_at": request.due_at.isoformat() if request.due_at else None,
        "priority": str(priority) if priority else "",
        "attributes": {spec.attributes[code]: str(value) for code, value in answers.items() if code in spec.attributes},
    }


class GrpcConnector:
    kind = "grpc"

    def __init__(
        self,
        department_id: str,
        spec: ConnectorSpec,
        outbox: GrpcOutbox,
        *,
        client_window_seconds: float = DEFAULT_CLIENT_WINDOW_SECONDS,
        clock: Clock = utc_now,
        engine: AsyncEngine | None = None,  # disposed of by aclose, when the connector made it
    ) -> None:
        self.department_id = department_id
        self.spec = spec
        self._outbox = outbox
        self._window = client_window_seconds
        self._clock = clock
        self._engine = engine

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder:
        """On the department's feed once per key: the same key finds the same work order (and external id)."""
        message = await self._outbox.put(
            self.department_id,
            "work_order",
            idempotency_key,
            new_external_id(),
            work_order_body(self.spec, request),
        )
        return OpenedWorkOrder(external_id=message.external_id, status="open")

    async def find_by_key(self, idempotency_key: str) -> OpenedWorkOrder | None:
        """The work order our key put on the department's feed, if any (connector.FindsByKey)."""
        message = await self._outbox.work_order_by_key(self.department_id, idempotency_key)
        return None if message is None else OpenedWorkOrder(external_id=message.external_id, status="open")

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None:
        """On the feed once per work order, however often or with whatever key it is asked again."""
        await self._outbox.put(self.department_id, "cancellation", idempotency_key, external_id, {"reason": reason})

    async def updates_since(self, cursor: str | None) -> UpdatesPage:
        return UpdatesPage(updates=[], cursor=cursor)  # pushed to ReportStatus; nothing to poll

    async def read_work_order(self, external_id: str) -> ExternalUpdate | None:
        """Nothing to ask: the outbox knows only what we sent (and whether it was acknowledged), not how the job
        stands in their system; their client reports that to ReportStatus or not at all."""
        raise CannotRead(
            f"{self.department_id}: a grpc department's work orders cannot be read back (it pulls; we never call it)"
        )

    async def health(self) -> Health:
        try:
            feed = await self._outbox.feed(self.department_id)
        except Exception as exc:  # our database, not theirs: say so rather than fail the status page
            return Health(False, f"cannot read the department's feed ({type(exc).__name__})")
        behind = feed.latest - feed.acknowledged
        waiting = f"; {behind} message(s) not yet acknowledged" if behind else ""
        if feed.last_seen_at is None:
            return Health(False, f"no client has connected yet{waiting}")
        age = max(0.0, (self._clock() - feed.last_seen_at).total_seconds())
        if age > self._window:
            return Health(False, f"no client connected for {age:.0f} s{waiting}")
        return Health(True, f"client seen {age:.0f} s ago{waiting}")

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()


def build(context: ConnectorContext) -> Connector:
    """One department's grpc connector, on an engine of its own (the feed is small work: two connections)."""
    engine = make_engine(context.settings.database_url, pool_size=2)
    window = getattr(context.settings, "workorder_grpc_client_window_seconds", DEFAULT_CLIENT_WINDOW_SECONDS)
    outbox = GrpcOutbox(engine)
    return GrpcConnector(context.department_id, context.spec, outbox, client_window_seconds=window, engine=engine)
