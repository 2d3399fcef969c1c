"""gRPC WorkOrderSync: a department's own system pulls its feed of work orders and cancellations, acknowledges
what it stored, and reports status, which is handed to the bridge's RecordUpdate in the department's words.

Who may act for a department: a key with the scope `workorders:<department_id>` (and, where the city file's
connector names a `key_id`, that key only), checked on every call before anything about the request is
looked at, so another department's key learns nothing but "not yours".
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from civicflow.access import CALLER
from civicflow.apikeys import department_scope
from civicflow.codes import CODE
from civicflow.department_systems import OUR_STATUSES, ConnectorSpec
from civicflow.grpc_errors import abort_with, invalid_argument
from civicflow.v1 import work_orders_pb2, work_orders_pb2_grpc
from services.workorder_bridge.connector import ExternalUpdate, Outcome, RecordUpdate
from services.workorder_bridge.grpc_outbox import BeyondTheFeed, FeedMessage, GrpcOutbox

log = structlog.get_logger(__name__)

SERVICE_NAME = "civicflow.v1.WorkOrderSync"
Clock = Callable[[], datetime]
Violations = list[tuple[str, str]]

MAX_NOTE_CHARS = 2000
MAX_ID_CHARS = 100
MAX_STATUS_CHARS = 64
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MOST_AHEAD = timedelta(days=1)  # a department's clock a little ahead of ours is fine; a year is a mistake
MAX_SEQUENCE = 2**63 - 1  # PostgreSQL's bigint
BATCH = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # a note may have lines and tabs

OUR_STATUS_OF: dict[int, str] = {
    work_orders_pb2.WorkOrderStatus.Value(f"WORK_ORDER_STATUS_{ours.upper()}"): ours for ours in OUR_STATUSES
}
OUTCOMES = {
    Outcome.RECORDED: work_orders_pb2.ReportStatusResponse.OUTCOME_RECORDED,
    Outcome.DUPLICATE: work_orders_pb2.ReportStatusResponse.OUTCOME_DUPLICATE,
    Outcome.OUTDATED: work_orders_pb2.ReportStatusResponse.OUTCOME_OUTDATED,
    Outcome.HELD: work_orders_pb2.ReportStatusResponse.OUTCOME_HELD,
}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FeedTiming:
    """How an open WorkOrders stream behaves: how often it looks for new messages, when it sends again what
    was not acknowledged, and how often it marks the client as there (the connector's health)."""

    poll_seconds: float = 0.2
    redeliver_seconds: float = 30.0
    heartbeat_seconds: float = 20.0


def _text_problem(value: str, limit: int, *, lines: bool = False) -> str | None:
    if len(value) > limit:
        return f"is {len(value)} characters; at most {limit}"
    if (_CONTROL_IN_TEXT if lines else _CONTROL).search(value):
        return "has control characters (NUL, escapes); send plain text"
    return None


def _timestamp_problem(stamp: Timestamp, now: datetime) -> str | None:
    if not 0 <= stamp.nanos <= 999_999_999:
        return f"nanos must be 0 to 999999999, not {stamp.nanos}"
    earliest, latest = EARLIEST.timestamp(), (now + MOST_AHEAD).timestamp()
    if stamp.seconds < earliest:
        return "is before 2000-01-01; send when the status changed in your system (UTC)"
    if stamp.seconds > latest:
        return "is more than a day ahead of civicflow's clock; send when the status changed in your system (UTC)"
    return None


def report_violations(request: work_orders_pb2.ReportStatusRequest, now: datetime) -> Violations:
    """What is wrong with a status report, field by field (pure)."""
    problems: Violations = []
    if not request.external_id.strip():
        problems.append(("external_id", "is required: the external_id of the WorkOrder you were sent"))
    elif problem := _text_problem(request.external_id, MAX_ID_CHARS):
        problems.append(("external_id", problem))
    which = request.WhichOneof("status")
    if which is None:
        problems.append(("status", "give their_status (in your words) or our_status (in ours)"))
    elif which == "their_status":
        if not request.their_status.strip():
            problems.append(("their_status", "is empty; give your status, e.g. in_progress"))
        elif problem := _text_problem(request.their_status, MAX_STATUS_CHARS):
            problems.append(("their_status", problem))
    elif request.our_status not in OUR_STATUS_OF:
        problems.append(("our_status", f"{request.our_status} is not one of WorkOrderStatus (other than UNSPECIFIED)"))
    if not request.HasField("changed_at"):
        problems.append(("changed_at", "is required: when the status changed in your system"))
    elif problem := _timestamp_problem(request.changed_at, now):
        problems.append(("changed_at", problem))
    if problem := _text_problem(request.note, MAX_NOTE_CHARS, lines=True):
        problems.append(("note", problem))
    for name in ("update_id", "refers_to"):
        if problem := _text_problem(getattr(request, name), MAX_ID_CHARS):
            problems.append((name, problem))
    return problems


def update_of(request: work_orders_pb2.ReportStatusRequest) -> ExternalUpdate:
    """The report as the bridge records it: the status in their words (ours, where they sent ours)."""
    status = (
        request.their_status.strip()
        if request.WhichOneof("status") == "their_status"
        else OUR_STATUS_OF[request.our_status]
    )
    return ExternalUpdate(
        external_id=request.external_id,
        status=status,
        changed_at=request.changed_at.ToDatetime(tzinfo=UTC),
        note=request.note.strip() or None,
        update_id=request.update_id or None,
        refers_to=request.refers_to or None,
    )


def message_of(message: FeedMessage) -> work_orders_pb2.WorkOrderMessage:
    created = Timestamp()
    created.FromDatetime(message.created_at)
    sent = work_orders_pb2.WorkOrderMessage(
        sequence=message.sequence, message_id=str(message.message_id), created_at=created
    )
    body = message.body
    if message.kind == "cancellation":
        sent.cancellation.CopyFrom(
            work_orders_pb2.Cancellation(external_id=message.external_id, reason=str(body.get("reason", "")))
        )
        return sent
    work_order = work_orders_pb2.WorkOrder(
        external_id=message.external_id,
        tracking_number=str(body["tracking_number"]),
        service_code=str(body["service_code"]),
        summary=str(body["summary"]),
        priority=str(body.get("priority") or ""),
        attributes={str(k): str(v) for k, v in (body.get("attributes") or {}).items()},
    )
    if body.get("due_at"):
        work_order.due_at.FromDatetime(datetime.fromisoformat(body["due_at"]))
    sent.work_order.CopyFrom(work_order)
    return sent


class WorkOrderSyncServicer(work_orders_pb2_grpc.WorkOrderSyncServicer):
    def __init__(
        self,
        outbox: GrpcOutbox,
        departments: Mapping[str, ConnectorSpec],
        record: RecordUpdate,
        timing: FeedTiming = FeedTiming(),
        clock: Clock = utc_now,
    ) -> None:
        self._outbox = outbox
        self._departments = departments
        self._record = record
        self._timing = timing
        self._clock = clock

    async def _department(self, department_id: str, context: grpc.aio.ServicerContext) -> ConnectorSpec:
        """The department the caller may act for, or the call aborted saying why not."""
        if not department_id or not CODE.match(department_id):
            await abort_with(
                context,
                invalid_argument([("department_id", "is required: your department's id as in the city file")]),
            )
        caller = CALLER.get()
        if caller is None:  # the access interceptor admits no keyless call here; fail closed all the same
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no API key: send `authorization: Bearer <key>`")
            raise AssertionError("unreachable")
        scope = department_scope(department_id)
        if scope not in caller.scopes:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"key '{caller.name}' may not act for department '{department_id}': it needs the scope {scope}",
            )
        spec = self._departments.get(department_id)
        if spec is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"department '{department_id}' does not use the grpc connector in this city file"
                " (departments.<id>.connector.kind: grpc)",
            )
            raise AssertionError("unreachable")
        if spec.key_id is not None and spec.key_id != caller.key_id:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"department '{department_id}' takes calls only from the key its connector names (key_id in the"
                f" city file); key '{caller.name}' is another",
            )
        return spec

    async def WorkOrders(
        self, request: work_orders_pb2.WorkOrdersRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[work_orders_pb2.WorkOrderMessage]:
        department_id = request.department_id
        await self._department(department_id, context)
        timing = self._timing
        await context.send_initial_metadata(())  # the client knows at once it was let in, before any message
        await self._outbox.seen(department_id, self._clock())
        sent = (await self._outbox.feed(department_id)).acknowledged
        last_beat = last_sent = time.monotonic()
        with structlog.contextvars.bound_contextvars(department_id=department_id):
            log.info("department client pulling work orders", from_sequence=sent + 1)
            while True:
                messages = await self._outbox.messages_after(department_id, sent, BATCH)
                for message in messages:
                    yield message_of(message)
                    sent, last_sent = message.sequence, time.monotonic()
                if len(messages) == BATCH:
                    continue
                await asyncio.sleep(timing.poll_seconds)
                now = time.monotonic()
                if now - last_beat >= timing.heartbeat_seconds:
                    await self._outbox.seen(department_id, self._clock())
                    last_beat = now
                if now - last_sent >= timing.redeliver_seconds:
                    acknowledged = (await self._outbox.feed(department_id)).acknowledged
                    if acknowledged < sent:
                        log.info("sending unacknowledged messages again", from_sequence=acknowledged + 1, to=sent)
                        sent = acknowledged
                    last_sent = now

    async def Acknowledge(
        self, request: work_orders_pb2.AcknowledgeRequest, context: grpc.aio.ServicerContext
    ) -> work_orders_pb2.AcknowledgeResponse:
        await self._department(request.department_id, context)
        if request.sequence > MAX_SEQUENCE:
            await abort_with(context, invalid_argument([("sequence", "is beyond any sequence civicflow sends")]))
        try:
            feed = await self._outbox.acknowledge(request.department_id, request.sequence, self._clock())
        except BeyondTheFeed as exc:
            await abort_with(context, invalid_argument([("sequence", str(exc))]))
            raise
        return work_orders_pb2.AcknowledgeResponse(acknowledged=feed.acknowledged, latest=feed.latest)

    async def ReportStatus(
        self, request: work_orders_pb2.ReportStatusRequest, context: grpc.aio.ServicerContext
    ) -> work_orders_pb2.ReportStatusResponse:
        department_id = request.department_id
        spec = await self._department(department_id, context)
        now = self._clock()
        if problems := report_violations(request, now):
            await abort_with(context, invalid_argument(problems))
        update = update_of(request)
        await self._outbox.seen(department_id, now)
        # Before recording: the feed knows what it sent, so a work order sent but not recorded yet is held by the
        # recorder and one never sent is refused here, never held.
        if not await self._outbox.sent_work_order(department_id, update.external_id):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"department '{department_id}' was never sent a work order {update.external_id!r}; report on the"
                " external_id of a WorkOrder message",
            )
        with structlog.contextvars.bound_contextvars(department_id=department_id, external_id=update.external_id):
            outcome = await self._record(department_id, update)
            log.info("status report received over gRPC", outcome=outcome.value)
        if outcome is Outcome.TOO_FAR_AHEAD:
            await abort_with(
                context,
                invalid_argument([("changed_at", "is more than a day ahead of civicflow's clock; check your clock")]),
            )
        if outcome in (Outcome.HOLD_FULL, Outcome.UNKNOWN_WORK_ORDER):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"work order {update.external_id!r} is not recorded yet and civicflow holds no more reports for"
                f" department '{department_id}' now; report it again later",
            )
        ours = spec.ours(update.status) or ""
        return work_orders_pb2.ReportStatusResponse(outcome=OUTCOMES[outcome], our_status=ours)


def servicer_entry(servicer: WorkOrderSyncServicer) -> tuple[str, Callable[[grpc.aio.Server], None]]:
    """What ServiceProcess.servicers takes: the full service name and how to add it to a server."""
    return SERVICE_NAME, lambda server: work_orders_pb2_grpc.add_WorkOrderSyncServicer_to_server(servicer, server)
