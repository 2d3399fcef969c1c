"""`python -m bench.connector_grpc`: work orders/s and status updates/s through the grpc connector kind and the
SAMPLE gRPC department.

    python -m bench.connector_grpc [--work-orders 500] [--json bench-results/connector_grpc.json]

On a scratch database of the embedded PostgreSQL: WorkOrderSync served in this process as the bridge serves it
(keys from the database, every interceptor), the SAMPLE department client (samples/grpc_department) as a
process of its own pulling the feed, storing a file per work order and acknowledging each. Measured:

- opened: `GrpcConnector.open_work_order` one after another (as the opener calls it), i.e. feed writes/s;
- delivered: from the first open to the sample having stored and acknowledged every one (the feed's cursor);
- status updates: `ReportStatus` one after another from a client in this process, recorded by the bridge's
  real recorder (updates.UpdateRecorder: a row, a read of the case and an append), first
  `in_progress` for each work order, then `resolved` (which also resolves the case).

It measures; it never asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import text

from bench.report import machine, write_json
from civicflow.access import AccessControl, Gatekeeper
from civicflow.api_clients import PostgresClientDirectory, create_client
from civicflow.apikeys import RateLimiter, department_scope
from civicflow.db import make_engine
from civicflow.department_systems import ConnectorSpec
from civicflow.events import CaseRouted, EventMetadata
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.infra import free_port, provide
from civicflow.logging import configure_logging
from civicflow.runtime import build_grpc_server
from civicflow.sandbox import scratch_database
from civicflow.settings import KernelSettings
from samples.grpc_department.client import DepartmentClient, WorkOrderFiles
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.grpc_api import FeedTiming, WorkOrderSyncServicer, servicer_entry
from services.workorder_bridge.grpc_outbox import GrpcOutbox
from services.workorder_bridge.kinds.grpc import GrpcConnector
from services.workorder_bridge.updates import UpdateRecorder

ROOT = Path(__file__).resolve().parents[1]
STORE = PostgresEventStore()
DEPARTMENT = "water"


def request(n: int, case_id: str) -> WorkOrderRequest:
    return WorkOrderRequest(
        case_id=case_id,
        tracking_number=f"BENCH-{n:06d}",
        service_code="WATER_LEAK",
        summary=f"311 case BENCH-{n:06d}: WATER_LEAK for Water Department, priority normal",
        callback_url="http://127.0.0.1:9/unused",
        due_at=datetime(2030, 1, 2, 15, 0, tzinfo=UTC),
    )


async def routed_case(engine: Any, external_id: str) -> None:
    """The case and work order row a work order of the bridge has (not timed): CaseRouted to water."""
    case_id, correlation = uuid7(), uuid7()
    routed = CaseRouted(
        department_id=DEPARTMENT,
        department_name="Water Department",
        priority="normal",
        due_at=None,
        rule_id="bench",
        rule_set_version="bench",
    )
    async with engine.begin() as tx:
        [event] = await STORE.append(tx, case_id, 0, [routed], EventMetadata(correlation_id=correlation, actor="bench"))
        await tx.execute(
            text(
                "INSERT INTO workorder_bridge.work_orders"
                " (department_id, external_id, case_id, system, opened_by_event, correlation_id)"
                " VALUES (:d, :x, :c, 'grpc', :e, :r)"
            ),
            {"d": DEPARTMENT, "x": external_id, "c": case_id, "e": event.event_id, "r": correlation},
        )


async def has_pulled(outbox: GrpcOutbox) -> bool:
    return (await outbox.feed(DEPARTMENT)).last_seen_at is not None


async def acknowledged(outbox: GrpcOutbox, count: int) -> bool:
    return (await outbox.feed(DEPARTMENT)).acknowledged >= count


async def until(probe: Callable[[], Awaitable[bool]], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError("the sample did not keep up; see sample.log")
        await asyncio.sleep(0.01)


async def measure(url: str, count: int, state_dir: Path) -> dict[str, Any]:
    engine = make_engine(url)
    spec = ConnectorSpec(kind="grpc", services={"WATER_LEAK": "LEAK"})
    outbox = GrpcOutbox(engine)
    recorder = UpdateRecorder(engine, STORE, {DEPARTMENT: spec})
    servicer = WorkOrderSyncServicer(outbox, {DEPARTMENT: spec}, recorder, FeedTiming(poll_seconds=0.05))
    port = free_port()
    gatekeeper = Gatekeeper(PostgresClientDirectory(engine), RateLimiter(1e6, 1_000_000))
    server = await build_grpc_server(
        port, [servicer_entry(servicer)], "workorder_bridge", KernelSettings(), AccessControl(gatekeeper)
    )
    await server.start()
    key = await create_client(engine, f"bench-water-{uuid4().hex[:6]}", frozenset({department_scope(DEPARTMENT)}))
    env = dict(os.environ) | {
        "CIVICFLOW_STATE_DIR": str(state_dir),
        "CIVICFLOW_BRIDGE_GRPC_PORT": str(port),
        "CIVICFLOW_SAMPLE_GRPC_KEY": key.reveal(),
        "CIVICFLOW_SAMPLE_GRPC_STEP_SECONDS": "0",
        "CIVICFLOW_LOG_LEVEL": "WARNING",
    }
    with (state_dir / "sample.log").open("ab") as log_file:
        sample = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "samples.grpc_department", env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    connector = GrpcConnector(DEPARTMENT, spec, outbox)
    reporter = DepartmentClient(f"127.0.0.1:{port}", key.reveal(), DEPARTMENT, WorkOrderFiles(state_dir / "reporter"))
    try:
        await until(lambda: has_pulled(outbox))
        started = time.perf_counter()
        opened = [await connector.open_work_order(request(n, str(uuid4())), str(uuid4())) for n in range(count)]
        opened_s = time.perf_counter() - started
        await until(lambda: acknowledged(outbox, count))
        delivered_s = time.perf_counter() - started
        stored = len(list((state_dir / "grpc_department" / DEPARTMENT).glob("WO-*.json")))

        for work_order in opened:
            await routed_case(engine, work_order.external_id)
        result: dict[str, Any] = {}
        for status in ("in_progress", "resolved"):
            outcomes: dict[str, int] = {}
            began = time.perf_counter()
            for work_order in opened:
                reported = await reporter.report(work_order.external_id, status)
                outcomes[reported.outcome] = outcomes.get(reported.outcome, 0) + 1
            took = time.perf_counter() - began
            result[f"reports_{status}"] = {"per_s": round(count / took, 1), "seconds": round(took, 2), **outcomes}
        async with engine.connect() as conn:
            resolved = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM events.case_events e JOIN workorder_bridge.work_orders w"
                        " ON w.case_id = e.case_id WHERE w.department_id = :d AND e.type = 'CaseResolved'"
                    ),
                    {"d": DEPARTMENT},
                )
            ).scalar_one()
        return {
            "work_orders": count,
            "opened_per_s": round(count / opened_s, 1),
            "delivered_per_s": round(count / delivered_s, 1),
            "stored_by_the_sample": stored,
            "cases_resolved": resolved,
            **result,
        }
    finally:
        sample.terminate()
        await asyncio.wait_for(sample.wait(), 10)
        await reporter.aclose()
        await server.stop(None)
        await engine.dispose()


async def main_async(count: int) -> dict[str, Any]:
    with provide(ROOT / ".civicflow" / "bench") as infra, tempfile.TemporaryDirectory() as folder:
        async with scratch_database(infra, "grpcbench") as url:
            figures = await measure(url, count, Path(folder))
    return {"machine": machine(), "grpc": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-orders", type=int, default=500)
    parser.add_argument("--json", type=Path, default=ROOT / "bench-results" / "connector_grpc.json")
    args = parser.parse_args()
    configure_logging("bench", "WARNING")
    document = asyncio.run(main_async(args.work_orders))
    print(document["grpc"])
    write_json(document, args.json)


if __name__ == "__main__":
    main()
