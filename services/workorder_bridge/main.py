"""workorder_bridge's process: opens work orders for routing decisions (opener.py) through each department's
connector (connectors.py), cancels the ones a case moved on from (cancellation.py), polls the systems that are
polled (poller.py), keeps each department's health (health.py), records status webhooks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from pydantic import Field

from civicflow.backoff import Backoff
from civicflow.consumer import CaseEventConsumer, Reactions
from civicflow.db import make_engine
from civicflow.department_systems import MissingSecret
from civicflow.events import CaseNeedsTriage, CaseRerouted, CaseResolved, CaseRouted
from civicflow.eventstore import PostgresEventStore
from civicflow.http_server import InProcessHttpServer
from civicflow.logging import configure_logging
from civicflow.runtime import ServiceProcess, Task, periodically, serve
from civicflow.secrets import UnsafeSecret, shared_secret
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import Policy, UnitOfWork, in_order, together
from services.workorder_bridge.cancellation import TellDepartment, WorkOrderCanceller
from services.workorder_bridge.connector import RecordUpdate
from services.workorder_bridge.connectors import CityFileUnreadable, DepartmentSystems, systems_from_city
from services.workorder_bridge.email_http import EmailDepartments, email_routes
from services.workorder_bridge.grpc_api import FeedTiming, WorkOrderSyncServicer, servicer_entry
from services.workorder_bridge.grpc_outbox import GrpcOutbox
from services.workorder_bridge.health import HealthBook, refresh_gauges
from services.workorder_bridge.kinds.open311 import Open311Connector
from services.workorder_bridge.mailer import mail_department
from services.workorder_bridge.opener import SERVICE, WorkOrderOpener
from services.workorder_bridge.poller import Poller, open_work_orders_of
from services.workorder_bridge.reconcile import Reconciler, supervisor_queues
from services.workorder_bridge.updates import UpdateRecorder
from services.workorder_bridge.webhook import WEBHOOK_PATH, WebhookSecrets, create_webhook_app

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
    # how often quiet work orders are looked for and read back from their systems (reconcile.py; each department's
    # reconcile_after_minutes says when a work order is quiet)
    workorder_reconcile_scan_seconds: float = Field(default=60.0, gt=0)
    # every department's system is asked whether it answers this often (departments status, the up metric);
    # what calls find is written to the health table every flush seconds
    workorder_health_scan_seconds: float = 30.0
    workorder_health_flush_seconds: float = 1.0
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
    # development only: where the SAMPLE Open311 server listens when not on its default port (the launcher's free
    # ports); an open311 endpoint naming the default (http://127.0.0.1:8096) goes there (kinds/open311.py)
    open311_sample_url: str = ""
    # the email kind (kinds/email.py) and telling departments by email (mailer.py): the city's SMTP server, the
    # address work orders come from and the one replies go to (the inbound relay's; empty: the From address)
    bridge_smtp_host: str = "127.0.0.1"
    bridge_smtp_port: int = 8025
    bridge_smtp_timeout_seconds: float = 15.0
    bridge_mail_from: str = "311 work orders <workorders@civicflow.local>"
    bridge_mail_reply_to: str = ""
    bridge_email_link_days: float = 30.0  # how long a work order's one-click answer links work
    # status updates for work orders not recorded yet (updates.py): how often held ones are looked at, how long one
    # is kept for a work order that never comes, and how many a department may have waiting
    workorder_held_scan_seconds: float = Field(default=2.0, gt=0)
    workorder_held_days: float = Field(default=7.0, gt=0)
    workorder_held_max_per_department: int = Field(default=10_000, ge=1)

    def signing_secret(self) -> str:
        """The secret department webhooks are signed with; UnsafeSecret in production without a real one."""
        return shared_secret(self, self.webhook_secret, WEBHOOK_SECRET_SETTING, WEBHOOK_SECRET_FILE)

    @property
    def public_url(self) -> str:
        return (self.bridge_public_url or f"http://127.0.0.1:{self.bridge_http_port}").rstrip("/")

    @property
    def callback_url(self) -> str:
        return self.public_url + WEBHOOK_PATH


def close_on_stop(departments: DepartmentSystems) -> Task:
    async def task(stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await departments.aclose()

    return task


def bootstrap(
    settings: BridgeSettings,
    departments: DepartmentSystems | None = None,
    tell: TellDepartment | None = None,
    record_update: RecordUpdate | None = None,
) -> ServiceProcess:
    secret = settings.signing_secret()  # first: a bridge without a real secret must not start at all
    engine = make_engine(settings.database_url)
    store = PostgresEventStore()
    if departments is None:
        departments = systems_from_city(settings, settings.city_file, settings.callback_url, settings.public_url)
    systems = departments
    tasks: list[Task] = [close_on_stop(systems)]
    health = HealthBook()
    emailed = EmailDepartments.of(systems.specs(), secret, settings.city_file.parent)
    backoff = Backoff(settings.workorder_retry_first_seconds, settings.workorder_retry_max_seconds)
    opener = WorkOrderOpener(engine, store, systems, settings.callback_url, backoff, health=health)
    canceller = WorkOrderCanceller(engine, store, systems, tell or mail_department(settings), backoff, health=health)
    held = UpdateRecorder(
        engine,
        store,
        systems.specs(),
        hold_max=settings.workorder_held_max_per_department,
        hold_days=settings.workorder_held_days,
    )
    recorder = record_update or held
    poller = Poller(engine, systems.polled(), recorder, health)
    queues = supervisor_queues(settings.city_file)
    reconciler = Reconciler(engine, store, systems, recorder, opener, queues, health)
    for department_id in systems.departments():
        connector = systems.for_department(department_id)
        if isinstance(connector, Open311Connector):  # read by id where their system has no updates feed
            connector.open_work_orders = open_work_orders_of(engine, department_id, systems.spec(department_id))

    async def keep_health() -> None:
        await health.flush(engine)
        kinds = {d: systems.for_department(d).kind for d in systems.departments()}
        await refresh_gauges(engine, kinds, datetime.now(UTC))

    async def probe() -> None:
        await health.probe([systems.for_department(d) for d in systems.departments()])

    scan = settings.workorder_retry_scan_seconds
    tasks += [
        periodically(scan, lambda: opener.retry_due(datetime.now(UTC)), "retrying parked work orders"),
        periodically(scan, lambda: canceller.retry_due(datetime.now(UTC)), "retrying parked cancellations"),
        periodically(settings.workorder_held_scan_seconds, held.apply_held, "applying held status updates"),
        periodically(
            settings.workorder_reconcile_scan_seconds,
            lambda: reconciler.reconcile_due(datetime.now(UTC)),
            "reading back quiet work orders",
        ),
        periodically(settings.workorder_health_scan_seconds, probe, "probing departments' systems"),
        periodically(settings.workorder_health_flush_seconds, keep_health, "recording departments' health"),
        poller.run,
    ]
    policies: dict[str, Policy] = {
        CaseRouted.event_type: opener,
        CaseRerouted.event_type: together(opener, canceller),
        CaseNeedsTriage.event_type: canceller,
        CaseResolved.event_type: canceller,
    }
    reactions = Reactions(frozenset(policies), in_order(policies), UnitOfWork(engine, SERVICE, store))
    consumer = CaseEventConsumer(SERVICE, settings, reactions)
    webhook_secrets = WebhookSecrets(secret, systems.specs(), settings.city_file.parent)
    webhooks = create_webhook_app(recorder, webhook_secrets, settings.webhook_tolerance_seconds)
    on_grpc = {d: spec for d, spec in systems.specs().items() if spec.kind == "grpc"}
    timing = FeedTiming(
        settings.workorder_grpc_poll_seconds,
        settings.workorder_grpc_redeliver_seconds,
        settings.workorder_grpc_client_window_seconds / 3,
    )
    work_order_sync = WorkOrderSyncServicer(GrpcOutbox(engine), on_grpc, recorder, timing)
    # the email kind's replies and answer links (email_http.py)
    webhooks.router.routes.extend(email_routes(emailed, recorder, secret))
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
    except (UnsafeSecret, CityFileUnreadable, MissingSecret) as exc:
        log.error("refusing to start", error=str(exc))
        raise SystemExit(f"workorder_bridge: {exc}") from None
    await serve(process)
