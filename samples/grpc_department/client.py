"""The SAMPLE gRPC department integration: pull, store, acknowledge, progress, report (see the package docstring)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import Field

from civicflow.apikeys import call_metadata
from civicflow.logging import configure_logging
from civicflow.settings import KernelSettings
from civicflow.v1 import work_orders_pb2, work_orders_pb2_grpc

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
# The department's own steps, in our words (a grpc connector maps ours as they are).
STEPS = ("acknowledged", "in_progress", "resolved")
FOLDER = "grpc_department"
KEY_FILE = "client.key"
ACK_EVERY = 50
ACK_QUIET_SECONDS = 0.1


def utc_now() -> datetime:
    return datetime.now(UTC)


class SampleGrpcDepartmentSettings(KernelSettings):
    """Read from CIVICFLOW_SAMPLE_GRPC_* (and the bridge's port and the state folder)."""

    bridge_grpc_port: int = 50054
    sample_grpc_target: str = ""  # host:port of the bridge; empty: 127.0.0.1:<bridge_grpc_port>
    sample_grpc_department: str = "water"
    sample_grpc_key: str = ""  # the client key itself; empty: read from sample_grpc_key_file
    sample_grpc_key_file: Path | None = None  # empty: <state_dir>/grpc_department/client.key
    sample_grpc_step_seconds: float = Field(default=5.0, ge=0)  # 0: the crews never move (tests move them)

    @property
    def target(self) -> str:
        return self.sample_grpc_target or f"127.0.0.1:{self.bridge_grpc_port}"

    def key(self) -> str:
        if self.sample_grpc_key:
            return self.sample_grpc_key
        path = self.sample_grpc_key_file or self.state_dir / FOLDER / KEY_FILE
        try:
            return path.read_text().strip()
        except OSError:
            raise SystemExit(
                f"sample gRPC department: no client key in {path}; `civicflow dev` writes one, or make one with"
                f" `civicflow keys create NAME --scope workorders:{self.sample_grpc_department}`"
            ) from None

    def folder(self) -> Path:
        return self.state_dir / FOLDER / self.sample_grpc_department


def _file_name(external_id: str) -> str:
    """A work order's file: its id where that is a plain name, else a digest (the id comes from outside)."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", external_id):
        return f"{external_id}.json"
    return f"wo-{hashlib.sha256(external_id.encode()).hexdigest()[:16]}.json"


class WorkOrderFiles:
    """One readable JSON file per work order, as a department's clerk would look at it; what was received
    (message ids) is in the files too, so a restart does not store a redelivered message twice."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._seen: set[str] = set()
        for record in self.all():
            self._seen.update(record.get("messages", []))

    def all(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # half a file from a crash of an older version: skipped, never fatal
        return found

    def get(self, external_id: str) -> dict[str, Any] | None:
        path = self.folder / _file_name(external_id)
        try:
            found: dict[str, Any] = json.loads(path.read_text())
            return found
        except (OSError, ValueError):
            return None

    def put(self, record: dict[str, Any]) -> None:
        path = self.folder / _file_name(str(record["external_id"]))
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        draft.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(draft, path)

    def mark_connected(self) -> None:
        """`.connected` in the folder: the launcher waits for it (this sample serves no port to wait for)."""
        (self.folder / ".connected").touch()

    def seen(self, message_id: str) -> bool:
        return message_id in self._seen

    def receive(self, message: work_orders_pb2.WorkOrderMessage, now: datetime) -> None:
        """Keeps what the message says: a new work order, or a work order cancelled."""
        which = message.WhichOneof("body")
        if which == "work_order":
            order = message.work_order
            record = self.get(order.external_id) or {
                "external_id": order.external_id,
                "status": "received",
                "history": [{"status": "received", "at": now.isoformat()}],
                "messages": [],
            }
            record.update(
                tracking_number=order.tracking_number,
                service_code=order.service_code,
                summary=order.summary,
                due_at=order.due_at.ToDatetime(tzinfo=UTC).isoformat() if order.HasField("due_at") else None,
                priority=order.priority,
                attributes=dict(order.attributes),
            )
        elif which == "cancellation":
            cancelled = message.cancellation
            record = self.get(cancelled.external_id) or {
                "external_id": cancelled.external_id,
                "history": [],
                "messages": [],
            }
            record.update(status="cancelled", cancelled_because=cancelled.reason)
            record["history"].append({"status": "cancelled", "at": now.isoformat(), "note": cancelled.reason})
        else:
            return  # a kind of message this sample does not know yet: acknowledged, ignored
        record["messages"] = [*record.get("messages", []), message.message_id]
        self.put(record)
        self._seen.add(message.message_id)

    def due(self, now: datetime, step_seconds: float) -> list[dict[str, Any]]:
        """Work orders whose crew is ready for the next step."""
        ready = []
        for record in self.all():
            status = record.get("status")
            if status == "received" or status in STEPS[:-1]:
                last = datetime.fromisoformat(record["history"][-1]["at"])
                if (now - last).total_seconds() >= step_seconds:
                    ready.append(record)
        return ready


@dataclass
class Reported:
    outcome: str
    our_status: str


class DepartmentClient:
    """The department's side of WorkOrderSync, with its key on every call."""

    def __init__(
        self, target: str, key: str, department_id: str, files: WorkOrderFiles, *, clock: Clock = utc_now
    ) -> None:
        self.department_id = department_id
        self.files = files
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = work_orders_pb2_grpc.WorkOrderSyncStub(self._channel)
        self._metadata = call_metadata(key)
        self._clock = clock
        self.connected = asyncio.Event()

    async def pull(self, stop: asyncio.Event, *, retry_seconds: float = 1.0) -> None:
        """Reads the feed until stopped, acknowledging each message once stored; when the stream breaks
        (the bridge restarting), connects again after a pause that grows to 10 s."""
        pause = retry_seconds
        while not stop.is_set():
            try:
                await self._pull_once(stop)
                pause = retry_seconds
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    log.error("civicflow refused this client's key", code=exc.code().name, details=exc.details())
                else:
                    log.warning("work-order stream broke; connecting again", code=exc.code().name, pause=pause)
                self.connected.clear()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                except TimeoutError:
                    pass
                pause = min(pause * 2, 10.0)

    async def _pull_once(self, stop: asyncio.Event) -> None:
        """One stream. Acknowledgements are gathered: sent when the stream goes quiet for a moment or every
        ACK_EVERY messages, so a burst of work orders costs a few calls, not one each (and stays within the
        key's rate limit)."""
        call = self._stub.WorkOrders(
            work_orders_pb2.WorkOrdersRequest(department_id=self.department_id), metadata=self._metadata
        )
        stopping = asyncio.create_task(stop.wait())
        reading: asyncio.Future[Any] | None = None
        stored_up_to, unacknowledged = 0, 0
        try:
            await call.wait_for_connection()
            self.connected.set()
            self.files.mark_connected()
            log.info("pulling work orders", department_id=self.department_id)
            while not stop.is_set():
                reading = reading or asyncio.ensure_future(call.read())
                quiet = ACK_QUIET_SECONDS if unacknowledged else None
                done, _ = await asyncio.wait({reading, stopping}, timeout=quiet, return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    break
                if not done or unacknowledged >= ACK_EVERY:
                    await self.acknowledge(stored_up_to)
                    unacknowledged = 0
                    if not done:
                        continue
                message, reading = reading.result(), None
                if message is grpc.aio.EOF:
                    break
                if not self.files.seen(message.message_id):
                    self.files.receive(message, self._clock())
                    log.info("work-order message stored", kind=message.WhichOneof("body"), sequence=message.sequence)
                stored_up_to, unacknowledged = message.sequence, unacknowledged + 1
            if unacknowledged:
                await self.acknowledge(stored_up_to)
        finally:
            if reading is not None:
                reading.cancel()
            stopping.cancel()
            call.cancel()
            self.connected.clear()

    async def acknowledge(self, sequence: int) -> work_orders_pb2.AcknowledgeResponse:
        reply: work_orders_pb2.AcknowledgeResponse = await self._stub.Acknowledge(
            work_orders_pb2.AcknowledgeRequest(department_id=self.department_id, sequence=sequence),
            metadata=self._metadata,
            timeout=10,
        )
        return reply

    async def report(
        self, external_id: str, status: str, note: str | None = None, changed_at: datetime | None = None
    ) -> Reported:
        """Tells civicflow the work order's status, in the department's words."""
        stamp = Timestamp()
        stamp.FromDatetime(changed_at or self._clock())
        reply: work_orders_pb2.ReportStatusResponse = await self._stub.ReportStatus(
            work_orders_pb2.ReportStatusRequest(
                department_id=self.department_id,
                external_id=external_id,
                their_status=status,
                changed_at=stamp,
                note=note or "",
            ),
            metadata=self._metadata,
            timeout=10,
        )
        outcome = work_orders_pb2.ReportStatusResponse.Outcome.Name(reply.outcome)
        return Reported(outcome.removeprefix("OUTCOME_").lower(), reply.our_status)

    async def progress(self, step_seconds: float) -> int:
        """Moves every work order that is due one step on and reports it; how many moved."""
        moved = 0
        now = self._clock()
        for record in self.files.due(now, step_seconds):
            status = record["status"]
            step = STEPS[0] if status == "received" else STEPS[STEPS.index(status) + 1]
            note = "work completed by the water crew" if step == "resolved" else None
            try:
                reported = await self.report(record["external_id"], step, note, now)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # civicflow never sent it: stop moving it
                    record.update(status="unknown_to_civicflow")
                    self.files.put(record)
                log.warning("status report not taken; trying again later", code=exc.code().name)
                continue
            record["status"] = step
            record["history"].append({"status": step, "at": now.isoformat(), "outcome": reported.outcome})
            self.files.put(record)
            moved += 1
        return moved

    async def aclose(self) -> None:
        await self._channel.close()


async def run(settings: SampleGrpcDepartmentSettings, stop: asyncio.Event) -> None:
    files = WorkOrderFiles(settings.folder())
    client = DepartmentClient(settings.target, settings.key(), settings.sample_grpc_department, files)
    pulling = asyncio.create_task(client.pull(stop))
    try:
        while not stop.is_set():
            if settings.sample_grpc_step_seconds > 0:
                try:
                    await client.progress(settings.sample_grpc_step_seconds)
                except Exception:
                    log.exception("moving work orders on failed; trying again")
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.2, settings.sample_grpc_step_seconds / 5))
            except TimeoutError:
                pass
    finally:
        stop.set()
        await pulling
        await client.aclose()


def main() -> None:
    """Pull `CIVICFLOW_SAMPLE_GRPC_DEPARTMENT`'s work orders from the bridge until SIGTERM or Ctrl-C."""
    settings = SampleGrpcDepartmentSettings()
    configure_logging("sample_grpc_department", settings.log_level)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("sample gRPC department starting", target=settings.target, folder=str(settings.folder()))
        await run(settings, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
