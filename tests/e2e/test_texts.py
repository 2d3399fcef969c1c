"""A resident who chose text messages, as the system runs: one text per stage through the sample telephony
provider, each one's delivery report on the timeline, STATUS answered, and STOP honoured on a later case."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.v1 import common_pb2, intake_pb2
from services.notifier.main import NotifierSettings
from services.notifier.telephony import DEV_ACCOUNT_SID
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, stored_rows, view_reached

pytestmark = pytest.mark.e2e

RESIDENT = "+13125550142"  # fictional (555-01xx)


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("texts")) as running:
        yield running


def by_text(phone: str) -> intake_pb2.SubmitRequestRequest:
    return intake_pb2.SubmitRequestRequest(
        service_code="POTHOLE",
        description="Deep pothole in the eastbound lane",
        location=common_pb2.Location(address="82 W Alder St"),
        contact=intake_pb2.ResidentContact(phone=phone, preferred_channel=intake_pb2.CONTACT_CHANNEL_SMS),
        channel="phone",
    )


def texts_about(system: SystemProcesses, tracking_number: str) -> list[str]:
    """The bodies of the texts the sample provider filed for this resident that name this case."""
    bodies = []
    for file in sorted((system.phone_dir / RESIDENT).glob("*.text.txt")):
        body = file.read_text().split("body:\n", 1)[1].split("\nstatus:", 1)[0]
        if tracking_number in body and "direction: outbound-api" in file.read_text():
            bodies.append(body.strip())
    return bodies


async def text_the_city(system: SystemProcesses, body: str) -> list[str]:
    """Text the city's number as the resident; what the city answered."""
    token = NotifierSettings(state_dir=system.state_dir).telephony_token()
    async with httpx.AsyncClient(base_url=system.phone_url, auth=(DEV_ACCOUNT_SID, token), timeout=30) as client:
        answer = await client.post("/sample/inbound", data={"From": RESIDENT, "Body": body})
    answer.raise_for_status()
    return [reply["body"] for reply in answer.json()["replies"]]


async def test_a_resident_who_chose_texts_hears_each_stage_once_asks_for_status_and_stops(
    system: SystemProcesses, clients: Clients
) -> None:
    first = await clients.intake.SubmitRequest(by_text("(312) 555-0142"))  # read in the city's region (US)
    number = first.tracking_number
    await eventually(lambda: view_reached(clients, number, "resolved"), timeout=90, what="the first case resolved")

    async def three_texts() -> list[str] | None:
        found = texts_about(system, number)
        return found if len(found) >= 3 else None

    bodies = await eventually(three_texts, timeout=60, what="a text for each stage")
    assert len(bodies) == 3, "one text per stage, none twice"
    everything = " ".join(bodies)  # files of one second are in no particular order
    assert "we got your request" in everything and "Public Works - Streets" in everything and "resolved" in everything

    async def delivered_on_the_timeline() -> list[str] | None:
        view = await view_reached(clients, number, "resident_texted")
        lines = [e.detail for e in view.timeline if e.stage == "resident_texted"] if view else []
        return lines if len(lines) >= 3 else None

    lines = await eventually(delivered_on_the_timeline, timeout=60, what="each text's delivery report on the timeline")
    assert sorted(lines) == sorted(f"texted about '{s}', delivered" for s in ("submitted", "routed", "resolved"))

    answered = await text_the_city(system, "status")
    assert any(number in reply for reply in answered), "STATUS answers with the case"

    assert await text_the_city(system, "STOP")
    second = await clients.intake.SubmitRequest(by_text("+13125550142"))
    await eventually(
        lambda: view_reached(clients, second.tracking_number, "resolved"), timeout=90, what="the second case resolved"
    )

    async def told_not_sent() -> bool:
        """The notifier has settled the second case's last stage: recorded as not sent, since STOP."""
        rows = await stored_rows(
            system,
            "SELECT data->>'reason' FROM events.case_events WHERE case_id = CAST(:c AS uuid)"
            " AND type = 'NotificationFailed' AND data->>'stage' = 'resolved'",
            c=second.case_id,
        )
        return bool(rows)

    await eventually(told_not_sent, timeout=60, what="the resolved stage recorded as not texted")
    assert texts_about(system, second.tracking_number) == [], "no text after STOP"


async def test_a_text_whose_delivery_reports_are_all_lost_is_found_delivered_by_asking_the_provider(
    system: SystemProcesses, clients: Clients
) -> None:
    # The sample provider posts no status callback for a number ending 0006 (Twilio's test range): the notifier's
    # status checks (CIVICFLOW_TEXT_STATUS_CHECK_SECONDS, 3 s here) must ask for each text's outcome.
    case = await clients.intake.SubmitRequest(by_text("+15005550006"))

    async def submitted_delivered() -> list[str] | None:
        view = await view_reached(clients, case.tracking_number, "resident_texted")
        lines = [e.detail for e in view.timeline if e.stage == "resident_texted"] if view else []
        return lines if "texted about 'submitted', delivered" in lines else None

    await eventually(submitted_delivered, timeout=60, what="the first text's outcome, asked of the provider")
