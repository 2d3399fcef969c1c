"""`python -m bench.connectors`: work orders opened a second, and status updates recorded a second, through the
bridge for each connector kind, on the embedded PostgreSQL against each kind's sample system.

    python -m bench.connectors [--work-orders 300] [--batch 50] [--json bench-results/connectors.json]

Opening is the bridge's own path: routed cases (CaseSubmitted, CaseRouted) decided by the opener in the
consumer's unit of work, `--batch` events a transaction, through the department's connector (the kind's
builder in services/workorder_bridge/kinds) to its sample system over HTTP.
Recording is what every push endpoint and the poller do: one update a work order, in the department's words,
handed to the bridge's RecordUpdate (updates.UpdateRecorder). `bridge alone` is the same with a connector
that does no I/O: the bridge's own ceiling on this machine, to read the kinds' figures against. It measures;
it never asserts beyond every work order being opened and every update recorded once.

A kind's sample system is started by an entry of SAMPLE_SYSTEMS (kind -> async context manager yielding the
department's ConnectorSpec and the bridge settings it needs); a kind without one is not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.report import machine
from civicflow.db import make_engine
from civicflow.department_systems import DEFAULT_CONNECTOR, ConnectorSpec
from civicflow.events import CaseRouted, CaseSubmitted, EventMetadata, Location, RecordedEvent
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.infra import free_ports, provide, wait_for_port
from civicflow.logging import configure_logging
from civicflow.sandbox import scratch_database
from civicflow.unit_of_work import UnitOfWork, in_order
from services.workorder_bridge.connector import (
    CannotRead,
    Connector,
    ConnectorContext,
    ExternalUpdate,
    Health,
    OpenedWorkOrder,
    Outcome,
    UpdatesPage,
)
from services.workorder_bridge.connectors import DepartmentSystems, builder_from
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.kinds import BUILDERS
from services.workorder_bridge.main import BridgeSettings
from services.workorder_bridge.opener import WorkOrderOpener
from services.workorder_bridge.updates import UpdateRecorder

ROOT = Path(__file__).resolve().parents[1]
STORE = PostgresEventStore()
SampleSystem = Callable[[Path], contextlib.AbstractAsyncContextManager[tuple[ConnectorSpec, BridgeSettings]]]


@contextlib.asynccontextmanager
async def rest_webhook_sample(state_dir: Path) -> AsyncIterator[tuple[ConnectorSpec, BridgeSettings]]:
    """The sample REST department system (samples/department_workorders) as its own process, as `civicflow dev`
    runs it; its crews never call back (the bench hands updates to the bridge itself). Served in the bench's
    own event loop it would answer ~40 ms slower a call, which is the bench, not the bridge."""
    port = free_ports(1)[0]
    env = {
        **os.environ,
        "CIVICFLOW_STATE_DIR": str(state_dir),
        "CIVICFLOW_SAMPLE_DEPT_PORT": str(port),
        "CIVICFLOW_SAMPLE_DEPT_STEP_SECONDS": "86400",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "samples.department_workorders",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port)
        url = f"http://127.0.0.1:{port}"
        yield (
            ConnectorSpec(kind="rest_webhook", endpoint=url),
            BridgeSettings(state_dir=state_dir, workorder_base_url=url),
        )
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


SAMPLE_SYSTEMS: dict[str, SampleSystem] = {"rest_webhook": rest_webhook_sample}


class NoWork:
    """A department's system that answers at once: what the bridge itself costs."""

    kind = "rest_webhook"  # spoken as the default kind, so updates map as rest_webhook's do

    def __init__(self, department_id: str) -> None:
        self.department_id = department_id
        self._opened: dict[str, str] = {}

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder:
        return OpenedWorkOrder(self._opened.setdefault(idempotency_key, f"N-{len(self._opened) + 1}"), "open")

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None:
        return None

    async def updates_since(self, cursor: str | None) -> UpdatesPage:
        return UpdatesPage([], cursor)

    async def read_work_order(self, external_id: str) -> ExternalUpdate | None:
        raise CannotRead("the benchmark's system keeps nothing to read back")

    async def health(self) -> Health:
        return Health(True, "answers")

    async def aclose(self) -> None:
        return None


