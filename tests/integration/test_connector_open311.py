"""The open311 connector against the SAMPLE Open311 server on a free port (JSON and XML): the contract every kind
meets, then what is Open311's own: retries after lost answers, tokens, the updates cursor, the fallback to GET
requests, and answers from servers that get GeoReport wrong or are hostile."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicflow.department_systems import ConnectorSpec
from civicflow.infra import free_ports
from samples.open311_department.app import SampleOpen311Settings, create_app
from samples.open311_department.store import Open311Store
from services.workorder_bridge.connector import (
    CannotCancel,
    DepartmentUnavailable,
    ExternalUpdate,
    WorkOrderRefused,
)
from services.workorder_bridge.kinds.open311 import Open311Connector
from tests.conftest import eventually
from tests.connector_contract import ConnectorContract, a_request

API_KEY = "integration-open311-key-not-a-secret"
T0 = datetime(2030, 3, 4, 12, 0, 0, tzinfo=UTC)


class Clock:
    """A clock a test moves: the sample stamps updates with it, the connector polls by it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def serve(app: Starlette) -> tuple[str, Callable[[], Awaitable[None]]]:
    """The app on a free port; the URL and how to stop it (as an outage would)."""
    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started) or task.done()

    await eventually(started, timeout=20, what="a test server to start")
    stopped = False

    async def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            server.should_exit = True
            await task

    return f"http://127.0.0.1:{port}", stop


@dataclass
class SampleOpen311:
    """The connector wired to a running sample server, and the department's staff acting on it."""

    connector: Open311Connector
    spec: ConnectorSpec
    url: str
    store: Open311Store
    stop: Callable[[], Awaitable[None]]
    can_cancel: bool = True
    cursor: str | None = None
    received: list[ExternalUpdate] = field(default_factory=list)

    async def change_status(self, external_id: str, their_status: str, note: str | None = None, **extra: Any) -> None:
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{self.url}/sample/requests/{external_id}/status", json={"status": their_status, "note": note, **extra}
            )
        assert answer.status_code == 200, answer.text

    async def poll(self) -> list[ExternalUpdate]:
        page = await self.connector.updates_since(self.cursor)
        self.cursor = page.cursor
        self.received += page.updates
        return page.updates

    async def updates(self) -> list[ExternalUpdate]:
        await self.poll()
        return list(self.received)

    async def cancelled_there(self, external_id: str) -> bool:
        found = self.store.requests[external_id]
        return found.status == self.spec.theirs("cancelled") and len(found.posted) == 1

    async def stop_system(self) -> None:
        await self.stop()


@pytest.fixture
async def departments(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[SampleOpen311]]]:
    """Makes sample servers, each with a connector to it; all stopped after the test."""
    made: list[SampleOpen311] = []
    key_file = tmp_path / "open311.key"
    key_file.write_text(API_KEY)

    async def make(
        fmt: str = "json",
        clock: Clock | None = None,
        timeout: float = 5,
        spec_extra: dict[str, Any] | None = None,
        **settings: Any,
    ) -> SampleOpen311:
        sample = SampleOpen311Settings(
            state_dir=tmp_path / f"sample-{len(made)}",
            open311_api_key=API_KEY,
            sample_open311_step_seconds=0,
            **settings,
        )
        app = create_app(sample, **({"clock": clock} if clock else {}))
        url, stop = await serve(app)
        spec = ConnectorSpec.model_validate(
            {
                "kind": "open311",
                "endpoint": url,
                "credentials": {"file": str(key_file)},
                "jurisdiction_id": "sample-city",
                "format": fmt,
                "timeout_seconds": timeout,
                "services": {"POTHOLE": "4", "MISSED_PICKUP": "20"},
                **(spec_extra or {}),
            }
        )
        connector = Open311Connector("streets", spec, clock=clock)
        made.append(department := SampleOpen311(connector, spec, url, app.state.store, stop))
        return department

    yield make
    for department in made:
        await department.connector.aclose()
        await department.stop()


# The servers the contract runs against: GeoReport as the spec writes it, in JSON and in XML, and two that get it
# wrong as real ones do (objects where lists belong and times without a zone in the city's zone, which the city
# file then names; XML only, times without a zone in UTC).
DIALECTS_OF_SERVERS: dict[str, dict[str, Any]] = {
    "json": {"fmt": "json"},
    "xml": {"fmt": "xml"},
    "json-objects-naive-chicago": {
        "fmt": "json",
        "sample_open311_objects": True,
        "sample_open311_naive_zone": "America/Chicago",
        "spec_extra": {"timezone": "America/Chicago"},
    },
    "xml-only-naive-utc": {"fmt": "xml", "sample_open311_xml_only": True, "sample_open311_naive_zone": "UTC"},
}


