"""Routing through the running system: explained decisions, rules replaced live, rejections rerouted."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.v1 import common_pb2, intake_pb2, routing_pb2
from samples.smtp_sink.sink import read_messages
from services.router.main import DEFAULT_CITY
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, view_reached

pytestmark = pytest.mark.e2e
WARD_3 = common_pb2.Location(lat=41.910, long=-87.610, address="3100 N Example Ave")


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("routing")) as running:
        yield running


async def submit(clients: Clients, code: str, description: str, **extra: object) -> str:
    request = intake_pb2.SubmitRequestRequest(
        service_code=code, description=description, location=WARD_3, channel="phone", **extra
    )  # type: ignore[arg-type]
    return (await clients.intake.SubmitRequest(request)).tracking_number


async def test_the_case_view_shows_the_rule_and_explain_route_says_why(clients: Clients) -> None:
    number = await submit(clients, "POTHOLE", "Deep pothole, cars swerving", flags=["blocking_traffic"])
    view = await eventually(lambda: view_reached(clients, number, "routed"), what="routed")
    assert (view.rule_id, view.department_id, view.priority) == ("street-hazard-flagged", "streets", "urgent")
    explained = await clients.routing.ExplainRoute(routing_pb2.ExplainRouteRequest(tracking_number=number))
    assert explained.routed and explained.rule_id == "street-hazard-flagged"
    assert "flagged blocking_traffic" in explained.reasons
    assert explained.evaluations[-1].matched and not any(e.matched for e in explained.evaluations[:-1])
    draft = routing_pb2.DraftRequest(service_code="UFO_SIGHTING", description="lights", location=WARD_3)
    explained = await clients.routing.ExplainRoute(routing_pb2.ExplainRouteRequest(draft=draft))
    assert explained.rule_id == "default" and explained.department_id == "triage"


async def test_a_department_that_turns_a_case_down_sends_it_back_through_the_rules(
    clients: Clients, system: SystemProcesses
) -> None:
    contact = intake_pb2.ResidentContact(email="g@example.org", preferred_channel=intake_pb2.CONTACT_CHANNEL_EMAIL)
    number = await submit(clients, "BUILDING_NO_PERMIT", "Extension going up next door", contact=contact)
    view = await eventually(lambda: view_reached(clients, number, "rerouted"), timeout=60, what="rerouted")
    stages = [e.stage for e in view.timeline]
    assert stages.index("routed") < stages.index("turned_down") < stages.index("rerouted")
    assert view.department_id != "building"

    async def told_of_the_transfer() -> bool:
        subjects = [m.subject for m in read_messages(system.mail_dir)]
        return any(number in s and f"passed to {view.department_name}" in s for s in subjects)

    await eventually(told_of_the_transfer, what="an email saying who has the case now")


async def test_a_new_rule_set_takes_effect_without_a_restart_and_a_broken_one_is_refused(
    clients: Clients, system: SystemProcesses, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.yaml"
    shutil.copy(DEFAULT_CITY, outside)
    with pytest.raises(grpc.aio.AioRpcError) as not_here:
        await clients.routing.ReloadRules(routing_pb2.ReloadRulesRequest(path=str(outside)))
    assert "only rule sets under" in (not_here.value.details() or "")

    rules_dir = system.state_dir / "rules"
    shutil.copytree(DEFAULT_CITY.parent, rules_dir)
    candidate = rules_dir / DEFAULT_CITY.name
    text = candidate.read_text()
    version_line = next(line for line in text.splitlines() if line.startswith("version:"))
    candidate.write_text(text.replace(version_line, 'version: "e2e-reloaded"'))

    broken = rules_dir / "broken.yaml"
    broken.write_text(text.replace("rules:", "rulez:", 1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.routing.ReloadRules(routing_pb2.ReloadRulesRequest(path=str(broken)))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rules: required, and missing" in (refused.value.details() or "")

    reply = await clients.routing.ReloadRules(routing_pb2.ReloadRulesRequest(path=str(candidate)))
    assert reply.rule_set_version == "e2e-reloaded"
    number = await submit(clients, "POTHOLE", "another one")
    await eventually(lambda: view_reached(clients, number, "routed"), what="routed")
    explained = await clients.routing.ExplainRoute(routing_pb2.ExplainRouteRequest(tracking_number=number))
    assert explained.rule_set_version == "e2e-reloaded"


async def test_a_call_taker_recategorises_a_case_and_the_router_places_it_again(clients: Clients) -> None:
    number = await submit(clients, "POTHOLE", "Loud party next door, not a pothole at all")
    await eventually(lambda: view_reached(clients, number, "routed"), what="routed")
    reply = await clients.intake.RecategoriseCase(
        intake_pb2.RecategoriseCaseRequest(
            tracking_number=number, service_code="NOISE_COMPLAINT", reason="caller misread"
        )
    )
    assert reply.previous_service_code == "POTHOLE"
    view = await eventually(lambda: view_reached(clients, number, "rerouted"), what="rerouted")
    assert view.service_code == "NOISE_COMPLAINT" and view.department_id in ("code", "police")
    with pytest.raises(grpc.aio.AioRpcError) as same:
        await clients.intake.RecategoriseCase(
            intake_pb2.RecategoriseCaseRequest(tracking_number=number, service_code="NOISE_COMPLAINT", reason="again")
        )
    assert same.value.code() == grpc.StatusCode.FAILED_PRECONDITION
