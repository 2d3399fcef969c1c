"""The read model against real PostgreSQL: a gap or a late event rebuilds the case from the store; the
public view locates a case as the city file allows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import grpc
import pytest

from civicflow import tracking
from civicflow.city import load_city
from civicflow.db import make_engine
from civicflow.events import (
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    Location,
    RecordedEvent,
    WorkOrderOpened,
)
from civicflow.eventstore import PostgresEventStore
from civicflow.ids import uuid7
from civicflow.settings import SAMPLE_CITY, KernelSettings
from civicflow.unit_of_work import UnitOfWork
from civicflow.v1 import query_pb2
from services.query.grpc_api import CaseQueryServicer
from services.query.readmodel import Projector, find_by_tracking_number, replay

pytestmark = pytest.mark.integration


async def test_a_dead_lettered_event_replayed_late_still_lands_in_the_case_view(settings: KernelSettings) -> None:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    case_id, now = uuid7(), datetime.now(UTC)
    number = f"T{case_id.hex[-7:]}"
    events = [
        CaseSubmitted(
            tracking_number=number,
            service_code="POTHOLE",
            description="deep",
            location=Location(address="1 Main St"),
            submitted_at=now,
        ),
        CaseRouted(
            department_id="streets",
            department_name="Streets",
            priority="normal",
            due_at=now + timedelta(days=5),
            rule_id="streets",
            rule_set_version="1",
        ),
        WorkOrderOpened(department_id="streets", system="rest", external_id="WO-9"),
    ]
    async with engine.begin() as tx:
        recorded = await store.append(tx, case_id, 0, events, EventMetadata(correlation_id=uuid7(), actor="test"))
    unit = UnitOfWork(engine, "query", store)

    async def projector(event: RecordedEvent) -> None:
        await unit.run([event], Projector())

    await projector(recorded[0])
    await projector(recorded[2])  # version 2 was dead-lettered: a gap
    async with engine.connect() as conn:
        found = await find_by_tracking_number(conn, number)
    assert found is not None
    record, timeline = found
    assert (record.status, record.department_id, record.last_version) == ("work_order_open", "streets", 3)
    assert [e.stage for e in timeline] == ["submitted", "routed", "work_order_opened"]

    await projector(recorded[1])  # replayed from the dead-letter topic after the fix
    async with engine.connect() as conn:
        again = await find_by_tracking_number(conn, number)
    assert again == found
    await engine.dispose()


async def test_get_case_shows_a_home_by_its_hundred_block_and_a_pothole_where_it_is(settings: KernelSettings) -> None:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    unit = UnitOfWork(engine, "query", store)
    city = load_city(SAMPLE_CITY)
    servicer = CaseQueryServicer(engine, lambda: city)
    views = {}
    for code in ("MISSED_PICKUP", "POTHOLE"):
        case_id = uuid7()
        number = tracking.issue()
        submitted = CaseSubmitted(
            tracking_number=number,
            service_code=code,
            description="at my house",
            location=Location(lat=41.881912, long=-87.627812, address="1234 W Madison St, Apt 2"),
            submitted_at=datetime.now(UTC),
        )
        async with engine.begin() as tx:
            [recorded] = await store.append(
                tx, case_id, 0, [submitted], EventMetadata(correlation_id=uuid7(), actor="test")
            )
        await unit.run([recorded], Projector())
        context = cast(grpc.aio.ServicerContext, None)  # only used to refuse, and this lookup succeeds
        views[code] = await servicer.GetCase(query_pb2.GetCaseRequest(tracking_number=number), context)
    await engine.dispose()

    home, street = views["MISSED_PICKUP"].location, views["POTHOLE"].location
    assert (home.lat, home.long, home.address) == (41.882, -87.628, "1200 block of W Madison St")
    assert (street.lat, street.long, street.address) == (41.881912, -87.627812, "1234 W Madison St, Apt 2")


async def test_a_batch_projects_several_cases_and_a_case_twice_in_one_unit_of_work(settings: KernelSettings) -> None:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    now = datetime.now(UTC)
    numbers, streams = [], []
    for _ in range(3):
        case_id = uuid7()
        number = f"B{case_id.hex[-7:]}"
        events = [
            CaseSubmitted(
                tracking_number=number,
                service_code="POTHOLE",
                description="deep",
                location=Location(address="1 Main St"),
                submitted_at=now,
            ),
            WorkOrderOpened(department_id="streets", system="rest", external_id=f"WO-{number}"),
        ]
        async with engine.begin() as tx:
            streams.append(
                await store.append(tx, case_id, 0, events, EventMetadata(correlation_id=uuid7(), actor="test"))
            )
        numbers.append(number)
    unit = UnitOfWork(engine, "query", store)
    first, second, third = streams
    # the first case whole, the second's first event only, the third from its second (a gap: rebuilt)
    assert await unit.run([first[0], second[0], first[1], third[1], first[1]], Projector()) == 4
    assert await unit.run([first[0], first[1], second[1]], Projector()) == 1, "redeliveries are skipped"

    async with engine.connect() as conn:
        found = [await find_by_tracking_number(conn, n) for n in numbers]
    await engine.dispose()
    for view in found:
        assert view is not None
        record, timeline = view
        assert (record.status, record.last_version) == ("work_order_open", 2)
        assert [e.stage for e in timeline] == ["submitted", "work_order_opened"]
        assert all(e.at.tzinfo is not None for e in timeline)


async def test_replay_rebuilds_what_the_live_projection_built_and_reports_progress(settings: KernelSettings) -> None:
    engine, store = make_engine(settings.database_url), PostgresEventStore()
    case_id, now = uuid7(), datetime.now(UTC)
    number = f"P{case_id.hex[-7:]}"
    events = [
        CaseSubmitted(
            tracking_number=number,
            service_code="POTHOLE",
            description="deep",
            location=Location(lat=41.88, long=-87.63, address="1 Main St"),
            submitted_at=now,
        ),
        CaseRouted(
            department_id="streets",
            department_name="Streets",
            priority="normal",
            due_at=now + timedelta(days=5),
            rule_id="streets",
            rule_set_version="1",
            time_zone="America/Chicago",
        ),
    ]
    async with engine.begin() as tx:
        recorded = await store.append(tx, case_id, 0, events, EventMetadata(correlation_id=uuid7(), actor="test"))
    await UnitOfWork(engine, "query", store).run(recorded, Projector())
    async with engine.connect() as conn:
        live = await find_by_tracking_number(conn, number)

    heard: list[int] = []
    count = await replay(engine, store, batch_size=3, progress=heard.append)
    async with engine.connect() as conn:
        rebuilt = await find_by_tracking_number(conn, number)
    await engine.dispose()
    assert live is not None and rebuilt == live
    assert heard == sorted(heard) and heard[-1] == count >= 2