class TestOpen311Connector(ConnectorContract):
    @pytest.fixture(params=list(DIALECTS_OF_SERVERS))
    async def department(
        self, request: pytest.FixtureRequest, departments: Callable[..., Awaitable[SampleOpen311]]
    ) -> SampleOpen311:
        return await departments(**DIALECTS_OF_SERVERS[request.param])


# -- opening --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_a_retry_after_a_lost_answer_finds_the_request_instead_of_opening_a_second(
    departments: Callable[..., Awaitable[SampleOpen311]], fmt: str
) -> None:
    department = await departments(fmt)
    async with httpx.AsyncClient() as client:
        await client.post(f"{department.url}/sample/faults", json={"lose_next_answers": 1})
    request, key = a_request(), str(uuid.uuid4())
    with pytest.raises(DepartmentUnavailable, match="502"):
        await department.connector.open_work_order(request, key)
    # A connector of a restarted bridge knows nothing of the first attempt: the look-up by key still finds it.
    restarted = Open311Connector("streets", department.spec)
    try:
        opened = await restarted.open_work_order(request, key)
    finally:
        await restarted.aclose()
    assert [r.id for r in department.store.by_key(key)] == [opened.external_id]


async def test_what_is_sent_service_code_place_attributes_and_our_key(
    departments: Callable[..., Awaitable[SampleOpen311]],
) -> None:
    department = await departments(spec_extra={"attributes": {"DEPTH": "depth_cm"}})
    request = a_request().model_copy(
        update={
            "lat": 41.88,
            "long": -87.63,
            "address": "100 N State St",
            "attributes": {"DEPTH": "12", "UNMAPPED": "x"},
        }
    )
    opened = await department.connector.open_work_order(request, "key-1")
    there = department.store.requests[opened.external_id]
    assert (there.service_code, there.lat, there.long, there.address) == ("4", 41.88, -87.63, "100 N State St")
    assert there.attributes == {"depth_cm": "12", "civicflow_key": "key-1"}
    assert there.description == request.summary


async def test_a_token_is_followed_until_it_names_the_request(
    departments: Callable[..., Awaitable[SampleOpen311]],
) -> None:
    department = await departments(timeout=15, sample_open311_token_seconds=1)
    opened = await department.connector.open_work_order(a_request(), "token-key")
    assert opened.external_id in department.store.requests


async def test_a_token_that_never_resolves_is_unavailable_and_the_retry_opens_nothing_more(
    departments: Callable[..., Awaitable[SampleOpen311]],
) -> None:
    department = await departments(timeout=0.5, sample_open311_token_seconds=3600)
    request = a_request()
    for _ in range(2):
        with pytest.raises(DepartmentUnavailable, match="token"):
            await department.connector.open_work_order(request, "slow-key")
    assert len(department.store.by_key("slow-key")) == 1


async def test_their_refusal_is_refused_and_wrong_settings_are_unavailable_with_a_hint(
    departments: Callable[..., Awaitable[SampleOpen311]], tmp_path: Path
) -> None:
    department = await departments()
    with pytest.raises(WorkOrderRefused) as refused:
        await department.connector.open_work_order(a_request("NOT_THEIRS"), str(uuid.uuid4()))
    assert refused.value.status_code == 400
    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_text("not-the-key-at-all-123")
    for spec_change, expected in (
        ({"credentials": {"file": str(wrong_key)}}, "HTTP 403; check the connector's endpoint and api key"),
        ({"endpoint": department.url + "/nowhere"}, "HTTP 404; check"),
        ({"credentials": {"env": "CIVICFLOW_TEST_UNSET_OPEN311_KEY"}}, "api key: the environment variable"),
    ):
        spec = ConnectorSpec.model_validate(department.spec.model_dump(exclude_unset=True) | spec_change)
        connector = Open311Connector("streets", spec)
        try:
            with pytest.raises(DepartmentUnavailable, match=expected):
                await connector.open_work_order(a_request(), str(uuid.uuid4()))
        finally:
            await connector.aclose()
    assert len(department.store.requests) == 0, "nothing opened by a refused or misconfigured call"


