"""A resident who chose calls in Spanish, as the system runs: a call at resolution through the sample telephony
provider, in Spanish with the tracking number spelt out; pressing 2 on it disputes the resolution, and the case
goes back to its department (the view leaves 'resolved', a new work order opens)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.v1 import common_pb2, intake_pb2, query_pb2
from services.notifier.main import NotifierSettings
from services.notifier.telephony import DEV_ACCOUNT_SID
from services.notifier.voice import spelt
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, view_reached

pytestmark = pytest.mark.e2e

RESIDENT = "+13125550147"  # fictional (555-01xx); not ending 0003-0005, so the sample provider answers


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("calls")) as running:
        yield running


async def press_at_the_next_menu(system: SystemProcesses, digits: str) -> None:
    token = NotifierSettings(state_dir=system.state_dir).telephony_token()
    async with httpx.AsyncClient(base_url=system.phone_url, auth=(DEV_ACCOUNT_SID, token), timeout=30) as client:
        answer = await client.post("/sample/press", data={"To": RESIDENT, "Digits": digits})
    answer.raise_for_status()


def calls_with_a_menu(system: SystemProcesses) -> list[str]:
    """The transcripts of the calls the sample provider filed for the resident that offered the menu."""
    found = []
    for file in sorted((system.phone_dir / RESIDENT).glob("*.call.txt")):
        readable = file.read_text()
        if "Marque 2" in readable and "\n  " in readable and "completed" in readable.rsplit("status:", 1)[1]:
            found.append(readable)
    return found


async def test_a_spanish_voice_resident_is_called_at_resolution_and_pressing_2_sends_it_back(
    system: SystemProcesses, clients: Clients
) -> None:
    await press_at_the_next_menu(system, "2")  # only the resolution's call has a menu
    submitted = await clients.intake.SubmitRequest(
        intake_pb2.SubmitRequestRequest(
            service_code="POTHOLE",
            description="Deep pothole in the eastbound lane",
            location=common_pb2.Location(address="82 W Alder St"),
            contact=intake_pb2.ResidentContact(
                phone=RESIDENT, preferred_channel=intake_pb2.CONTACT_CHANNEL_VOICE, language="es"
            ),
            channel="phone",
        )
    )
    number = submitted.tracking_number

    async def the_resolution_call() -> str | None:
        found = calls_with_a_menu(system)
        return found[0] if found else None

    call = await eventually(the_resolution_call, timeout=120, what="the resolution's call, played to its end")
    assert "said (es-US):" in call and "said (en-US)" not in call
    assert spelt(number) in call, "the tracking number spelt symbol by symbol"
    assert "pressed: 2" in call and "Hemos devuelto su solicitud" in call

    async def sent_back() -> query_pb2.CaseView | None:
        view = await view_reached(clients, number, "resolution_disputed")
        if view is None:
            return None
        stages = [e.stage for e in view.timeline]
        after = stages[stages.index("resolution_disputed") :]
        return view if "rerouted" in after and "work_order_opened" in after else None

    async def answered() -> query_pb2.CaseView | None:
        view = await sent_back()
        lines = [e.detail for e in view.timeline] if view else []
        return view if "called about 'resolved', answered" in lines else None

    view = await eventually(answered, timeout=90, what="the case back with its department, the call's answer told")
    lines = [e.detail for e in view.timeline]
    assert "the resident said the problem is not fixed (by phone)" in lines
    assert sum(e.stage == "work_order_opened" for e in view.timeline) == 2
    assert sum(e.stage == "resolution_disputed" for e in view.timeline) == 1
