"""workorder_bridge's process: opens work orders for routing decisions (opener.py), records status webhooks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import ClassVar

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.backoff import Backoff
from civicflow.consumer import CaseEventConsumer, Reactions
from civicflow.db import make_engine
from civicflow.department_systems import DEFAULT_CONNECTOR, ConnectorSpec, MissingSecret
from civicflow.events import CaseRerouted, CaseRouted, EventMetadata
from civicflow.eventstore import ConcurrencyConflict, EventStore, PostgresEventStore
from civicflow.http_server import InProcessHttpServer
from civicflow.logging import configure_logging
from civicflow.runtime import ServiceProcess, Task, periodically, serve
from civicflow.secrets import UnsafeSecret, shared_secret
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import UnitOfWork, in_order
from services.workorder_bridge.connector import (
    Connector,
    ConnectorContext,
    DepartmentConnector,
    ExternalUpdate,
    OpenedWorkOrder,
    Outcome,
    RestWorkOrderConnector,
)
from services.workorder_bridge.domain import (
    StatusReport,
    WorkOrderRequest,
    WorkOrderStatus,
    events_for_status,
    report_may_act,
)
from services.workorder_bridge.email_http import email_departments, email_routes
from services.workorder_bridge.kinds import BUILDERS
from services.workorder_bridge.opener import SERVICE, WorkOrderOpener
from services.workorder_bridge.webhook import WEBHOOK_PATH, create_webhook_app

log = structlog.get_logger(__name__)

RECORD_ATTEMPTS = 5
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
    # the email kind (kinds/email.py) and telling departments by email (mailer.py): the city's SMTP server, the
    # address work orders come from and the one replies go to (the inbound relay's; empty: the From address)
    bridge_smtp_host: str = "127.0.0.1"
    bridge_smtp_port: int = 8025
    bridge_smtp_timeout_seconds: float = 15.0
    bridge_mail_from: str = "311 work orders <workorders@civicflow.local>"
    bridge_mail_reply_to: str = ""
    bridge_email_link_days: float = 30.0  # how long a work order's one-click answer links work

    def signing_secret(self) -> str:
        """The secret department webhooks are signed with; UnsafeSecret in production without a real one."""
        return shared_secret(self, self.webhook_secret, WEBHOOK_SECRET_SETTING, WEBHOOK_SECRET_FILE)

    @property
    def callback_url(self) -> str:
        base = self.bridge_public_url or f"http://127.0.0.1:{self.bridge_http_port}"
        return base.rstrip("/") + WEBHOOK_PATH


class StatusReportRecorder:
    """Records a department's status report once: the status_updates row and the events in one transaction.

    A report is a duplicate when it was recorded before (same status and changed_at: a redelivery) or
    when it says nothing new (the latest report's status and note again: a system that stamps a fresh
    time on every resend would otherwise resolve the case twice). A report older than the latest one
    recorded is outdated: it arrived late and would turn a done job back. A reopened job (done, in
    progress, done) is three changes; a new note on the same status is a change. The case is resolved by
    the first `done` only (domain.events_for_status), and only by the work order of the standing routing
    decision (domain.report_may_act): later reports, and reports on replaced work orders, are the work
    order's changes."""

    def __init__(self, engine: AsyncEngine, store: EventStore) -> None:
        self._engine = engine
        self._store = store

    async def __call__(self, report: StatusReport) -> Outcome:
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                return await self._record_once(report)
            except ConcurrencyConflict:
                # Another event reached the case between our read and our append: decide again on it.
                if attempt == RECORD_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _record_once(self, report: StatusReport) -> Outcome:
        async with self._engine.begin() as tx:
            work_order = (
                await tx.execute(
                    text(
                        "SELECT case_id, correlation_id, opened_by_event FROM workorder_bridge.work_orders"
                        " WHERE department_id = :d AND external_id = :x FOR UPDATE"  # one report at a time
                    ),
                    {"d": report.department_id, "x": report.external_id},
                )
            ).first()
            if work_order is None:
                return Outcome.UNKNOWN_WORK_ORDER
            latest = (
                await tx.execute(
                    text(
                        "SELECT status, note, changed_at FROM workorder_bridge.status_updates"
                        " WHERE department_id = :d AND external_id = :x"
                        " ORDER BY changed_at DESC, recorded_at DESC LIMIT 1"
                    ),
                    {"d": report.department_id, "x": report.external_id},
                )
            ).first()
            if latest is not None and (latest.status, latest.note) == (report.status, report.note):
                return Outcome.DUPLICATE
            if latest is not None and report.changed_at < latest.changed_at:
                return Outcome.OUTDATED
            first_time = (
                await tx.execute(
                    text(
                        "INSERT INTO workorder_bridge.status_updates"
                        " (department_id, external_id, status, changed_at, note) VALUES (:d, :x, :s, :t, :n)"
                        " ON CONFLICT DO NOTHING RETURNING status"
                    ),
                    {
                        "d": report.department_id,
                        "x": report.external_id,
                        "s": report.status,
                        "t": report.changed_at,
                        "n": report.note,
                    },
                )
            ).first()
            if first_time is None:
                return Outcome.DUPLICATE
            # The case's other work orders (after a reroute) are not under our row lock: appending at the
            # version we read makes two reports resolving the case at once conflict, and the loser re-reads.
            stream = await self._store.read_stream(tx, work_order.case_id)
            metadata = EventMetadata(
                correlation_id=work_order.correlation_id,
                causation_id=None,
                # who acted: the department's system, known by the webhook's shared secret
                actor=f"department:{report.department_id}",
                channel="department-system",
            )
            with structlog.contextvars.bound_contextvars(
                case_id=str(work_order.case_id), correlation_id=str(work_order.correlation_id)
            ):
                acts = report_may_act(stream, work_order.opened_by_event)
                await self._store.append(
                    tx,
                    work_order.case_id,
                    stream[-1].version if stream else 0,
                    events_for_status(report, acts),
                    metadata,
                    occurred_at=report.changed_at,
                )
                log.info("work order status recorded", acts_on_case=acts)
        return Outcome.RECORDED