async def test_cancelling_where_their_system_has_no_updates_endpoint_cannot_cancel(
    departments: Callable[..., Awaitable[SampleOpen311]],
) -> None:
    department = await departments(sample_open311_updates_endpoint=False)
    opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
    with pytest.raises(CannotCancel):
        await department.connector.cancel_work_order(opened.external_id, "rerouted", str(uuid.uuid4()))


# -- the updates cursor ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(DIALECTS_OF_SERVERS))
async def test_updates_sharing_an_instant_are_neither_lost_nor_repeated(
    departments: Callable[..., Awaitable[SampleOpen311]], dialect: str
) -> None:
    clock = Clock()
    department = await departments(clock=clock, **DIALECTS_OF_SERVERS[dialect])
    ids = [(await department.connector.open_work_order(a_request(), str(uuid.uuid4()))).external_id for _ in range(3)]
    await department.change_status(ids[0], "investigating")
    await department.change_status(ids[1], "investigating")
    assert {u.external_id for u in await department.poll()} == {ids[0], ids[1]}
    await department.change_status(ids[2], "investigating")  # the same second as the cursor
    assert [u.external_id for u in await department.poll()] == [ids[2]]
    clock.now += timedelta(seconds=30)
    assert await department.poll() == []


@pytest.mark.parametrize("dialect", list(DIALECTS_OF_SERVERS))
async def test_a_late_update_inside_the_catch_up_window_arrives_one_older_does_not(
    departments: Callable[..., Awaitable[SampleOpen311]], dialect: str
) -> None:
    clock = Clock()
    settings = DIALECTS_OF_SERVERS[dialect]
    spec_extra = settings.get("spec_extra", {}) | {"catch_up_minutes": 10}
    department = await departments(clock=clock, **(settings | {"spec_extra": spec_extra}))
    a, b, c = [(await department.connector.open_work_order(a_request(), str(uuid.uuid4()))).external_id for _ in "abc"]
    await department.change_status(a, "investigating")
    assert len(await department.poll()) == 1
    clock.now = T0 - timedelta(minutes=5)  # their system records, late, a change it stamps 5 minutes back
    await department.change_status(b, "action_scheduled")
    clock.now = T0 - timedelta(minutes=15)  # and one older than the window
    await department.change_status(c, "fixed")
    clock.now = T0 + timedelta(minutes=1)
    assert [(u.external_id, u.status) for u in await department.poll()] == [(b, "action_scheduled")]
    assert await department.poll() == []


async def test_a_poll_not_recorded_is_handed_on_again_from_the_same_cursor(
    departments: Callable[..., Awaitable[SampleOpen311]],
) -> None:
    clock = Clock()
    department = await departments(clock=clock)
    opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
    await department.change_status(opened.external_id, "fixed", "pothole filled")
    first = await department.connector.updates_since(None)
    again = await department.connector.updates_since(None)
    assert first.updates == again.updates and len(first.updates) == 1
    assert first.updates[0].note == "pothole filled" and first.updates[0].update_id
    assert (await department.connector.updates_since(first.cursor)).updates == []


async def test_a_first_poll_reaches_back_the_catch_up_window(
    departments: Callable[..., Awaitable[SampleOpen311]],
) -> None:
    clock = Clock()
    department = await departments(clock=clock, spec_extra={"catch_up_minutes": 30})
    old, recent = [
        (await department.connector.open_work_order(a_request(), str(uuid.uuid4()))).external_id for _ in "ab"
    ]
    clock.now = T0 - timedelta(minutes=40)
    await department.change_status(old, "investigating")
    clock.now = T0 - timedelta(minutes=20)
    await department.change_status(recent, "investigating")
    clock.now = T0
    assert [u.external_id for u in await department.poll()] == [recent]


async def test_a_mapped_back_office_code_wins_over_the_status_an_unmapped_one_does_not(
    departments: Callable[..., Awaitable[SampleOpen311]],
) -> None:
    department = await departments(spec_extra={"statuses": {"reverse": {"CANC-DUP": "duplicate"}}})
    a, b = [(await department.connector.open_work_order(a_request(), str(uuid.uuid4()))).external_id for _ in "ab"]
    await department.change_status(a, "closed", external_status_code="CANC-DUP")
    await department.change_status(b, "closed", external_status_code="X17")
    polled = {u.external_id: u.status for u in await department.poll()}
    assert polled == {a: "CANC-DUP", b: "closed"}
    assert department.spec.ours(polled[a]) == "duplicate"


