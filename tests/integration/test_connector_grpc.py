"""The grpc connector kind: the contract, against the real WorkOrderSync service in-process (keys from PostgreSQL,
the bridge's interceptors) and the SAMPLE department client (samples/grpc_department) as the department's
system; then who may call, hostile reports, and a feed that is sent again until acknowledged.

Each test has a department of its own (`water-<random>`), so feeds and keys never meet."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.access import AccessControl, Gatekeeper
from civicflow.api_clients import PostgresClientDirectory, create_client, revoke_client
from civicflow.apikeys import ApiKey, RateLimiter, Scope, call_metadata, department_scope
from civicflow.department_systems import ConnectorSpec
from civicflow.events import CaseRouted, EventMetadata
from civicflow.eventstore import PostgresEventStore
from civicflow.grpc_errors import field_violations
from civicflow.ids import uuid7
from civicflow.infra import free_port
from civicflow.runtime import build_grpc_server
from civicflow.settings import KernelSettings
from civicflow.v1 import work_orders_pb2, work_orders_pb2_grpc
from samples.grpc_department.client import DepartmentClient, WorkOrderFiles
from services.workorder_bridge.connector import ExternalUpdate, Outcome
from services.workorder_bridge.grpc_api import FeedTiming, WorkOrderSyncServicer, servicer_entry
from services.workorder_bridge.grpc_outbox import GrpcOutbox
from services.workorder_bridge.kinds.grpc import GrpcConnector
from services.workorder_bridge.updates import UpdateRecorder
from tests.conftest import eventually
from tests.connector_contract import ConnectorContract, a_request

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
ALL_CHECKS = list(HealthCheck)

CLIENT_WINDOW = 4.0  # the department's client counts as gone this long after it was last there
TIMING = FeedTiming(poll_seconds=0.05, redeliver_seconds=1.0, heartbeat_seconds=0.2)


def unique(name: str) -> str:
    return f"{name}-{uuid4().hex[:8]}"


@dataclass
class RecordedUpdates:
    """The bridge's RecordUpdate as far as these tests need it: what reached it, in order. A work order the
    feed never carried is unknown, as the real recorder finds no row for it; `not_yet` ones are sent but not
    recorded (the bridge still opening them): held, as the real recorder holds them."""

    outbox: GrpcOutbox
    received: list[tuple[str, ExternalUpdate]] = field(default_factory=list)
    not_yet: set[str] = field(default_factory=set)

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        if update.external_id in self.not_yet:
            return Outcome.HELD
        if not await self.outbox.sent_work_order(department_id, update.external_id):
            return Outcome.UNKNOWN_WORK_ORDER
        if any(d == department_id and u == update for d, u in self.received):
            return Outcome.DUPLICATE
        self.received.append((department_id, update))
        return Outcome.RECORDED


@dataclass
class Bridge:
    address: str
    outbox: GrpcOutbox
    recorder: RecordedUpdates
    specs: dict[str, ConnectorSpec]


@contextlib.asynccontextmanager
async def work_order_sync(engine: AsyncEngine, specs: dict[str, ConnectorSpec]) -> AsyncIterator[Bridge]:
    """WorkOrderSync as the bridge serves it: keys from the database (no cache: a revocation shows at once)."""
    outbox = GrpcOutbox(engine)
    recorder = RecordedUpdates(outbox)
    servicer = WorkOrderSyncServicer(outbox, specs, recorder, TIMING)
    port = free_port()
    gatekeeper = Gatekeeper(PostgresClientDirectory(engine), RateLimiter(1e6, 1_000_000), cache_seconds=0)
    server = await build_grpc_server(
        port, [servicer_entry(servicer)], "workorder_bridge", KernelSettings(), AccessControl(gatekeeper)
    )
    await server.start()
    try:
        yield Bridge(f"127.0.0.1:{port}", outbox, recorder, specs)
    finally:
        await server.stop(None)


@dataclass
class GrpcDepartment:
    """The contract's DepartmentUnderTest: the connector, and the sample client pulling the department's feed."""

    connector: GrpcConnector
    spec: ConnectorSpec
    client: DepartmentClient
    bridge: Bridge
    stop: asyncio.Event
    pulling: asyncio.Task[None]
    can_cancel: bool = True

    async def change_status(self, external_id: str, their_status: str, note: str | None = None) -> None:
        await self.client.report(external_id, their_status, note)

    async def updates(self) -> list[ExternalUpdate]:
        return [u for d, u in self.bridge.recorder.received if d == self.connector.department_id]

    async def cancelled_there(self, external_id: str) -> bool:
        async def shown() -> bool:
            record = self.client.files.get(external_id)
            return record is not None and record["status"] == "cancelled"

        try:
            return await eventually(shown, timeout=15, what="the cancellation in the department's files")
        except AssertionError:
            return False

    async def stop_system(self) -> None:
        """The department's client goes away; the connector says down once the window has passed."""
        self.stop.set()
        await self.pulling

        async def down() -> bool:
            return not (await self.connector.health()).up

        await eventually(down, timeout=CLIENT_WINDOW * 5, what="health to say the client is gone")


