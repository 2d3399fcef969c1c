"""The SAMPLE Open311 server, driven over HTTP in process (httpx.ASGITransport): what a bad request gets (the spec's
error list, in the format asked for) and that it changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from samples.open311_department.app import SampleOpen311Settings, create_app
from samples.open311_department.store import Open311Store

KEY = "unit-test-open311-key-4Rk9"


@pytest.fixture
async def sample(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Open311Store]]:
    app = create_app(SampleOpen311Settings(state_dir=tmp_path, open311_api_key=KEY, sample_open311_step_seconds=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sample") as client:
        yield client, app.state.store


GOOD = {"api_key": KEY, "service_code": "4", "description": "hole", "lat": "41.9", "long": "-87.6"}


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"api_key": "wrong"}, 403, "api_key"),
        ({"api_key": ""}, 403, "api_key"),
        ({"service_code": "999"}, 400, "service_code"),
        ({"lat": "north"}, 400, "lat and long"),
        ({"lat": "nan"}, 400, "within"),
        ({"long": "1e999"}, 400, "within"),
        ({"long": ""}, 400, "both lat and long"),
        ({"jurisdiction_id": "elsewhere"}, 404, "jurisdiction_id"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_a_bad_request_gets_the_error_list_and_opens_nothing(
    sample: tuple[httpx.AsyncClient, Open311Store], change: dict[str, str], status: int, words: str, fmt: str
) -> None:
    client, store = sample
    answer = await client.post(f"/requests.{fmt}", data=GOOD | change)
    assert answer.status_code == status
    if fmt == "json":
        assert answer.json()[0]["code"] == status and words in answer.json()[0]["description"]
    else:
        assert answer.text.startswith("<?xml") and f"<code>{status}</code>" in answer.text and words in answer.text
    assert store.requests == {}


async def test_bodies_that_are_not_forms_are_refused(sample: tuple[httpx.AsyncClient, Open311Store]) -> None:
    client, store = sample
    for body in (b"\xff\xfe\x00", b"x=" + b"y" * (65 * 1024)):
        answer = await client.post("/requests.json", content=body)
        assert answer.status_code == 400 and "body" in answer.json()[0]["description"]
    assert (await client.post("/requests.yaml", data=GOOD)).status_code == 404
    assert store.requests == {}


async def test_bad_dates_and_unknown_requests_are_refused_by_name(
    sample: tuple[httpx.AsyncClient, Open311Store],
) -> None:
    client, store = sample
    answer = await client.get("/servicerequestupdates.json", params={"start_date": "yesterday"})
    assert answer.status_code == 400 and "start_date" in answer.json()[0]["description"]
    answer = await client.get("/servicerequestupdates.json", params={"end_date": "2030-01-01T00:00:00"})
    assert answer.status_code == 400 and "zone" in answer.json()[0]["description"]
    assert (await client.get("/requests/NOPE.json")).status_code == 404
    assert (await client.get("/tokens/NOPE.xml")).status_code == 404
    update = {"api_key": KEY, "service_request_id": "NOPE", "update_id": "u1", "status": "CLOSED"}
    answer = await client.post("/servicerequestupdates.json", data=update | {"updated_datetime": "2030-01-01T00:00Z"})
    assert answer.status_code == 400 and "service_request_id" in answer.json()[0]["description"]
    answer = await client.post("/servicerequestupdates.json", data={"api_key": KEY})
    assert answer.status_code == 400 and "update_id" in answer.json()[0]["description"]
    assert store.requests == {} and store.updates == []


async def test_staff_moves_are_checked_and_a_posted_update_applies_once(
    sample: tuple[httpx.AsyncClient, Open311Store],
) -> None:
    client, store = sample
    opened = (await client.post("/requests.json", data=GOOD)).json()[0]["service_request_id"]
    for body in (b"not json", b'{"note": "no status"}', b'{"status": ""}', b'{"status": "a\\u0000b"}'):
        assert (await client.post(f"/sample/requests/{opened}/status", content=body)).status_code == 400
    assert (await client.post("/sample/requests/NOPE/status", json={"status": "fixed"})).status_code == 404
    assert store.updates == []
    update = {"api_key": KEY, "service_request_id": opened, "update_id": "u1", "status": "CLOSED",
              "description": "rerouted", "updated_datetime": "2030-01-01T00:00:00Z"}  # fmt: skip
    for _ in range(2):
        answer = await client.post("/servicerequestupdates.xml", data=update)
        assert answer.status_code == 200 and "<update_id>u1</update_id>" in answer.text
    assert store.requests[opened].status == "closed" and len(store.requests[opened].posted) == 1
    assert store.updates == [], "the client's own update is not put in the feed"
