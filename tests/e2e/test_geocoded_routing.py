"""Address-only requests in the running system: placed by the sample city's address points and routed by ward."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.v1 import common_pb2, intake_pb2
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, view_reached

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("geocoded")) as running:
        yield running


async def submit_pothole(clients: Clients, location: common_pb2.Location) -> str:
    request = intake_pb2.SubmitRequestRequest(
        service_code="POTHOLE", description="Deep pothole in the eastbound lane", location=location, channel="phone"
    )
    return (await clients.intake.SubmitRequest(request)).tracking_number


async def test_an_address_only_pothole_is_geocoded_and_routed_by_its_ward(
    clients: Clients, system: SystemProcesses
) -> None:
    assert "address points" in system.address_points_loaded
    # ward 3 (north-east), written as a caller says it: no "N", a word for the street type, a unit
    east = await submit_pothole(clients, common_pb2.Location(address="110 north example avenue, apt 2"))
    # ward 4 (south-west), a typo in the street
    west = await submit_pothole(clients, common_pb2.Location(address="1510 W Elm Stret"))
    view = await eventually(lambda: view_reached(clients, east, "routed"), what="the ward 3 pothole routed")
    assert view.rule_id == "pothole-east-crew"
    assert view.point_source == "geocoded" and not view.unplaced
    assert (view.location.lat, view.location.long) == (41.887, -87.6099)  # the file's point (POTHOLE is exact)
    assert view.location.address == "110 north example avenue, apt 2"  # as given
    view = await eventually(lambda: view_reached(clients, west, "routed"), what="the ward 4 pothole routed")
    assert view.rule_id == "pothole-west-crew" and view.point_source == "geocoded"


async def test_an_address_that_cannot_be_placed_is_accepted_routed_by_its_other_facts_and_says_why(
    clients: Clients,
) -> None:
    number = await submit_pothole(clients, common_pb2.Location(address="9 Nowhere Rd"))
    view = await eventually(lambda: view_reached(clients, number, "routed"), what="the unplaced pothole routed")
    assert view.rule_id == "streets"  # no ward rule could hold; the service's group rule did
    assert view.point_source == ""
    assert view.unplaced == "no street of that name in the city's address file; check the street's spelling"


async def test_a_point_given_is_said_to_be_given(clients: Clients) -> None:
    number = await submit_pothole(clients, common_pb2.Location(lat=41.910, long=-87.690))
    view = await eventually(lambda: view_reached(clients, number, "routed"), what="the pothole with a point routed")
    assert view.rule_id == "pothole-west-crew" and view.point_source == "given"
