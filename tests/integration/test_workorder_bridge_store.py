"""The bridge against real PostgreSQL and the sample department system (in process): a department whose
system is down parks its work orders instead of holding up everyone else's; status reports are recorded
once each, including a reopened job's second round."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from civicflow.backoff import Backoff
from civicflow.db import make_engine
from civicflow.department_systems import DEFAULT_CONNECTOR, ConnectorSpec
from civicflow.events import (
    CaseEvent,
    CaseNeedsTriage,
    CaseRecategorised,
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    RecordedEvent,
    ResolutionDisputed,
    WorkOrderReferred,
    WorkOrderRejected,
    WorkOrderStatusChanged,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import UnitOfWork, in_order
from samples.department_workorders.app import SampleDepartmentSettings, create_app
from services.workorder_bridge.connector import (
    DepartmentUnavailable,
    ExternalUpdate,
    Health,
    OpenedWorkOrder,
    Outcome,
    UpdatesPage,
)
from services.workorder_bridge.connectors import DepartmentSystems
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.kinds.rest_webhook import RestWebhookConnector
from services.workorder_bridge.opener import WorkOrderOpener
from services.workorder_bridge.updates import UpdateRecorder

pytestmark = pytest.mark.integration
STORE = PostgresEventStore()
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def later(hours: float) -> datetime:
    """A retry pass `hours` after the opener's clock (NOW)."""
    return NOW + timedelta(hours=hours)


@dataclass
class CountingConnector:
    """The real rest_webhook connector of each department, counting the calls that reach the department system;
    `lose_next_answer` makes the next call reach the department and then time out on the way back."""

    client: httpx.AsyncClient
    calls: Counter[str]
    lose_next_answer: bool = False
    while_asked: Callable[[], Awaitable[object]] | None = None  # what happens while the department thinks

    def rest(self, department_id: str) -> RestWebhookConnector:
        return RestWebhookConnector(
            department_id, DEFAULT_CONNECTOR, "http://dept.test", timeout_seconds=10, client=self.client
        )

    def for_department(self, department_id: str) -> Counted:
        return Counted(self, self.rest(department_id))


class Counted:
    """One department's connector, counted (CountingConnector)."""

    kind = "rest_webhook"

    def __init__(self, counting: CountingConnector, rest: RestWebhookConnector) -> None:
        self._counting = counting
        self._rest = rest
        self.department_id = rest.department_id

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder:
        counting = self._counting
        counting.calls[self.department_id] += 1
        if counting.while_asked is not None:
            await counting.while_asked()
        opened = await self._rest.open_work_order(request, idempotency_key)
        if counting.lose_next_answer:
            counting.lose_next_answer = False
            raise DepartmentUnavailable(f"{self.department_id}: the answer was lost (ReadTimeout)")
        return opened

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None:
        await self._rest.cancel_work_order(external_id, reason, idempotency_key)

    async def updates_since(self, cursor: str | None) -> UpdatesPage:
        return await self._rest.updates_since(cursor)

    async def health(self) -> Health:
        return await self._rest.health()

    async def aclose(self) -> None:
        return None


class Recorder(UpdateRecorder):
    """The real recorder, with a shorthand for one update in the department's words."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, STORE, {"streets": ConnectorSpec(kind="rest_webhook"), "water": WATER})

    def report(
        self,
        external_id: str,
        status: str,
        changed_at: datetime,
        note: str | None = None,
        *,
        department_id: str = "streets",
        update_id: str | None = None,
        refers_to: str | None = None,
    ) -> Awaitable[Outcome]:
        update = ExternalUpdate(external_id, status, changed_at, note, update_id=update_id, refers_to=refers_to)
        return self(department_id, update)


# water's system speaks its own words for two of our statuses
WATER = ConnectorSpec.model_validate(
    {"kind": "rest_webhook", "statuses": {"reverse": {"Crew Booked": "action_scheduled", "Finished": "resolved"}}}
)


class Department:
    """The sample department system in process; `out_of_order` is the set of departments answering 503."""

    def __init__(self) -> None:
        self.settings = SampleDepartmentSettings(sample_dept_step_seconds=3600)

        async def no_callbacks(url: str, body: bytes, headers: Mapping[str, str]) -> int:
            return 204

        self.app: Starlette = create_app(self.settings, send=no_callbacks)

    def out_of_order(self, *departments: str) -> None:
        self.settings.sample_dept_out_of_order = ",".join(departments)


@pytest.fixture
async def engine(settings: KernelSettings) -> AsyncIterator[AsyncEngine]:
    """The session's database, with nothing parked by an earlier test."""
    engine = make_engine(settings.database_url)
    async with engine.begin() as tx:
        await tx.execute(text("DELETE FROM workorder_bridge.pending_work_orders"))
    yield engine
    await engine.dispose()


