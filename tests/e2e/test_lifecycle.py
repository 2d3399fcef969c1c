"""One request through all five services, as separate processes, driven through the public gRPC API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from civicflow.db import make_engine
from civicflow.grpc_errors import field_violations
from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.v1 import common_pb2, intake_pb2, query_pb2
from samples.smtp_sink.sink import read_messages
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, stored_rows, view_reached

pytestmark = pytest.mark.e2e

# A pothole goes to Public Works - Streets, whose system speaks Open311: its SAMPLE server moves the request
# open -> investigating -> action_scheduled -> fixed, and the bridge reads each change by polling.
ALL_STAGES = [
    "submitted",
    "routed",
    "work_order_opened",
    "work_order_acknowledged",
    "work_order_action_scheduled",
    "work_order_done",
    "resolved",
]


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("lifecycle")) as running:
        yield running


def pothole(email: str = "", key: str = "") -> intake_pb2.SubmitRequestRequest:
    return intake_pb2.SubmitRequestRequest(
        service_code="POTHOLE",
        description="Deep pothole in the eastbound lane",
        location=common_pb2.Location(lat=41.8819, long=-87.6278, address="1200 W Madison St"),
        contact=intake_pb2.ResidentContact(
            name="Ada Resident",
            email=email,
            preferred_channel=intake_pb2.CONTACT_CHANNEL_EMAIL if email else intake_pb2.CONTACT_CHANNEL_UNSPECIFIED,
        ),
        idempotency_key=key,
        channel="phone",
    )


async def requests_stored(system: SystemProcesses, keys: list[str]) -> int:
    """How many of these idempotency keys intake recorded. Only this test's own keys: other tests' cases
    keep moving in the same database while it runs, so a count of all rows says nothing."""
    [(count,)] = await stored_rows(
        system, "SELECT count(*) FROM intake.requests WHERE idempotency_key = ANY(:keys)", keys=keys
    )
    return int(count)


async def test_a_request_goes_from_submission_to_resolution_and_the_resident_hears_each_stage(
    system: SystemProcesses, clients: Clients
) -> None:
    reply = await clients.intake.SubmitRequest(pothole(email="ada@example.org"))
    assert len(reply.tracking_number) == 8 and not reply.replayed

    async def resolved_with_emails() -> query_pb2.CaseView | None:
        view = await view_reached(clients, reply.tracking_number, "resolved")
        if view is None or sum(e.stage == "resident_notified" for e in view.timeline) < 3:
            return None
        return view

    view = await eventually(resolved_with_emails, timeout=60, what="the case to be resolved and notified")
    stages = [e.stage for e in view.timeline if e.stage != "resident_notified"]
    assert stages == ALL_STAGES
    assert view.department_id == "streets" and view.department_name == "Public Works - Streets"
    assert view.time_zone == "America/Chicago", "times are read in the department's calendar zone"
    assert view.due_at.ToDatetime() > view.submitted_at.ToDatetime()
    assert view.work_order_id and view.resolution
    assert "Ada" not in str(view) and "example.org" not in str(view), "the public view leaked contact data"

    mails = [m for m in read_messages(system.mail_dir) if reply.tracking_number in m.subject]
    assert sorted(m.message_id or "" for m in mails) == [
        f"<{reply.case_id}.{stage}@civicflow.local>" for stage in ("resolved", "routed", "submitted")
    ]
    assert all(m.message["To"] == "ada@example.org" for m in mails)

    # The read model is disposable: rebuilt from the store, it answers the same.
    env = {**os.environ, **system.environment()}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "civicflow.cli", "replay", "query"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "read model rebuilt" in result.stdout
    assert await clients.query.GetCase(query_pb2.GetCaseRequest(tracking_number=reply.tracking_number)) == view


async def test_the_same_idempotency_key_returns_the_same_case(system: SystemProcesses, clients: Clients) -> None:
    first = await clients.intake.SubmitRequest(pothole(key="call-7731-attempt"))
    again = await clients.intake.SubmitRequest(pothole(key="call-7731-attempt"))
    assert (again.tracking_number, again.case_id, again.replayed) == (first.tracking_number, first.case_id, True)
    different = pothole(key="call-7731-attempt")
    different.description = "Something else entirely"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.intake.SubmitRequest(different)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    engine = make_engine(system.infra.database_url)
    async with engine.connect() as conn:
        submitted = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM events.case_events"
                    " WHERE type = 'CaseSubmitted' AND data->>'tracking_number' = :t"
                ),
                {"t": first.tracking_number},
            )
        ).scalar_one()
    await engine.dispose()
    assert submitted == 1 and await requests_stored(system, ["call-7731-attempt"]) == 1


async def test_invalid_requests_are_refused_field_by_field_and_write_nothing(
    system: SystemProcesses, clients: Clients
) -> None:
    run = uuid4().hex[:12]
    bad = intake_pb2.SubmitRequestRequest(
        service_code="",
        description="Light out",
        location=common_pb2.Location(lat=123.0, long=0.0),
        contact=intake_pb2.ResidentContact(email="not-an-email"),
        idempotency_key=f"invalid-{run}-fields",
    )
    outside = pothole(key=f"invalid-{run}-outside")
    outside.location.lat, outside.location.long = 41.0, -87.0
    nul = pothole(key=f"invalid-{run}-nul")
    nul.location.address = "1200 W Madison St\x00; DROP TABLE"
    mailbox = pothole(email="ü@exämple.org", key=f"invalid-{run}-mailbox")
    expected = {
        bad.idempotency_key: {"service_code", "location.lat", "contact.email"},
        outside.idempotency_key: {"location"},
        nul.idempotency_key: {"location.address"},
        mailbox.idempotency_key: {"contact.email"},
    }
    refusals = {}
    for request in (bad, outside, nul, mailbox):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await clients.intake.SubmitRequest(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        refusals[request.idempotency_key] = dict(field_violations(refused.value))
        assert set(refusals[request.idempotency_key]) == expected[request.idempotency_key]
    assert "outside Sample City's service area" in refusals[outside.idempotency_key]["location"]
    assert "must be ASCII" in refusals[mailbox.idempotency_key]["contact.email"]
    assert "SELECT" not in str(refusals) and "INSERT" not in str(refusals)
    # Intake writes in the call, key and event in one transaction: none of these keys may have a row.
    assert await requests_stored(system, list(expected)) == 0


async def test_unknown_and_mistyped_tracking_numbers_are_told_apart(clients: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await clients.query.GetCase(query_pb2.GetCaseRequest(tracking_number="ZZZZ-ZZZ"[:7] + "Z"))
    with pytest.raises(grpc.aio.AioRpcError) as mistyped:
        reply = await clients.intake.SubmitRequest(pothole())
        symbols = reply.tracking_number.replace("-", "")
        typo = symbols[:2] + ("A" if symbols[2] != "A" else "B") + symbols[3:]
        await clients.query.GetCase(query_pb2.GetCaseRequest(tracking_number=typo))
    assert mistyped.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "typo" in (mistyped.value.details() or "")
    assert unknown.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


async def test_an_unknown_service_code_goes_to_the_call_centre(clients: Clients) -> None:
    request = pothole()
    request.service_code = "UFO_SIGHTING"
    reply = await clients.intake.SubmitRequest(request)
    view = await eventually(lambda: view_reached(clients, reply.tracking_number, "routed"), what="routed")
    assert (view.department_id, view.rule_id) == ("triage", "default")


def test_the_mail_dir_is_where_the_sink_writes(system: SystemProcesses) -> None:
    assert Path(system.mail_dir).is_dir()


async def test_every_service_serves_prometheus_metrics_of_what_it_handled(
    system: SystemProcesses, clients: Clients
) -> None:
    def scrape(service: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        body = httpx.get(f"http://127.0.0.1:{system.ports.metrics[service]}/metrics", timeout=5).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }

    async def scrape_all() -> dict[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
        return {service: await asyncio.to_thread(scrape, service) for service in system.ports.metrics}

    def handled(scraped: dict[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]) -> set[tuple[str, str]]:
        return {
            (service, dict(labels)["event_type"])
            for service, samples in scraped.items()
            for (name, labels), value in samples.items()
            if name == "civicflow_events_handled_total" and ("outcome", "handled") in labels and value > 0
        }

    expected = {("router", "CaseSubmitted"), ("workorder_bridge", "CaseRouted"), ("notifier", "CaseResolved")}

    async def counted() -> dict[str, dict[tuple[str, frozenset[tuple[str, str]]], float]] | None:
        scraped = await scrape_all()
        seen = handled(scraped)
        return scraped if expected <= seen and "query" in {service for service, _ in seen} else None

    await clients.intake.SubmitRequest(pothole(email="metrics@example.org"))
    scraped = await eventually(counted, timeout=60, what="a case counted by every service")
    leaders = [s for s, samples in scraped.items() if samples.get(("civicflow_relay_leader", frozenset())) == 1]
    assert len(leaders) == 1, f"one relay publishes, not {leaders}"
    assert scraped[leaders[0]][("civicflow_relay_published_events_total", frozenset())] > 0
    submitted = frozenset(
        {("service", "intake"), ("method", "/civicflow.v1.IntakeService/SubmitRequest"), ("code", "OK")}
    )
    assert scraped["intake"][("civicflow_grpc_requests_total", submitted)] >= 1


async def test_calls_without_a_key_are_refused_and_a_case_names_the_client_that_submitted_it(
    system: SystemProcesses, clients: Clients, tmp_path: Path
) -> None:
    from civicflow.v1 import intake_pb2_grpc, query_pb2_grpc, routing_pb2, routing_pb2_grpc

    unkeyed = {
        "intake": lambda ch: intake_pb2_grpc.IntakeServiceStub(ch).SubmitRequest(pothole(), timeout=10),
        "query": lambda ch: query_pb2_grpc.CaseQueryServiceStub(ch).GetCase(
            query_pb2.GetCaseRequest(tracking_number="QGPE-J5T"), timeout=10
        ),
        "router": lambda ch: routing_pb2_grpc.RoutingServiceStub(ch).ExplainRoute(
            routing_pb2.ExplainRouteRequest(tracking_number="QGPE-J5T"), timeout=10
        ),
    }
    for service, call in unkeyed.items():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{system.ports.grpc(service)}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, service
        assert "no API key" in (refused.value.details() or "")

    reply = await clients.intake.SubmitRequest(pothole())
    [actor] = await stored_rows(
        system,
        "SELECT metadata->>'actor' FROM events.case_events WHERE case_id = :c AND type = 'CaseSubmitted'",
        c=reply.case_id,
    )
    assert actor[0].startswith("client:e2e-client-")

    # the CLI sends CIVICFLOW_API_KEY; without it (and no cli.key in its state folder) it is told what to do
    await eventually(lambda: view_reached(clients, reply.tracking_number, "submitted"), what="the case in the query")
    env = {
        **os.environ,
        "CIVICFLOW_STATE_DIR": str(tmp_path),
        "CIVICFLOW_QUERY_ADDRESS": f"127.0.0.1:{system.ports.query}",
    }
    track = [sys.executable, "-m", "civicflow.cli", "track", reply.tracking_number]
    keyed = await asyncio.to_thread(
        subprocess.run, track, env={**env, "CIVICFLOW_API_KEY": system.api_key}, capture_output=True, text=True
    )
    assert keyed.returncode == 0 and reply.tracking_number in keyed.stdout, keyed.stderr
    env.pop("CIVICFLOW_API_KEY", None)
    bare = await asyncio.to_thread(subprocess.run, track, env=env, capture_output=True, text=True)
    assert bare.returncode == 1 and "civicflow keys create" in bare.stderr