async def routed_cases(url: str, department_id: str, count: int) -> list[RecordedEvent]:
    prefix = uuid7().hex[-6:].upper()  # tracking numbers are unique in the store
    engine = make_engine(url)
    try:
        decisions = []
        for n in range(count):
            submitted = CaseSubmitted(
                tracking_number=f"B{prefix}-{n:07d}",
                service_code="POTHOLE",
                description="a deep hole",
                location=Location(address=f"{100 + n} W Alder St"),
                submitted_at=datetime.now(UTC),
            )
            routed = CaseRouted(
                department_id=department_id,
                department_name=department_id,
                priority="normal",
                due_at=datetime.now(UTC) + timedelta(days=3),
                rule_id="bench",
                rule_set_version="bench",
            )
            metadata = EventMetadata(correlation_id=uuid7(), actor="bench")
            async with engine.begin() as tx:
                decisions.append((await STORE.append(tx, uuid7(), 0, [submitted, routed], metadata))[-1])
        return decisions
    finally:
        await engine.dispose()


async def through_the_bridge(
    url: str, label: str, systems: DepartmentSystems, department_id: str, count: int, batch: int
) -> dict[str, Any]:
    """Open `count` work orders for `department_id`, then record one update for each; the rates."""
    decisions = await routed_cases(url, department_id, count)
    engine = make_engine(url)
    try:
        opener = WorkOrderOpener(engine, STORE, systems, "http://127.0.0.1:9/webhooks/work-orders")
        unit, policy = UnitOfWork(engine, "workorder_bridge", STORE), in_order({"CaseRouted": opener})
        began = time.perf_counter()
        for start in range(0, count, batch):
            await unit.run(decisions[start : start + batch], policy)
        opening = time.perf_counter() - began
        async with engine.connect() as conn:
            orders = list(
                await conn.scalars(
                    text("SELECT external_id FROM workorder_bridge.work_orders WHERE department_id = :d"),
                    {"d": department_id},
                )
            )
        assert len(orders) == count, f"{label}: {len(orders)} of {count} work orders opened"
        record = UpdateRecorder(engine, STORE, systems.specs())
        theirs = systems.spec(department_id).theirs("in_progress")
        began = time.perf_counter()
        outcomes = [
            await record(department_id, ExternalUpdate(order, theirs, datetime.now(UTC), "crew on site"))
            for order in orders
        ]
        recording = time.perf_counter() - began
        assert outcomes.count(Outcome.RECORDED) == count, f"{label}: not every update recorded once"
    finally:
        await engine.dispose()
    return {
        "kind": label,
        "work_orders": count,
        "opened_per_second": count / opening,
        "updates_recorded_per_second": count / recording,
    }


async def measure(count: int, batch: int) -> dict[str, Any]:
    results = []
    with provide(ROOT / ".civicflow" / "bench-connectors") as infra:
        async with scratch_database(infra, "connectors") as url:
            alone = DepartmentSystems(lambda d, spec: NoWork(d), {})
            results.append(await through_the_bridge(url, "bridge alone", alone, "bench-none", count, batch))
            for kind, sample in SAMPLE_SYSTEMS.items():
                with tempfile.TemporaryDirectory() as state:
                    async with sample(Path(state)) as (spec, settings):
                        department = f"bench-{kind}"

                        def context_of(d: str, s: ConnectorSpec, settings: BridgeSettings = settings) -> Any:
                            return ConnectorContext(d, s, settings, None, settings.callback_url, settings.public_url)

                        systems = DepartmentSystems(builder_from(BUILDERS, context_of, settings), {department: spec})
                        try:
                            connector: Connector = systems.for_department(department)
                            assert connector.kind == kind
                            results.append(await through_the_bridge(url, kind, systems, department, count, batch))
                        finally:
                            await systems.aclose()
    return {"runs": results, "batch": batch, "default_spec": DEFAULT_CONNECTOR.kind, "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--work-orders", type=int, default=300)
    parser.add_argument("--batch", type=int, default=50, help="routing events a unit of work, as the consumer batches")
    parser.add_argument("--json", type=Path, default=Path("bench-results/connectors.json"))
    args = parser.parse_args()
    configure_logging("bench", "WARNING")  # a line per work order would drown the figures
    result = asyncio.run(measure(args.work_orders, args.batch))
    for run in result["runs"]:
        print(
            f"{run['kind']:<32} {run['opened_per_second']:8.1f} work orders opened/s"
            f"  {run['updates_recorded_per_second']:8.1f} updates recorded/s  ({run['work_orders']} each)"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