# -- the fallback: a server without servicerequestupdates ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_without_an_updates_endpoint_the_open_work_orders_requests_are_polled(
    departments: Callable[..., Awaitable[SampleOpen311]], fmt: str
) -> None:
    department = await departments(fmt, sample_open311_updates_endpoint=False)
    with pytest.raises(DepartmentUnavailable, match="no list of open work orders"):
        await department.poll()
    ids = [(await department.connector.open_work_order(a_request(), str(uuid.uuid4()))).external_id for _ in "ab"]

    async def open_ones() -> list[str]:
        return ids

    department.connector.open_work_orders = open_ones
    assert sorted((u.external_id, u.status) for u in await department.poll()) == sorted((i, "open") for i in ids)
    await department.change_status(ids[1], "fixed", "done")
    assert [(u.external_id, u.status, u.note) for u in await department.poll()] == [(ids[1], "fixed", "done")]
    assert await department.poll() == []


# -- servers that get GeoReport wrong, or are hostile ----------------------------------------------------------


@dataclass
class OddServer:
    """Answers every call with what the test sets: (status, body, content type)."""

    answer: tuple[int, bytes, str] = (200, b"[]", "application/json")

    def app(self) -> Starlette:
        async def any_call(_: Request) -> Response:
            status, body, kind = self.answer
            headers = {"Location": "http://127.0.0.1:9/elsewhere"} if 300 <= status < 400 else None
            return Response(body, status_code=status, media_type=kind, headers=headers)

        return Starlette(routes=[Route("/{path:path}", any_call, methods=["GET", "POST"])])


@pytest.fixture
async def odd(tmp_path: Path) -> AsyncIterator[tuple[OddServer, Callable[..., Open311Connector]]]:
    server = OddServer()
    url, stop = await serve(server.app())
    key_file = tmp_path / "odd.key"
    key_file.write_text(API_KEY)
    made: list[Open311Connector] = []

    def connector(fmt: str, clock: Clock | None = None) -> Open311Connector:
        spec = ConnectorSpec.model_validate(
            {"kind": "open311", "endpoint": url, "credentials": {"file": str(key_file)}, "format": fmt,
             "timeout_seconds": 2}
        )  # fmt: skip
        made.append(found := Open311Connector("streets", spec, clock=clock or Clock()))
        return found

    yield server, connector
    for found in made:
        await found.aclose()
    await stop()