class RecordThroughStatusReports:
    """RecordUpdate on StatusReportRecorder, until services/workorder_bridge/updates.py replaces both: their status
    made ours by the department's connector, then told in the webhook's four words (done, rejected, in_progress,
    open); any other status is recorded as in_progress with their word in the note."""

    _OLD_WORDS: ClassVar[dict[str, WorkOrderStatus]] = {
        "resolved": "done",
        "closed": "done",
        "not_our_responsibility": "rejected",
        "open": "open",
    }

    def __init__(self, recorder: StatusReportRecorder, specs: dict[str, ConnectorSpec]) -> None:
        self._recorder = recorder
        self._specs = specs

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        spec = self._specs.get(department_id, DEFAULT_CONNECTOR)
        status = self._OLD_WORDS.get(spec.ours(update.status) or "", "in_progress")
        note = update.note if status != "in_progress" else " ".join(filter(None, [f"{update.status}:", update.note]))
        report = StatusReport(
            external_id=update.external_id,
            department_id=department_id,
            status=status,
            note=note[:2000] if note else None,
            changed_at=update.changed_at,
        )
        return await self._recorder(report)


def close_on_stop(connector: RestWorkOrderConnector) -> Task:
    async def task(stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await connector.aclose()

    return task


class EmailDepartmentsByEmail:
    """The email kind for the city file's email departments and REST for the others, until the opener takes each
    department's own connector from kinds/ (which replaces this)."""

    system = "rest-webhook"

    def __init__(self, rest: DepartmentConnector, emailed: dict[str, Connector]) -> None:
        self._rest = rest
        self._emailed = emailed

    async def open_work_order(
        self, department_id: str, request: WorkOrderRequest, idempotency_key: str
    ) -> OpenedWorkOrder:
        connector = self._emailed.get(department_id)
        if connector is None:
            return await self._rest.open_work_order(department_id, request, idempotency_key)
        return await connector.open_work_order(request, idempotency_key)


def bootstrap(settings: BridgeSettings, connector: DepartmentConnector | None = None) -> ServiceProcess:
    secret = settings.signing_secret()  # first: a bridge without a real secret must not start at all
    engine = make_engine(settings.database_url)
    store = PostgresEventStore()
    tasks: list[Task] = []
    emailed = email_departments(settings.city_file, secret)
    if connector is None:
        rest = RestWorkOrderConnector(settings.workorder_base_url, timeout_seconds=settings.workorder_timeout_seconds)
        tasks.append(close_on_stop(rest))
        public_url = settings.bridge_public_url or f"http://127.0.0.1:{settings.bridge_http_port}"
        by_email = {
            department_id: BUILDERS["email"](
                ConnectorContext(
                    department_id, spec, settings, settings.city_file.parent, settings.callback_url, public_url
                )
            )
            for department_id, spec in emailed.specs.items()
        }
        connector = EmailDepartmentsByEmail(rest, by_email)
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
    webhooks = create_webhook_app(StatusReportRecorder(engine, store), secret)
    # the email kind's replies and answer links (email_http.py)
    record_update = RecordThroughStatusReports(StatusReportRecorder(engine, store), emailed.specs)
    webhooks.router.routes.extend(email_routes(emailed, record_update, secret))
    tasks.append(
        InProcessHttpServer(
            webhooks,
            settings.bridge_http_host,
            settings.bridge_http_port,
            "webhook server",
            "CIVICFLOW_BRIDGE_HTTP_PORT",
        )
    )
    return ServiceProcess(SERVICE, settings, engine, settings.bridge_grpc_port, consumer=consumer, tasks=tasks)


async def run() -> None:
    settings = BridgeSettings()
    configure_logging(SERVICE, settings.log_level)
    try:
        process = bootstrap(settings)
    except (UnsafeSecret, MissingSecret) as exc:
        log.error("refusing to start", error=str(exc))
        raise SystemExit(f"workorder_bridge: {exc}") from None
    await serve(process)