@pytest.fixture
async def department() -> AsyncIterator[Department]:
    department = Department()
    yield department
    await department.app.state.crews.stop()


@pytest.fixture
async def connector(department: Department) -> AsyncIterator[CountingConnector]:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=department.app), base_url="http://dept.test")
    yield CountingConnector(client, Counter())
    await client.aclose()


class OpenerUnderTest:
    """The opener's policy as its consumer runs it, each event in a unit of work of its own."""

    def __init__(self, engine: AsyncEngine, opener: WorkOrderOpener) -> None:
        self._unit = UnitOfWork(engine, "workorder_bridge", STORE)
        self._opener = opener
        self._policy = in_order({"CaseRouted": opener, "CaseRerouted": opener})

    async def __call__(self, event: RecordedEvent) -> None:
        await self._unit.run([event], self._policy)

    async def retry_due(self, now: datetime) -> int:
        return await self._opener.retry_due(now)


@pytest.fixture
def opener(engine: AsyncEngine, connector: CountingConnector) -> OpenerUnderTest:
    systems = DepartmentSystems(lambda department_id, spec: connector.for_department(department_id), {})
    policy = WorkOrderOpener(engine, STORE, systems, "http://bridge.test/hook", Backoff(5.0, 300.0), clock=lambda: NOW)
    return OpenerUnderTest(engine, policy)


def decision(department_id: str) -> CaseRouted:
    return CaseRouted(
        department_id=department_id,
        department_name=department_id.title(),
        priority="normal",
        due_at=NOW + timedelta(days=2),
        rule_id="r",
        rule_set_version="v1",
    )


def rerouted_to(department_id: str) -> CaseRerouted:
    routed = decision(department_id).model_dump()
    return CaseRerouted(**routed, reason="recategorised", previous_department_id="streets")


async def routed_case(engine: AsyncEngine, department_id: str) -> RecordedEvent:
    case_id = uuid7()
    submitted = CaseSubmitted(
        tracking_number=f"T-{case_id.hex[-6:]}",
        service_code="POTHOLE",
        description="a hole",
        location=Location(address="1 Main St"),
        submitted_at=NOW,
    )
    meta = EventMetadata(correlation_id=uuid7(), actor="test")
    async with engine.begin() as tx:
        return (await STORE.append(tx, case_id, 0, [submitted, decision(department_id)], meta))[-1]


async def append(engine: AsyncEngine, case_id: UUID, event: CaseEvent) -> RecordedEvent:
    async with engine.begin() as tx:
        [recorded] = await STORE.append(tx, case_id, None, [event], EventMetadata(correlation_id=uuid7(), actor="t"))
    return recorded


async def key_taken(connector: CountingConnector, department_id: str, case: RecordedEvent) -> None:
    """Another job already went to the department under this decision's key: it answers 409 from now on."""
    other = WorkOrderRequest(
        case_id=str(uuid7()),
        tracking_number="T-OTHER",
        service_code="POTHOLE",
        summary="another job",
        callback_url="http://elsewhere.test/hook",
        due_at=NOW,
    )
    await connector.rest(department_id).open_work_order(other, str(case.event_id))
    connector.calls.clear()


async def types(engine: AsyncEngine, case_id: UUID) -> list[str]:
    async with engine.connect() as conn:
        return [e.type for e in await STORE.read_stream(conn, case_id)]


async def parked(engine: AsyncEngine, case_id: UUID) -> tuple[str, int] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT department_id, attempts FROM workorder_bridge.pending_work_orders WHERE case_id = :c"),
                {"c": case_id},
            )
        ).first()
    return (row.department_id, row.attempts) if row else None