@contextlib.asynccontextmanager
async def grpc_department(
    engine: AsyncEngine, folder: Path, spec: ConnectorSpec | None = None
) -> AsyncIterator[GrpcDepartment]:
    department_id = unique("water")
    spec = spec or ConnectorSpec(kind="grpc", services={"POTHOLE": "HOLE"})
    key = (await create_client(engine, unique("water-system"), frozenset({department_scope(department_id)}))).reveal()
    async with work_order_sync(engine, {department_id: spec}) as bridge:
        connector = GrpcConnector(department_id, spec, bridge.outbox, client_window_seconds=CLIENT_WINDOW)
        client = DepartmentClient(bridge.address, key, department_id, WorkOrderFiles(folder / department_id))
        stop = asyncio.Event()
        pulling = asyncio.create_task(client.pull(stop, retry_seconds=0.1))
        try:
            await asyncio.wait_for(client.connected.wait(), timeout=15)

            async def up() -> bool:
                return (await connector.health()).up

            await eventually(up, timeout=15, what="the connector to see its client")
            yield GrpcDepartment(connector, spec, client, bridge, stop, pulling)
        finally:
            stop.set()
            await pulling
            await client.aclose()


class TestGrpcConnector(ConnectorContract):
    @pytest.fixture
    async def department(self, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[GrpcDepartment]:
        async with grpc_department(engine, tmp_path) as department:
            yield department


# --- beyond the contract ------------------------------------------------------------------------------------


async def test_the_department_stores_what_it_was_sent_in_its_own_codes_in_order(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with grpc_department(engine, tmp_path) as department:
        opened = [await department.connector.open_work_order(a_request("POTHOLE"), str(uuid4())) for _ in range(3)]
        await department.connector.cancel_work_order(opened[1].external_id, "the case went to streets", "c-1")

        async def stored() -> list[dict[str, object]] | None:
            records = [department.client.files.get(o.external_id) for o in opened]
            if all(records) and records[1] and records[1]["status"] == "cancelled":
                return [r for r in records if r]
            return None

        records = await eventually(stored, timeout=15, what="three work orders and a cancellation stored")
    assert [r["service_code"] for r in records] == ["HOLE"] * 3, "their code, from the connector's services"
    assert records[1]["cancelled_because"] == "the case went to streets"
    assert all(str(r["tracking_number"]).startswith("CT-") and r["due_at"] for r in records)
    feed = await department.bridge.outbox.feed(department.connector.department_id)
    assert feed.latest == 4 and feed.acknowledged == 4, "every message stored and acknowledged"


async def test_a_cancellation_is_written_once_per_work_order_whatever_the_key(engine: AsyncEngine) -> None:
    outbox, department_id = GrpcOutbox(engine), unique("water")
    connector = GrpcConnector(department_id, ConnectorSpec(kind="grpc"), outbox)
    opened = await connector.open_work_order(a_request(), "routed-1")
    assert (await connector.open_work_order(a_request(), "routed-1")).external_id == opened.external_id
    await connector.cancel_work_order(opened.external_id, "rerouted", "cancel-a")
    await connector.cancel_work_order(opened.external_id, "rerouted", "cancel-a")
    await connector.cancel_work_order(opened.external_id, "duplicate of another", "cancel-b")
    messages = await outbox.messages_after(department_id, 0)
    assert [(m.sequence, m.kind) for m in messages] == [(1, "work_order"), (2, "cancellation")]


async def test_writers_at_once_get_every_sequence_once_and_one_external_id_per_key(engine: AsyncEngine) -> None:
    outbox, department_id = GrpcOutbox(engine), unique("water")
    connector = GrpcConnector(department_id, ConnectorSpec(kind="grpc"), outbox)
    keys = [f"routed-{n % 10}" for n in range(30)]  # each key three times, all at once
    opened = await asyncio.gather(*(connector.open_work_order(a_request(), k) for k in keys))
    by_key: dict[str, set[str]] = {}
    for key, work_order in zip(keys, opened, strict=True):
        by_key.setdefault(key, set()).add(work_order.external_id)
    assert all(len(ids) == 1 for ids in by_key.values()) and len(by_key) == 10
    messages = await outbox.messages_after(department_id, 0)
    assert [m.sequence for m in messages] == list(range(1, 11))


async def test_the_sample_crew_moves_a_work_order_on_and_reports_each_step(engine: AsyncEngine, tmp_path: Path) -> None:
    async with grpc_department(engine, tmp_path) as department:
        opened = await department.connector.open_work_order(a_request(), str(uuid4()))

        async def stored() -> bool:
            return department.client.files.get(opened.external_id) is not None

        await eventually(stored, timeout=15, what="the work order stored")
        for _ in range(3):
            assert await department.client.progress(step_seconds=0) == 1
        assert await department.client.progress(step_seconds=0) == 0, "resolved is the last step"
        reported = [u for u in await department.updates() if u.external_id == opened.external_id]
    assert [u.status for u in reported] == ["acknowledged", "in_progress", "resolved"]
    assert [department.spec.ours(u.status) for u in reported] == ["acknowledged", "in_progress", "resolved"]
    assert reported[-1].note == "work completed by the water crew"


# --- who may call -------------------------------------------------------------------------------------------


def stamp(when: datetime | None = None) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(when or datetime.now(UTC))
    return result


def a_report(department_id: str, external_id: str = "WO-1", **fields: object) -> work_orders_pb2.ReportStatusRequest:
    values: dict[str, object] = {
        "department_id": department_id,
        "external_id": external_id,
        "their_status": "in_progress",
        "changed_at": stamp(),
    }
    values.update(fields)
    return work_orders_pb2.ReportStatusRequest(**values)  # type: ignore[arg-type]


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value


async def first_message(stub: work_orders_pb2_grpc.WorkOrderSyncStub, department_id: str, key: str) -> object:
    stream = stub.WorkOrders(
        work_orders_pb2.WorkOrdersRequest(department_id=department_id), metadata=call_metadata(key)
    )
    try:
        return await asyncio.wait_for(stream.read(), timeout=10)
    finally:
        stream.cancel()


async def test_only_a_live_key_of_the_department_may_pull_acknowledge_or_report(engine: AsyncEngine) -> None:
    water, parks = unique("water"), unique("parks")
    pinned_key = await create_client(engine, unique("pinned"), frozenset({department_scope(parks)}))
    specs = {
        water: ConnectorSpec(kind="grpc"),
        parks: ConnectorSpec(kind="grpc", key_id=pinned_key.key_id),
    }
    own = (await create_client(engine, unique("water-system"), frozenset({department_scope(water)}))).reveal()
    other = (await create_client(engine, unique("parks-other"), frozenset({department_scope(parks)}))).reveal()
    tracker = (await create_client(engine, unique("tracker"), frozenset({Scope.TRACK}))).reveal()
    stranger = unique("streets")
    not_grpc = (await create_client(engine, unique("streets"), frozenset({department_scope(stranger)}))).reveal()
    revoked_name = unique("former")
    revoked = (await create_client(engine, revoked_name, frozenset({department_scope(water)}))).reveal()
    await revoke_client(engine, revoked_name)

    async with work_order_sync(engine, specs) as bridge, grpc.aio.insecure_channel(bridge.address) as channel:
        stub = work_orders_pb2_grpc.WorkOrderSyncStub(channel)
        no_key = await refused(stub.ReportStatus(a_report(water)))
        assert no_key.code() == grpc.StatusCode.UNAUTHENTICATED and "no API key" in (no_key.details() or "")
        unknown = await refused(
            stub.Acknowledge(
                work_orders_pb2.AcknowledgeRequest(department_id=water), metadata=call_metadata(ApiKey.issue().reveal())
            )
        )
        assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
        gone = await refused(stub.ReportStatus(a_report(water), metadata=call_metadata(revoked)))
        assert gone.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in (gone.details() or "")
        no_scope = await refused(first_message(stub, water, tracker))
        assert no_scope.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "lacks scope 'workorders:<department_id>'" in (no_scope.details() or "")
        for call in (
            first_message(stub, water, other),
            stub.ReportStatus(a_report(water), metadata=call_metadata(other)),
            stub.Acknowledge(work_orders_pb2.AcknowledgeRequest(department_id=water), metadata=call_metadata(other)),
        ):
            theirs = await refused(call)
            assert theirs.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"may not act for department '{water}'" in (theirs.details() or "")
        mine = await refused(stub.ReportStatus(a_report(water), metadata=call_metadata(own)))
        assert mine.code() == grpc.StatusCode.NOT_FOUND, "let in: its own department; no such work order"
        unpinned = await refused(stub.ReportStatus(a_report(parks), metadata=call_metadata(other)))
        assert unpinned.code() == grpc.StatusCode.PERMISSION_DENIED and "key_id" in (unpinned.details() or "")
        pinned = await refused(stub.ReportStatus(a_report(parks), metadata=call_metadata(pinned_key.reveal())))
        assert pinned.code() == grpc.StatusCode.NOT_FOUND, "let in: the pinned key; no such work order"
        elsewhere = await refused(stub.ReportStatus(a_report(stranger), metadata=call_metadata(not_grpc)))
        assert elsewhere.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "does not use the grpc connector" in (elsewhere.details() or "")
    assert bridge.recorder.received == []


# --- hostile input ------------------------------------------------------------------------------------------


async def test_hostile_reports_are_refused_field_by_field_and_record_nothing(engine: AsyncEngine) -> None:
    water = unique("water")
    key = (await create_client(engine, unique("water-system"), frozenset({department_scope(water)}))).reveal()
    async with work_order_sync(engine, {water: ConnectorSpec(kind="grpc")}) as bridge:
        connector = GrpcConnector(water, ConnectorSpec(kind="grpc"), bridge.outbox)
        sent = (await connector.open_work_order(a_request(), str(uuid4()))).external_id
        far = Timestamp(seconds=253402300799)  # 9999-12-31T23:59:59Z
        cases: list[tuple[work_orders_pb2.ReportStatusRequest, str]] = [
            (a_report(water, sent, note="x" * 2001), "note"),
            (a_report(water, sent, note="crew\x00on site"), "note"),
            (a_report(water, sent, their_status="in\x00progress"), "their_status"),
            (a_report(water, sent, their_status="x" * 65), "their_status"),
            (a_report(water, sent, their_status="   "), "their_status"),
            (a_report(water, "", their_status="done"), "external_id"),
            (a_report(water, "W" * 101), "external_id"),
            (a_report(water, "   "), "external_id"),
            (a_report(water, sent, changed_at=Timestamp(seconds=1_800_000_000, nanos=-1)), "changed_at"),
            (a_report(water, sent, changed_at=Timestamp(seconds=1_800_000_000, nanos=2_000_000_000)), "changed_at"),
            (a_report(water, sent, changed_at=far), "changed_at"),
            (a_report(water, sent, changed_at=Timestamp(seconds=-62135596800)), "changed_at"),  # year 1
            (a_report(water, sent, update_id="u\x1b[31m"), "update_id"),
            (a_report(water, sent, refers_to="r" * 101), "refers_to"),
            (
                work_orders_pb2.ReportStatusRequest(department_id=water, external_id=sent, their_status="done"),
                "changed_at",
            ),
            (work_orders_pb2.ReportStatusRequest(department_id=water, external_id=sent, changed_at=stamp()), "status"),
            (a_report(water, sent, our_status=99), "our_status"),
            (a_report("../etc", sent), "department_id"),
            (a_report("", sent), "department_id"),
        ]
        async with grpc.aio.insecure_channel(bridge.address) as channel:
            stub = work_orders_pb2_grpc.WorkOrderSyncStub(channel)
            for request, field_name in cases:
                error = await refused(stub.ReportStatus(request, metadata=call_metadata(key)))
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field_name, error.details())
                assert field_name in [f for f, _ in field_violations(error)], (field_name, error.details())
            never = await refused(stub.ReportStatus(a_report(water, "WO-NEVER-SENT"), metadata=call_metadata(key)))
            assert never.code() == grpc.StatusCode.NOT_FOUND and "never sent" in (never.details() or "")
            bridge.recorder.not_yet.add(sent)
            early = await stub.ReportStatus(a_report(water, sent), metadata=call_metadata(key))
            assert early.outcome == work_orders_pb2.ReportStatusResponse.OUTCOME_HELD, "kept, not refused"
            bridge.recorder.not_yet.clear()
            ahead = a_report(water, sent)
            ahead.changed_at.FromDatetime(datetime.now(UTC) + timedelta(days=2))
            too_far = await refused(stub.ReportStatus(ahead, metadata=call_metadata(key)))
            assert too_far.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "changed_at" in [f for f, _ in field_violations(too_far)]
            for raw_method in ("ReportStatus", "WorkOrders", "Acknowledge"):
                garbage = await refused(raw_call(channel, raw_method, key, b"\x0a\x05\xff\xfe\xfd\xfc\xfb"))
                assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT, raw_method
            beyond = await refused(
                stub.Acknowledge(
                    work_orders_pb2.AcknowledgeRequest(department_id=water, sequence=2), metadata=call_metadata(key)
                )
            )
            assert beyond.code() == grpc.StatusCode.INVALID_ARGUMENT and "latest message of the feed is 1" in (
                beyond.details() or ""
            )
            huge = await refused(
                stub.Acknowledge(
                    work_orders_pb2.AcknowledgeRequest(department_id=water, sequence=2**64 - 1),
                    metadata=call_metadata(key),
                )
            )
            assert huge.code() == grpc.StatusCode.INVALID_ARGUMENT
            # and a good report, in our vocabulary, goes through
            ours = await stub.ReportStatus(
                a_report(water, sent, our_status=work_orders_pb2.WORK_ORDER_STATUS_ACTION_SCHEDULED, note="Tue"),
                metadata=call_metadata(key),
            )
            unmapped = await stub.ReportStatus(
                a_report(
                    water,
                    sent,
                    their_status="Awaiting Parts",
                    changed_at=stamp(datetime.now(UTC) + timedelta(seconds=1)),
                ),
                metadata=call_metadata(key),
            )
    assert (
        ours.outcome == work_orders_pb2.ReportStatusResponse.OUTCOME_RECORDED and ours.our_status == "action_scheduled"
    )
    assert unmapped.our_status == "", "no mapping knows it: recorded in their words for the bridge to note"
    assert [u.status for _, u in bridge.recorder.received] == ["action_scheduled", "Awaiting Parts"]
    assert (await bridge.outbox.feed(water)).acknowledged == 0


def raw_call(channel: grpc.aio.Channel, method: str, key: str, body: bytes) -> object:
    """Bytes that are no message (a string field with invalid UTF-8), sent as they are."""
    path = f"/civicflow.v1.WorkOrderSync/{method}"
    if method == "WorkOrders":
        stream = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
        return stream(body, metadata=call_metadata(key)).read()
    unary = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    return unary(body, metadata=call_metadata(key), timeout=10)


# --- at least once ------------------------------------------------------------------------------------------


async def test_a_message_is_sent_again_until_acknowledged(engine: AsyncEngine) -> None:
    water = unique("water")
    key = (await create_client(engine, unique("water-system"), frozenset({department_scope(water)}))).reveal()
    async with work_order_sync(engine, {water: ConnectorSpec(kind="grpc")}) as bridge:
        connector = GrpcConnector(water, ConnectorSpec(kind="grpc"), bridge.outbox)
        first = await connector.open_work_order(a_request(), str(uuid4()))
        async with grpc.aio.insecure_channel(bridge.address) as channel:
            stub = work_orders_pb2_grpc.WorkOrderSyncStub(channel)
            received = await first_message(stub, water, key)
            again = await first_message(stub, water, key)  # the client hung up without acknowledging
            assert isinstance(received, work_orders_pb2.WorkOrderMessage)
            assert isinstance(again, work_orders_pb2.WorkOrderMessage)
            assert again.message_id == received.message_id and again.work_order.external_id == first.external_id

            # on one open stream too: after redeliver_seconds without an acknowledgement, it comes again
            stream = stub.WorkOrders(
                work_orders_pb2.WorkOrdersRequest(department_id=water), metadata=call_metadata(key)
            )
            try:
                one = await asyncio.wait_for(stream.read(), timeout=10)
                two = await asyncio.wait_for(stream.read(), timeout=10)
            finally:
                stream.cancel()
            assert one.message_id == two.message_id == received.message_id

            await stub.Acknowledge(
                work_orders_pb2.AcknowledgeRequest(department_id=water, sequence=received.sequence),
                metadata=call_metadata(key),
            )
            second = await connector.open_work_order(a_request(), str(uuid4()))
            after = await first_message(stub, water, key)
    assert isinstance(after, work_orders_pb2.WorkOrderMessage)
    assert after.sequence == 2 and after.work_order.external_id == second.external_id, "acknowledged: never again"


async def test_the_feed_tables_hold_nothing_personal(engine: AsyncEngine) -> None:
    """What the feed keeps of a work order is what the department is sent: catalogue words, never a resident's."""
    water = unique("water")
    connector = GrpcConnector(water, ConnectorSpec(kind="grpc"), GrpcOutbox(engine))
    await connector.open_work_order(a_request(), str(uuid4()))
    async with engine.connect() as conn:
        body = (
            await conn.execute(
                text("SELECT body FROM workorder_bridge.grpc_outbox WHERE department_id = :d"), {"d": water}
            )
        ).scalar_one()
    assert set(body) == {"tracking_number", "service_code", "summary", "due_at", "priority", "attributes"}


# --- generated reports, through the bridge's real recorder --------------------------------------------------

HONEST = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,  # a work order the feed never carried
    grpc.StatusCode.PERMISSION_DENIED,  # another department
}


