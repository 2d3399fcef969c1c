"""Staff alerts as the system runs: a pothole flagged a hazard is routed urgent to streets, whose on-call
contacts in the sample city file are texted and called through the sample telephony provider; the duty
officer's ACK takes it, and the public timeline says so."""

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
from tests.e2e.conftest import Clients, running_system, view_reached

pytestmark = pytest.mark.e2e

# the sample city's streets on-call contacts (samples/city/sample_city.yaml; fictional 555-01xx numbers)
DUTY_OFFICER = "+13125550120"
NIGHT_SUPERVISOR = "+13125550121"  # by voice


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("alerts")) as running:
        yield running


def filed(system: SystemProcesses, number: str, kind: str, tracking_number: str) -> list[str]:
    """What the sample provider filed for a number (kind: text or call) that names the case."""
    return [
        f.read_text()
        for f in sorted((system.phone_dir / number).glob(f"*.{kind}.txt"))
        if tracking_number in f.read_text()
    ]


async def text_the_city(system: SystemProcesses, sender: str, body: str) -> list[str]:
    token = NotifierSettings(state_dir=system.state_dir).telephony_token()
    async with httpx.AsyncClient(base_url=system.phone_url, auth=(DEV_ACCOUNT_SID, token), timeout=30) as client:
        answer = await client.post("/sample/inbound", data={"From": sender, "Body": body})
    answer.raise_for_status()
    return [reply["body"] for reply in answer.json()["replies"]]


async def test_a_hazard_alerts_streets_on_call_and_the_duty_officer_takes_it(
    system: SystemProcesses, clients: Clients
) -> None:
    submitted = await clients.intake.SubmitRequest(
        intake_pb2.SubmitRequestRequest(
            service_code="POTHOLE",
            description="Deep pothole, a cyclist fell",
            location=common_pb2.Location(address="82 W Alder St"),
            flags=["hazard"],
            channel="phone",
        )
    )
    number = submitted.tracking_number
    await eventually(lambda: view_reached(clients, number, "staff_alerted"), timeout=90, what="on-call alerted")

    async def alerted() -> tuple[list[str], list[str]] | None:
        texts, calls = filed(system, DUTY_OFFICER, "text", number), filed(system, NIGHT_SUPERVISOR, "call", number)
        return (texts, calls) if texts and calls else None

    texts, calls = await eventually(alerted, timeout=60, what="the duty officer texted, the supervisor called")
    assert len(texts) == 1 and len(calls) == 1, "each on-call contact alerted once"
    code = texts[0].split("reply ACK ", 1)[1].split()[0]

    replies = await text_the_city(system, DUTY_OFFICER, f"ACK {code}")
    assert f"Thanks, Streets duty officer: {number} is yours." in replies
    view = await eventually(
        lambda: view_reached(clients, number, "alert_acknowledged"), timeout=60, what="the ACK on the timeline"
    )
    details = [e.detail for e in view.timeline]
    assert "urgent: on-call alerted" in details and "acknowledged by Streets duty officer" in details
    assert not any(DUTY_OFFICER[2:] in d or NIGHT_SUPERVISOR[2:] in d for d in details)