LAUGHS = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "haha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><service_requests><request><service_request_id>&b;</service_request_id></request></service_requests>'  # noqa: E501
HOSTILE = [
    ("json", 200, b"not json at all"),
    ("json", 200, b"42"),
    ("json", 200, b'["a", "b"]'),
    ("json", 200, b"[" * 100_000),
    ("json", 200, b'{"service_requests": "nope"}'),
    ("json", 200, b""),
    ("json", 500, b"oops"),
    ("json", 302, b""),
    ("json", 429, b"slow down"),
    ("xml", 200, LAUGHS),
    ("xml", 200, b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><x>&ext;</x>'),
    ("xml", 200, b"<service_requests><request>"),
    ("xml", 200, b"\x00\xff\xfe garbage"),
    ("json", 200, b'[{"x": "' + b"y" * (9 * 1024 * 1024) + b'"}]'),
]


@pytest.mark.parametrize(("fmt", "status", "body"), HOSTILE, ids=[f"{f}-{s}-{b[:12]!r}" for f, s, b in HOSTILE])
async def test_a_hostile_or_broken_answer_is_unavailable_never_a_crash(
    odd: tuple[OddServer, Callable[..., Open311Connector]], fmt: str, status: int, body: bytes
) -> None:
    server, connector = odd
    server.answer = (status, body, f"application/{fmt}")
    found = connector(fmt)
    with pytest.raises(DepartmentUnavailable):
        await found.open_work_order(a_request(), "k")
    with pytest.raises(DepartmentUnavailable):
        await found.updates_since(None)
    health = await found.health()
    assert not health.up and health.detail


DIALECTS = [
    # a bare list, with milliseconds and Z, numbers for ids, extra fields, empty strings for absent ones
    b'[{"update_id": 7, "service_request_id": 123, "status": "fixed", "updated_datetime": "2030-03-04T11:59:00.250Z",'
    b' "description": "", "media_url": "", "extra": {"x": 1}}]',
    # wrapped, one object where a list is expected, no zone (UTC), nanoseconds
    b'{"service_request_updates": {"update_id": "7", "service_request_id": "123", "status": "fixed",'
    b' "updated_datetime": "2030-03-04T11:59:00.250000000"}}',
    # an offset, and a record left out for lacking a status
    b'{"service_request_updates": [{"update_id": "7", "service_request_id": "123", "status": "fixed",'
    b' "updated_datetime": "2030-03-04T05:59:00.25-06:00"}, {"service_request_id": "9", "status": ""}]}',
]


@pytest.mark.parametrize("body", DIALECTS)
async def test_dialects_of_the_updates_feed_read_alike(
    odd: tuple[OddServer, Callable[..., Open311Connector]], body: bytes
) -> None:
    server, connector = odd
    server.answer = (200, body, "application/json")
    page = await connector("json").updates_since(None)
    assert page.updates == [
        ExternalUpdate(
            external_id="123",
            status="fixed",
            changed_at=datetime(2030, 3, 4, 11, 59, 0, 250000, tzinfo=UTC),
            update_id="7",
        )
    ]


async def test_an_xml_feed_with_namespaces_and_a_single_record_reads(
    odd: tuple[OddServer, Callable[..., Open311Connector]],
) -> None:
    server, connector = odd
    server.answer = (
        200,
        b'<?xml version="1.0" encoding="utf-8"?><service_request_updates xmlns="urn:x"><request_update>'
        b"<update_id>7</update_id><service_request_id>123</service_request_id><status>fixed</status>"
        b"<updated_datetime>2030-03-04T11:59:00+00:00</updated_datetime><description>Filled</description>"
        b"<media_url/></request_update></service_request_updates>",
        "text/xml",
    )
    (update,) = (await connector("xml").updates_since(None)).updates
    assert (update.external_id, update.status, update.note, update.update_id) == ("123", "fixed", "Filled", "7")


# -- the sample city, as `civicflow dev` runs it ---------------------------------------------------------------


async def test_the_sample_citys_streets_connector_follows_a_pothole_to_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built as the bridge builds it (BUILDERS, the sample city's connector, the launcher's settings), against the
    sample moving each request along on its own: the pothole's updates arrive by polling, ending in `fixed`."""
    import yaml

    from civicflow.department_systems import connector_specs
    from civicflow.settings import SAMPLE_CITY
    from services.workorder_bridge.connector import ConnectorContext
    from services.workorder_bridge.kinds import BUILDERS
    from services.workorder_bridge.main import BridgeSettings

    monkeypatch.setenv("CIVICFLOW_OPEN311_API_KEY", API_KEY)
    sample = SampleOpen311Settings(state_dir=tmp_path, open311_api_key=API_KEY, sample_open311_step_seconds=0.2)
    app = create_app(sample)
    url, stop = await serve(app)
    spec = connector_specs(yaml.safe_load(SAMPLE_CITY.read_text())["departments"])["streets"]
    settings = BridgeSettings(state_dir=tmp_path, open311_sample_url=url)
    context = ConnectorContext(
        "streets", spec, settings, SAMPLE_CITY.parent, "http://127.0.0.1:9/cb", "http://127.0.0.1:9"
    )
    connector = BUILDERS["open311"](context)
    try:
        opened = await connector.open_work_order(a_request("POTHOLE"), str(uuid.uuid4()))
        assert app.state.store.requests[opened.external_id].service_code == "4"
        cursor: str | None = None
        seen: list[str] = []

        async def fixed() -> bool:
            nonlocal cursor
            page = await connector.updates_since(cursor)
            cursor = page.cursor
            seen.extend(u.status for u in page.updates if u.external_id == opened.external_id)
            return "fixed" in seen

        await eventually(fixed, timeout=20, what="the pothole to be fixed")
        assert seen == ["investigating", "action_scheduled", "fixed"]
        assert [spec.ours(s) for s in seen] == ["acknowledged", "action_scheduled", "resolved"]
        assert (tmp_path / "open311" / f"{opened.external_id}.json").exists(), "a readable file per request"
    finally:
        await connector.aclose()
        await stop()


async def test_a_server_found_without_an_updates_endpoint_is_asked_again_an_hour_later(
    odd: tuple[OddServer, Callable[..., Open311Connector]],
) -> None:
    server, connector = odd
    clock = Clock()
    found = connector("json", clock)
    server.answer = (404, b"[]", "application/json")
    with pytest.raises(DepartmentUnavailable, match="no list of open work orders"):
        await found.updates_since(None)

    async def nothing_open() -> list[str]:
        return []

    found.open_work_orders = nothing_open
    update = {"update_id": "8", "service_request_id": "123", "status": "fixed"}
    feed = [update | {"updated_datetime": (T0 + timedelta(minutes=59)).isoformat()}]
    server.answer = (200, json.dumps(feed).encode(), "application/json")  # the endpoint is back (a passing 404)
    clock.now = T0 + timedelta(minutes=30)
    assert (await found.updates_since(None)).updates == [], "within the hour: still polling requests"
    clock.now = T0 + timedelta(minutes=61)
    assert [u.update_id for u in (await found.updates_since(None)).updates] == ["8"]


async def test_the_benchmark_measures_against_a_sample(tmp_path: Path) -> None:
    from bench.open311 import run_format

    key_file = tmp_path / "bench.key"
    key_file.write_text(API_KEY)
    sample = SampleOpen311Settings(state_dir=tmp_path, open311_api_key=API_KEY, sample_open311_step_seconds=0)
    url, stop = await serve(create_app(sample))
    try:
        found = await run_format(url, API_KEY, key_file, "xml", 5)
    finally:
        await stop()
    assert found["updates_handed_on"] == 5 and found["repeat_poll_handed_on"] == 0
    assert found["opened_per_s"] > 0 and found["floor_get_services_per_s"] > 0


async def test_the_wrong_dialects_are_really_spoken(departments: Callable[..., Awaitable[SampleOpen311]]) -> None:
    """The contract's odd servers answer as advertised, so passing against them means something."""
    objects = await departments(**DIALECTS_OF_SERVERS["json-objects-naive-chicago"])
    opened = await objects.connector.open_work_order(a_request(), "dialect-key")
    await objects.change_status(opened.external_id, "fixed")
    xml_only = await departments(**DIALECTS_OF_SERVERS["xml-only-naive-utc"])
    async with httpx.AsyncClient() as client:
        assert isinstance((await client.get(f"{objects.url}/services.json")).json()["services"], list)
        one = (await client.get(f"{objects.url}/requests/{opened.external_id}.json")).json()["service_requests"]
        assert isinstance(one, dict), "one record as an object"
        feed = (await client.get(f"{objects.url}/servicerequestupdates.json")).json()["service_request_updates"]
        assert "+" not in feed["updated_datetime"] and "Z" not in feed["updated_datetime"]
        assert (await client.get(f"{xml_only.url}/services.json")).status_code == 404
        assert (await client.get(f"{xml_only.url}/services.xml")).status_code == 200


async def test_polling_resumes_from_its_cursor_after_a_restart_and_hands_nothing_on_twice(
    departments: Callable[..., Awaitable[SampleOpen311]],
) -> None:
    clock = Clock()
    department = await departments(clock=clock)
    a, b = [(await department.connector.open_work_order(a_request(), str(uuid.uuid4()))).external_id for _ in "ab"]
    await department.change_status(a, "investigating")
    assert [u.external_id for u in await department.poll()] == [a]
    stored = department.cursor  # what the bridge keeps per department
    restarted = Open311Connector("streets", department.spec, clock=clock)
    try:
        assert (await restarted.updates_since(stored)).updates == []
        await department.change_status(b, "investigating")
        await department.change_status(a, "fixed")
        page = await restarted.updates_since(stored)
        assert [(u.external_id, u.status) for u in page.updates] == [(b, "investigating"), (a, "fixed")]
        assert (await restarted.updates_since(page.cursor)).updates == []
    finally:
        await restarted.aclose()


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_a_work_order_is_read_back_as_their_system_shows_it(
    departments: Callable[..., Awaitable[SampleOpen311]], fmt: str
) -> None:
    department = await departments(fmt)
    opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
    await department.change_status(opened.external_id, "action_scheduled", "crew on Monday")
    found = await department.connector.read_work_order(opened.external_id)
    assert found is not None and (found.status, found.note) == ("action_scheduled", "crew on Monday")
    assert await department.connector.read_work_order("NOT-THERE") is None
