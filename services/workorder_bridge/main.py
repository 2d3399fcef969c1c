"""workorder_bridge's process: opens work orders for routing decisions (opener.py), records status webhooks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from pydantic import Field

from civicflow.backoff import Backoff
from civicflow.consumer import CaseEventConsumer, Reactions
from civicflow.db import make_engine
from civicflow.events import CaseRerouted, CaseRouted
from civicflow.eventstore import PostgresEventStore
from civicflow.http_server import InProcessHttpServer
from civicflow.logging import configure_logging
from civicflow.runtime import ServiceProcess, Task, periodically, serve
from civicflow.secrets import UnsafeSecret, shared_secret
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import UnitOfWork, in_order
from services.workorder_bridge.connector import DepartmentConnector, RestWorkOrderConnector
from services.workorder_bridge.grpc_api import FeedTiming, WorkOrderSyncServicer, grpc_departments, servicer_entry
from services.workorder_bridge.grpc_outbox import GrpcOutbox
from services.workorder_bridge.opener import SERVICE, WorkOrderOpener
from services.workorder_bridge.updates import UpdateRecorder, city_connectors
from services.workorder_bridge.webhook import WEBHOOK_PATH, create_webhook_app

log = structlog.get_logger(__name__)

WEBHOOK_SECRET_SETTING = "CIVICFLOW_WEBHOOK_SECRET"
WEBHOOK_SECRET_FILE = "webhook.key"


class BridgeSettings(KernelSettings):
    bridge_grpc_port: int = 50054
    bridge_http_port: int = 8081
    bridge_http_host: str = "127.0.0.1"
    # where departments call back; empty means http://127.0.0.1:{bridge_http_port}
    bridge_public_url: str = ""
    workorder_base_url: str = "http://127.0.0.1:8090"
    workorder_timeout_seconds: float = 10.0
    # a department whose system is down: its work orders are parked and tried again, first after
    # retry_first seconds, doubling up to retry_max; the retry task looks for due ones every scan seconds
    workorder_retry_first_seconds: float = 5.0
    workorder_retry_max_seconds: float = 300.0
    workorder_retry_scan_seconds: float = 1.0
    # empty: in development one generated under state_dir and shared with the sample department system;
    # in production the bridge refuses to start (civicflow.secrets)
    webhook_secret: str = ""
    # how far a webhook's X-Civicflow-Timestamp may be from our clock, either way, before it is refused
    webhook_tolerance_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # the grpc connector (WorkOrderSync): how often an open stream looks for new messages, when it sends again
    # what was not acknowledged, and how long after the department's client was last there it counts as down
    workorder_grpc_poll_seconds: float = 0.2
    workorder_grpc_redeliver_seconds: float = 30.0
    workorder_grpc_client_window_seconds: float = 60.0

    def signing_secret(self) -> str:
        """The secret department webhooks are signed with; UnsafeSecret in production without a real one."""
        return shared_secret(self, self.webhook_secret, WEBHOOK_SECRET_SETTING, WEBHOOK_SECRET_FILE)

    @property
    def callback_url(self) -> str:
        base = self.bridge_public_url or f"http://127.0.0.1:{self.bridge_http_port}"
        return base.rstrip("/") + WEBHOOK_PATH


def close_on_stop(connector: RestWorkOrderConnector) -> Task:
    async def task(stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await connector.aclose()

    return task


def bootstrap(settings: BridgeSettings, connector: DepartmentConnector | None = None) -> ServiceProcess:
    secret = settings.signing_secret()  # first: a bridge without a real secret must not start at all
    engine = make_engine(settings.database_url)
    store = PostgresEventStore()
    tasks: list[Task] = []
    if connector is None:
        rest = RestWorkOrderConnector(settings.workorder_base_url, timeout_seconds=settings.workorder_timeout_seconds)
        tasks.append(close_on_stop(rest))
        connector = rest
    backoff = Backoff(settings.workorder_retry_first_seconds, settings.workorder_retry_max_seconds)
    opener = WorkOrderOpener(engine, store, connector, settings.callback_url, backoff)
    retry = periodically(
        settings.workorder_retry_scan_seconds,
        lambda: opener.retry_due(datetime.now(UTC)),
        "retrying parked work orders",
    )
    tasks.append(retry)
    policies = {CaseRouted.event_type: opener, CaseRerouted.event_type: opener}
    reactions = Reactions(frozenset(policies), in_order(policies), UnitOfWork(engine, SERVICE, store))
    consumer = CaseEventConsumer(SERVICE, settings, reactions)
    recorder = UpdateRecorder(engine, store, city_connectors(settings.city_file))
    webhooks = create_webhook_app(recorder, secret, settings.webhook_tolerance_seconds)
    on_grpc = grpc_departments(settings.city_file)
    timing = FeedTiming(
        settings.workorder_grpc_poll_seconds,
        settings.workorder_grpc_redeliver_seconds,
        settings.workorder_grpc_client_window_seconds / 3,
    )
    work_order_sync = WorkOrderSyncServicer(GrpcOutbox(engine), on_grpc, recorder, timing)
    tasks.append(
        InProcessHttpServer(
            webhooks,
            settings.bridge_http_host,
            settings.bridge_http_port,
            "webhook server",
            "CIVICFLOW_BRIDGE_HTTP_PORT",
        )
    )
    return ServiceProcess(
        SERVICE,
        settings,
        engine,
        settings.bridge_grpc_port,
        consumer=consumer,
        servicers=[servicer_entry(work_order_sync)],
        tasks=tasks,
    )


async def run() -> None:
    settings = BridgeSettings()
    configure_logging(SERVICE, settings.log_level)
    try:
        process = bootstrap(settings)
    except UnsafeSecret as exc:
        log.error("refusing to start", error=str(exc))
        raise SystemExit(f"workorder_bridge: {exc}") from None
    await serve(process)