async def test_a_department_that_is_down_parks_its_work_order_and_holds_up_no_one_else(
    engine: AsyncEngine, opener: OpenerUnderTest, department: Department, connector: CountingConnector
) -> None:
    department.out_of_order("streets")
    pothole, missed_pickup = await routed_case(engine, "streets"), await routed_case(engine, "sanitation")

    await opener(pothole)  # returns: the consumer can go on to the next case
    await opener(missed_pickup)

    assert await types(engine, pothole.case_id) == ["CaseSubmitted", "CaseRouted", "WorkOrderSyncFailed"]
    assert await types(engine, missed_pickup.case_id) == ["CaseSubmitted", "CaseRouted", "WorkOrderOpened"]
    assert await parked(engine, pothole.case_id) == ("streets", 1)

    await opener(pothole)  # a redelivery neither calls the department nor records anything
    assert connector.calls["streets"] == 1
    assert await types(engine, pothole.case_id) == ["CaseSubmitted", "CaseRouted", "WorkOrderSyncFailed"]

    assert await opener.retry_due(NOW + timedelta(seconds=4)) == 0  # not due: the first retry is 5 s after
    assert connector.calls["streets"] == 1


async def test_parked_work_orders_open_once_when_the_department_answers_again(
    engine: AsyncEngine, opener: OpenerUnderTest, department: Department, connector: CountingConnector
) -> None:
    department.out_of_order("streets")
    cases = [await routed_case(engine, "streets") for _ in range(3)]
    for case in cases:
        await opener(case)
    calls_while_parking = connector.calls["streets"]

    assert await opener.retry_due(later(1)) == 0
    assert connector.calls["streets"] == calls_while_parking + 1, "a department found down is tried once per pass"
    assert {await parked(engine, c.case_id) for c in cases} == {("streets", 2)}

    department.out_of_order()
    assert await opener.retry_due(later(2)) == 3
    assert await opener.retry_due(later(3)) == 0
    for case in cases:
        assert await types(engine, case.case_id) == [
            "CaseSubmitted",
            "CaseRouted",
            "WorkOrderSyncFailed",
            "WorkOrderOpened",
        ]
        assert await parked(engine, case.case_id) is None
    assert len(department.app.state.store) == 3


async def test_a_later_decision_replaces_the_one_waiting(
    engine: AsyncEngine, opener: OpenerUnderTest, department: Department, connector: CountingConnector
) -> None:
    department.out_of_order("streets")
    case = await routed_case(engine, "streets")
    await opener(case)
    await opener(await append(engine, case.case_id, rerouted_to("forestry")))

    assert await parked(engine, case.case_id) is None
    department.out_of_order()
    assert await opener.retry_due(later(1)) == 0
    assert connector.calls == Counter({"streets": 1, "forestry": 1})
    assert (await types(engine, case.case_id))[-1] == "WorkOrderOpened"


async def external_id_of(engine: AsyncEngine, case_id: UUID) -> str:
    """The id the department's system gave the case's work order."""
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT external_id FROM workorder_bridge.work_orders WHERE case_id = :c"), {"c": case_id}
        )
    assert isinstance(found, str), "the case has no work order"
    return found