async def routed_case(engine: AsyncEngine, department_id: str, external_id: str) -> None:
    """What the bridge holds for an opened work order: the case's CaseRouted and the work_orders row."""
    case_id, correlation = uuid7(), uuid7()
    routed = CaseRouted(
        department_id=department_id,
        department_name="Water Department",
        priority="normal",
        due_at=None,
        rule_id="test",
        rule_set_version="test",
    )
    async with engine.begin() as tx:
        [event] = await STORE.append(tx, case_id, 0, [routed], EventMetadata(correlation_id=correlation, actor="test"))
        await tx.execute(
            text(
                "INSERT INTO workorder_bridge.work_orders"
                " (department_id, external_id, case_id, system, opened_by_event, correlation_id)"
                " VALUES (:d, :x, :c, 'grpc', :e, :r)"
            ),
            {"d": department_id, "x": external_id, "c": case_id, "e": event.event_id, "r": correlation},
        )


def reports(department_id: str, external_id: str) -> st.SearchStrategy[work_orders_pb2.ReportStatusRequest]:
    """Each field good three times in four (so some reports are wholly good), else anything at all."""

    def mostly(good: st.SearchStrategy[object], hostile: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return st.one_of(good, good, good, hostile)

    texts = st.text(max_size=130)
    now = int(datetime.now(UTC).timestamp())  # a generated input; no outcome depends on the clock
    stamps = mostly(
        st.builds(Timestamp, seconds=st.integers(946_684_800, now), nanos=st.integers(0, 999_999_999)),
        st.builds(Timestamp, seconds=st.integers(-(2**62), 2**62), nanos=st.integers(-(2**31), 2**31 - 1)),
    )
    common = {
        "department_id": mostly(st.just(department_id), texts),
        "external_id": mostly(st.just(external_id), texts),
        "note": mostly(st.sampled_from(["", "crew on site", "fixed\nnew valve"]), st.text(max_size=2100)),
        "update_id": mostly(st.just(""), texts),
        "refers_to": mostly(st.sampled_from(["", "CT-1234"]), texts),
        "changed_at": stamps,
    }
    their_words = mostly(st.sampled_from(["done", "in_progress", "Awaiting Parts", "FIXED"]), texts)
    theirs = st.builds(work_orders_pb2.ReportStatusRequest, their_status=their_words, **common)
    ours = st.builds(
        work_orders_pb2.ReportStatusRequest, our_status=mostly(st.integers(1, 11), st.integers(-5, 20)), **common
    )
    return st.one_of(theirs, ours)


async def test_generated_reports_get_honest_answers_and_only_accepted_ones_are_recorded(engine: AsyncEngine) -> None:
    water = unique("water")
    spec = ConnectorSpec(kind="grpc")
    key = (await create_client(engine, unique("water-system"), frozenset({department_scope(water)}))).reveal()
    outbox = GrpcOutbox(engine)
    recorder = UpdateRecorder(engine, STORE, {water: spec})
    servicer = WorkOrderSyncServicer(outbox, {water: spec}, recorder, TIMING)
    port = free_port()
    gatekeeper = Gatekeeper(PostgresClientDirectory(engine), RateLimiter(1e6, 1_000_000))
    server = await build_grpc_server(
        port, [servicer_entry(servicer)], "workorder_bridge", KernelSettings(), AccessControl(gatekeeper)
    )
    await server.start()
    sent = (await GrpcConnector(water, spec, outbox).open_work_order(a_request(), str(uuid4()))).external_id
    await routed_case(engine, water, sent)
    answers: Counter[str] = Counter()
    recorded = 0
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            send = channel.unary_unary(
                "/civicflow.v1.WorkOrderSync/ReportStatus",
                request_serializer=work_orders_pb2.ReportStatusRequest.SerializeToString,
                response_deserializer=work_orders_pb2.ReportStatusResponse.FromString,
            )

            @hypothesis_settings(
                max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            @given(request=reports(water, sent))
            def report(request: work_orders_pb2.ReportStatusRequest) -> None:
                nonlocal recorded
                try:
                    reply = send(request, metadata=call_metadata(key), timeout=30)
                    code = grpc.StatusCode.OK
                    recorded += reply.outcome == work_orders_pb2.ReportStatusResponse.OUTCOME_RECORDED
                except grpc.RpcError as error:
                    code = error.code()
                    assert "Traceback" not in (error.details() or "") and "SELECT" not in (error.details() or "")
                answers[code.name] += 1
                assert code in HONEST, f"{code.name} for {str(request)[:300]!r}"

            await asyncio.to_thread(report)
    finally:
        await server.stop(None)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT count(*) FROM workorder_bridge.status_updates WHERE department_id = :d"), {"d": water}
            )
        ).scalar_one()
    print(f"generated ReportStatus answers: {dict(answers)}, recorded {recorded}")
    assert rows == recorded, "a refused report records nothing"
    assert answers["OK"] > 0 and answers["INVALID_ARGUMENT"] > 0
