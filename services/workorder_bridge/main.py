"""workorder_bridge's process: opens work orders for CaseRouted, records departments' status webhooks."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.consumer import CaseEventConsumer, Inbox
from civicflow.db import make_engine
from civicflow.events import (
    CaseRerouted,
    CaseRouted,
    EventMetadata,
    RecordedEvent,
    RoutingDecision,
    WorkOrderOpened,
    current_service_code,
)
from civicflow.eventstore import EventStore, PostgresEventStore
from civicflow.logging import configure_logging
from civicflow.runtime import ServiceProcess, Task, serve
from civicflow.settings import KernelSettings
from services.workorder_bridge.connector import DepartmentConnector, RestWorkOrderConnector
from services.workorder_bridge.domain import (
    StatusReport,
    events_for_status,
    submission_of,
    work_order_request,
)
from services.workorder_bridge.webhook import WEBHOOK_PATH, Outcome, WebhookServer, create_webhook_app

log = structlog.get_logger(__name__)

SERVICE = "workorder_bridge"
DEV_WEBHOOK_SECRET = "dev-webhook-secret"


class BridgeSettings(KernelSettings):
    bridge_grpc_port: int = 50054
    bridge_http_port: int = 8081
    bridge_http_host: str = "127.0.0.1"
    # where departments call back; empty means http://127.0.0.1:{bridge_http_port}
    bridge_public_url: str = ""
    workorder_base_url: str = "http://127.0.0.1:8090"
    workorder_timeout_seconds: float = 10.0
    webhook_secret: str = DEV_WEBHOOK_SECRET

    @property
    def callback_url(self) -> str:
        base = self.bridge_public_url or f"http://127.0.0.1:{self.bridge_http_port}"
        return base.rstrip("/") + WEBHOOK_PATH


class CaseRoutedHandler:
    """Opens the work order in the department's system, then records it and WorkOrderOpened at once.

    The CaseRouted event id is the Idempotency-Key, so a redelivery, or a crash between the HTTP call and
    the commit, finds the same work order again instead of opening a second one."""

    def __init__(
        self,
        engine: AsyncEngine,
        inbox: Inbox,
        store: EventStore,
        connector: DepartmentConnector,
        callback_url: str,
    ) -> None:
        self._engine = engine
        self._inbox = inbox
        self._store = store
        self._connector = connector
        self._callback_url = callback_url

    async def __call__(self, event: RecordedEvent) -> None:
        assert isinstance(event.data, RoutingDecision)  # CaseRouted or CaseRerouted: a new work order either way
        routed = event.data
        async with self._engine.connect() as conn:
            processed = await conn.scalar(
                text("SELECT 1 FROM workorder_bridge.inbox WHERE event_id = :e"), {"e": event.event_id}
            )
            if processed:
                return  # a redelivery: spare the department a call
            stream = await self._store.read_stream(conn, event.case_id)
        request = work_order_request(
            event.case_id,
            submission_of(stream),
            routed,
            self._callback_url,
            current_service_code(e.data for e in stream),
        )
        opened = await self._connector.open_work_order(routed.department_id, request, str(event.event_id))

        async def record(tx: AsyncConnection) -> None:
            await tx.execute(
                text(
                    "INSERT INTO workorder_bridge.work_orders"
                    " (department_id, external_id, case_id, system, opened_by_event, correlation_id)"
                    " VALUES (:d, :x, :c, :s, :e, :r)"
                ),
                {
                    "d": routed.department_id,
                    "x": opened.external_id,
                    "c": event.case_id,
                    "s": self._connector.system,
                    "e": event.event_id,
                    "r": event.metadata.correlation_id,
                },
            )
            opened_event = WorkOrderOpened(
                department_id=routed.department_id,
                system=self._connector.system,
                external_id=opened.external_id,
            )
            await self._store.append(tx, event.case_id, None, [opened_event], event.caused(SERVICE))

        if await self._inbox.process_once(event, record):
            log.info("work order opened", department_id=routed.department_id, external_id=opened.external_id)


class StatusReportRecorder:
    """Records a department's status report once: the status_updates row and the events in one transaction."""

    def __init__(self, engine: AsyncEngine, store: EventStore) -> None:
        self._engine = engine
        self._store = store

    async def __call__(self, report: StatusReport) -> Outcome:
        async with self._engine.begin() as tx:
            work_order = (
                await tx.execute(
                    text(
                        "SELECT case_id, correlation_id FROM workorder_bridge.work_orders"
                        " WHERE department_id = :d AND external_id = :x"
                    ),
                    {"d": report.department_id, "x": report.external_id},
                )
            ).first()
            if work_order is None:
                return Outcome.UNKNOWN_WORK_ORDER
            first_time = (
                await tx.execute(
                    text(
                        "INSERT INTO workorder_bridge.status_updates"
                        " (department_id, external_id, status, changed_at) VALUES (:d, :x, :s, :t)"
                        " ON CONFLICT DO NOTHING RETURNING status"
                    ),
                    {
                        "d": report.department_id,
                        "x": report.external_id,
                        "s": report.status,
                        "t": report.changed_at,
                    },
                )
            ).first()
            if first_time is None:
                return Outcome.DUPLICATE
            metadata = EventMetadata(
                correlation_id=work_order.correlation_id,
                causation_id=None,
                actor=SERVICE,
                channel="department-system",
            )
            with structlog.contextvars.bound_contextvars(
                case_id=str(work_order.case_id), correlation_id=str(work_order.correlation_id)
            ):
                await self._store.append(
                    tx,
                    work_order.case_id,
                    None,
                    events_for_status(report),
                    metadata,
                    occurred_at=report.changed_at,
                )
                log.info("work order status recorded")
        return Outcome.RECORDED


def close_on_stop(connector: RestWorkOrderConnector) -> Task:
    async def task(stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await connector.aclose()

    return task


def bootstrap(settings: BridgeSettings, connector: DepartmentConnector | None = None) -> ServiceProcess:
    engine = make_engine(settings.database_url)
    store = PostgresEventStore()
    tasks: list[Task] = []
    if connector is None:
        rest = RestWorkOrderConnector(settings.workorder_base_url, timeout_seconds=settings.workorder_timeout_seconds)
        tasks.append(close_on_stop(rest))
        connector = rest
    opener = CaseRoutedHandler(engine, Inbox(engine, SERVICE), store, connector, settings.callback_url)
    consumer = CaseEventConsumer(SERVICE, settings, {CaseRouted.event_type: opener, CaseRerouted.event_type: opener})
    webhooks = create_webhook_app(StatusReportRecorder(engine, store), settings.webhook_secret)
    tasks.append(WebhookServer(webhooks, settings.bridge_http_host, settings.bridge_http_port))
    return ServiceProcess(SERVICE, settings, engine, settings.bridge_grpc_port, consumer=consumer, tasks=tasks)


async def run() -> None:
    settings = BridgeSettings()
    configure_logging(SERVICE, settings.log_level)
    if settings.webhook_secret == DEV_WEBHOOK_SECRET:
        log.warning("webhooks are checked with the development secret; set CIVICFLOW_WEBHOOK_SECRET in production")
    await serve(bootstrap(settings))