async def test_each_status_report_is_recorded_once_and_only_if_it_says_something_new(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    case = await routed_case(engine, "streets")
    await opener(case)
    external_id = await external_id_of(engine, case.case_id)
    record = Recorder(engine)

    async def report(status: str, minutes: int, note: str | None = None) -> str:
        changed_at = NOW + timedelta(minutes=minutes)
        outcome = await record.report(external_id, status, changed_at, note)
        return outcome.value

    assert [
        await report("in_progress", 1, "crew scheduled"),
        await report("in_progress", 2, "crew on site"),  # a new note on the same status
        await report("done", 2),  # the same minute: a system that stamps whole minutes
        await report("done", 2),  # the department's webhook, delivered twice
        await report("done", 3),  # and again, stamped with the time it was resent
        await report("in_progress", 1, "crew scheduled"),  # a late redelivery of the first
        await report("in_progress", 0),  # older than what is recorded: it would turn a done job back
        await report("in_progress", 4, "failed inspection"),  # the department reopened its job
        await report("done", 5),
        await report("done", 6, "Repaired again, and a new note"),
    ] == [
        "recorded",
        "recorded",
        "recorded",
        "duplicate",
        "duplicate",
        "outdated",
        "outdated",
        "recorded",
        "recorded",
        "recorded",
    ]
    # The case is resolved once; the job's later changes are on its timeline, none resolves it again.
    # Each records the department's system as who acted.
    async with engine.connect() as conn:
        actors = await conn.scalars(
            text("SELECT DISTINCT metadata->>'actor' FROM events.case_events WHERE case_id = :c AND version > 3"),
            {"c": case.case_id},
        )
        assert list(actors) == ["department:streets"]
    assert (await types(engine, case.case_id))[3:] == [
        "WorkOrderStatusChanged",
        "WorkOrderStatusChanged",
        "WorkOrderStatusChanged",
        "CaseResolved",
        "WorkOrderStatusChanged",
        "WorkOrderStatusChanged",
        "WorkOrderStatusChanged",
    ]


async def test_a_second_done_from_another_report_resolves_nothing_again(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    case = await routed_case(engine, "streets")
    await opener(case)
    external_id = await external_id_of(engine, case.case_id)
    record = Recorder(engine)
    outcomes = [
        await record.report(external_id, "done", NOW, "Confirm your details"),
        await record.report(external_id, "resolved", NOW + timedelta(hours=2), "Repaired by crew 2"),
        await record.report(external_id, "rejected", NOW + timedelta(hours=3)),
    ]

    assert [o.value for o in outcomes] == ["recorded", "recorded", "recorded"]
    assert (await types(engine, case.case_id)).count("CaseResolved") == 1
    assert (await types(engine, case.case_id))[-3:] == [
        "CaseResolved",
        "WorkOrderStatusChanged",
        "WorkOrderStatusChanged",
    ], "no second resolution, and a resolved case is not sent back to the router"


async def work_order_opened_by(engine: AsyncEngine, decision: RecordedEvent) -> str:
    """The id the department's system gave the work order opened for this routing decision."""
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT external_id FROM workorder_bridge.work_orders WHERE opened_by_event = :e"),
            {"e": decision.event_id},
        )
    assert isinstance(found, str), "the decision opened no work order"
    return found


async def test_after_a_dispute_only_the_reopened_work_order_resolves_or_rejects_the_case(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    case = await routed_case(engine, "streets")
    await opener(case)
    disputed_order = await work_order_opened_by(engine, case)
    record = Recorder(engine)

    def report(external_id: str, status: str, hours: float, note: str) -> Awaitable[Outcome]:
        return record.report(external_id, status, later(hours), note)

    await report(disputed_order, "done", 1, "Filled")
    await append(engine, case.case_id, ResolutionDisputed(channel="voice", call_sid="CA" + "1" * 32))
    reopened = await append(engine, case.case_id, rerouted_to("streets"))
    await opener(reopened)
    reopened_order = await work_order_opened_by(engine, reopened)

    resent = await report(disputed_order, "done", 2, "Filled, resent with a new note")
    late_refusal = await report(disputed_order, "rejected", 3, "not ours after all")

    assert [resent.value, late_refusal.value] == ["recorded", "recorded"]
    assert (await types(engine, case.case_id))[-2:] == ["WorkOrderStatusChanged", "WorkOrderStatusChanged"], (
        "the disputed work order neither resolves the reopened case again nor sends it away"
    )
    await report(reopened_order, "done", 4, "Filled properly")
    assert (await types(engine, case.case_id))[-2:] == ["WorkOrderStatusChanged", "CaseResolved"]


async def test_a_decision_replaced_while_it_waited_is_dropped_without_calling_the_department(
    engine: AsyncEngine, opener: OpenerUnderTest, department: Department, connector: CountingConnector
) -> None:
    department.out_of_order("streets")
    triaged, recategorised = await routed_case(engine, "streets"), await routed_case(engine, "streets")
    await opener(triaged)
    await opener(recategorised)
    # The router has decided again, and the bridge's consumer has not got there yet (or never will:
    # it does not act on triage).
    await append(engine, triaged.case_id, CaseNeedsTriage(queue="call-centre", reason="r", rule_set_version="v1"))
    rerouted = await append(engine, recategorised.case_id, rerouted_to("forestry"))
    department.out_of_order()

    assert await opener.retry_due(later(1)) == 0
    assert connector.calls == Counter({"streets": 2}), "only the two calls that found streets down"
    assert await parked(engine, triaged.case_id) is None and await parked(engine, recategorised.case_id) is None
    assert (await types(engine, triaged.case_id))[-1] == "CaseNeedsTriage"

    await opener(rerouted)
    assert connector.calls["forestry"] == 1 and (await types(engine, recategorised.case_id))[-1] == "WorkOrderOpened"


async def test_a_lost_answer_then_a_recategorisation_still_finds_the_same_work_order(
    engine: AsyncEngine, opener: OpenerUnderTest, department: Department, connector: CountingConnector
) -> None:
    case = await routed_case(engine, "streets")
    connector.lose_next_answer = True
    await opener(case)  # the department opened it; the bridge never heard
    assert await parked(engine, case.case_id) == ("streets", 1)
    await append(
        engine,
        case.case_id,
        CaseRecategorised(service_code="SINKHOLE", previous_service_code="POTHOLE", reason="caller misread"),
    )

    assert await opener.retry_due(later(1)) == 1
    assert len(department.app.state.store) == 1, "the retry sent the same request, so no second work order"
    assert (await types(engine, case.case_id))[-1] == "WorkOrderOpened"


async def test_a_refused_work_order_goes_back_to_the_router_as_turned_down(
    engine: AsyncEngine, opener: OpenerUnderTest, department: Department, connector: CountingConnector
) -> None:
    refused_now, refused_later = await routed_case(engine, "streets"), await routed_case(engine, "streets")
    for case in (refused_now, refused_later):
        await key_taken(connector, "streets", case)

    await opener(refused_now)
    await opener(refused_now)  # a redelivery: decided once
    department.out_of_order("streets")
    await opener(refused_later)
    department.out_of_order()
    assert await opener.retry_due(later(1)) == 0

    for case in (refused_now, refused_later):
        history = await stream(engine, case.case_id)
        assert [e.type for e in history][-1] == "WorkOrderRejected"
        rejected = history[-1].data
        assert isinstance(rejected, WorkOrderRejected) and rejected.department_id == "streets"
        assert rejected.reason == "its work-order system refused the work order (HTTP 409)"
        assert await parked(engine, case.case_id) is None
    assert [e.type for e in await stream(engine, refused_now.case_id)].count("WorkOrderRejected") == 1
    assert connector.calls["streets"] == 3


async def test_one_broken_parked_row_holds_up_no_other_and_a_long_outage_never_overflows_the_backoff(
    engine: AsyncEngine, opener: OpenerUnderTest, department: Department, connector: CountingConnector
) -> None:
    broken, long_down, fine = [await routed_case(engine, d) for d in ("streets", "water", "sanitation")]
    department.out_of_order("streets", "water", "sanitation")
    for case in (broken, long_down, fine):
        await opener(case)
    async with engine.begin() as tx:  # the first due: one whose event cannot be found, one down for days
        await tx.execute(
            text(
                "UPDATE workorder_bridge.pending_work_orders SET routed_event_id = :e, next_attempt_at = :t"
                " WHERE case_id = :c"
            ),
            {"e": uuid7(), "t": NOW - timedelta(hours=2), "c": broken.case_id},
        )
        await tx.execute(
            text("UPDATE workorder_bridge.pending_work_orders SET attempts = 5000 WHERE case_id = :c"),
            {"c": long_down.case_id},
        )
    department.out_of_order("water")

    assert await opener.retry_due(later(1)) == 1
    assert await parked(engine, broken.case_id) == ("streets", 2)
    assert await parked(engine, long_down.case_id) == ("water", 5001)
    assert await parked(engine, fine.case_id) is None
    async with engine.connect() as conn:
        due = await conn.scalar(
            text("SELECT next_attempt_at FROM workorder_bridge.pending_work_orders WHERE case_id = :c"),
            {"c": long_down.case_id},
        )
    assert due == NOW + timedelta(seconds=300)


async def stream(engine: AsyncEngine, case_id: UUID) -> list[RecordedEvent]:
    async with engine.connect() as conn:
        return await STORE.read_stream(conn, case_id)


async def test_a_decision_already_replaced_when_the_bridge_reaches_it_opens_nothing(
    engine: AsyncEngine, opener: OpenerUnderTest, connector: CountingConnector
) -> None:
    case = await routed_case(engine, "streets")
    rerouted = await append(engine, case.case_id, rerouted_to("forestry"))  # the bridge is behind

    await opener(case)
    await opener(rerouted)

    assert connector.calls == Counter({"forestry": 1})
    assert (await types(engine, case.case_id))[-2:] == ["CaseRerouted", "WorkOrderOpened"]


async def test_a_refusal_that_comes_back_after_the_case_was_rerouted_rejects_nothing(
    engine: AsyncEngine, opener: OpenerUnderTest, connector: CountingConnector
) -> None:
    case = await routed_case(engine, "streets")
    await key_taken(connector, "streets", case)
    connector.while_asked = lambda: append(engine, case.case_id, rerouted_to("forestry"))

    await opener(case)
    await opener(case)  # a redelivery: decided once

    assert connector.calls == Counter({"streets": 1})
    assert (await types(engine, case.case_id))[-1] == "CaseRerouted", "no WorkOrderRejected for a replaced decision"


async def test_two_work_orders_of_one_case_reporting_done_at_once_resolve_it_once(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    case = await routed_case(engine, "streets")
    await opener(case)
    await opener(await append(engine, case.case_id, rerouted_to("forestry")))
    async with engine.connect() as conn:
        work_orders = (
            await conn.execute(
                text("SELECT department_id, external_id FROM workorder_bridge.work_orders WHERE case_id = :c"),
                {"c": case.case_id},
            )
        ).all()
    assert len(work_orders) == 2
    record = Recorder(engine)

    outcomes = await asyncio.gather(
        *(record.report(x, "done", NOW, f"done by {d}", department_id=d) for d, x in work_orders)
    )

    assert [o.value for o in outcomes] == ["recorded", "recorded"]
    assert (await types(engine, case.case_id)).count("CaseResolved") == 1


# --- updates in our vocabulary ---------------------------------------------------------------------


async def opened_case(engine: AsyncEngine, opener: OpenerUnderTest, department_id: str = "streets") -> tuple[UUID, str]:
    case = await routed_case(engine, department_id)
    await opener(case)
    return case.case_id, await external_id_of(engine, case.case_id)


async def events_after_opening(engine: AsyncEngine, case_id: UUID) -> list[CaseEvent]:
    return [e.data for e in await stream(engine, case_id)][3:]


async def test_an_update_numbered_by_their_system_is_recorded_once_whatever_time_a_replay_carries(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    case_id, external_id = await opened_case(engine, opener)
    record = Recorder(engine)

    outcomes = [
        await record.report(external_id, "in_progress", later(1), "crew on site", update_id="u-1"),
        await record.report(external_id, "in_progress", later(2), "crew still on site", update_id="u-1"),
        await record.report(external_id, "resolved", later(3), "Filled", update_id="u-1"),
        await record.report(external_id, "resolved", later(3), "Filled", update_id="u-2"),
    ]

    assert [o.value for o in outcomes] == ["recorded", "duplicate", "duplicate", "recorded"]
    assert (await types(engine, case_id))[3:] == ["WorkOrderStatusChanged", "WorkOrderStatusChanged", "CaseResolved"]


async def test_their_words_are_mapped_by_the_departments_connector_and_an_unknown_one_is_noted_and_counted(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    case_id, external_id = await opened_case(engine, opener, "water")
    record = Recorder(engine)
    counted = REGISTRY.get_sample_value(
        "civicflow_workorder_unmapped_status_total", {"department": "water", "kind": "rest_webhook"}
    )

    await record.report(external_id, "Crew Booked", later(1), department_id="water")
    await record.report(external_id, "awaiting parts", later(2), "valve on order", department_id="water")
    await record.report(external_id, "Finished", later(3), "Main repaired", department_id="water")

    booked, unmapped, finished, resolved = await events_after_opening(engine, case_id)
    assert booked == WorkOrderStatusChanged(
        external_id=external_id, status="action_scheduled", external_status="Crew Booked"
    )
    assert unmapped == WorkOrderStatusChanged(
        external_id=external_id, status="unmapped", note="valve on order", external_status="awaiting parts"
    )
    assert isinstance(finished, WorkOrderStatusChanged) and finished.status == "resolved"
    assert isinstance(resolved, CaseResolved) and resolved.resolution == "Main repaired"
    after = REGISTRY.get_sample_value(
        "civicflow_workorder_unmapped_status_total", {"department": "water", "kind": "rest_webhook"}
    )
    assert after == (counted or 0) + 1


async def test_a_reopened_job_reopens_the_case_and_its_next_resolved_resolves_it_again(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    case_id, external_id = await opened_case(engine, opener)
    record = Recorder(engine)

    await record.report(external_id, "resolved", later(1), "Filled")
    await record.report(external_id, "reopened", later(2), "failed inspection")
    await record.report(external_id, "in_progress", later(3), "crew back")
    await record.report(external_id, "resolved", later(4), "Filled properly")
    await record.report(external_id, "reopened", later(5), "Filled properly")  # what a late echo could be

    assert [type(e).__name__ for e in await events_after_opening(engine, case_id)] == [
        "WorkOrderStatusChanged",
        "CaseResolved",
        "WorkOrderStatusChanged",
        "CaseReopened",
        "WorkOrderStatusChanged",
        "WorkOrderStatusChanged",
        "CaseResolved",
        "WorkOrderStatusChanged",
        "CaseReopened",
    ]


async def test_a_replaced_work_order_reopening_its_job_only_records_its_change(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    case = await routed_case(engine, "streets")
    await opener(case)
    first = await work_order_opened_by(engine, case)
    moved = await append(engine, case.case_id, rerouted_to("water"))
    await opener(moved)
    second = await work_order_opened_by(engine, moved)
    record = Recorder(engine)

    await record.report(second, "resolved", later(1), "done by water", department_id="water")
    await record.report(first, "reopened", later(2), "we had another look")

    assert (await types(engine, case.case_id))[-3:] == [
        "WorkOrderStatusChanged",
        "CaseResolved",
        "WorkOrderStatusChanged",
    ]


@pytest.mark.parametrize(("refers_to", "to"), [("water", "water"), ("county-roads", None), (None, None)])
async def test_an_internal_referral_names_the_department_when_the_bridge_knows_it(
    engine: AsyncEngine, opener: OpenerUnderTest, refers_to: str | None, to: str | None
) -> None:
    case_id, external_id = await opened_case(engine, opener)

    await Recorder(engine).report(external_id, "internal_referral", later(1), "a water main", refers_to=refers_to)

    *_, referred = await events_after_opening(engine, case_id)
    assert referred == WorkOrderReferred(
        department_id="streets", to_department_id=to, external_id=external_id, note="a water main"
    )


async def test_a_duplicate_resolves_the_case_as_one_and_cancelled_sends_it_back_to_the_router(
    engine: AsyncEngine, opener: OpenerUnderTest
) -> None:
    duplicate_case, duplicate_order = await opened_case(engine, opener)
    cancelled_case, cancelled_order = await opened_case(engine, opener)
    record = Recorder(engine)

    await record.report(duplicate_order, "duplicate", later(1), refers_to="T-000001")
    await record.report(cancelled_order, "cancelled", later(1), "crew withdrawn")

    *_, resolved = await events_after_opening(engine, duplicate_case)
    assert resolved == CaseResolved(resolution="a duplicate of T-000001", resolved_at=later(1), duplicate_of="T-000001")
    *_, rejected = await events_after_opening(engine, cancelled_case)
    assert rejected == WorkOrderRejected(
        department_id="streets",
        reason="the department cancelled its work order: crew withdrawn",
        external_id=cancelled_order,
    )
