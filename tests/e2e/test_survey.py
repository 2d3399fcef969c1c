"""The satisfaction survey as the system runs (every survey 2 seconds after resolution): a resident who chose
texts is asked once through the sample provider and answers "4"; one who chose email opens a link (nothing
recorded) and presses its button; the case view shows each score."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.sandbox import isolated_system, scratch_database
from civicflow.v1 import common_pb2, intake_pb2
from samples.smtp_sink.sink import read_messages
from services.notifier.main import NotifierSettings
from services.notifier.telephony import DEV_ACCOUNT_SID
from tests.conftest import eventually
from tests.e2e.conftest import Clients, view_reached

pytestmark = pytest.mark.e2e

RESIDENT = "+13125550147"  # fictional (555-01xx)


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    state_dir = tmp_path_factory.mktemp("survey")
    async with scratch_database(infrastructure, "e2e") as url:
        own = Infrastructure(url, infrastructure.kafka_bootstrap_servers, infrastructure.kind)
        extra_env = {
            "CIVICFLOW_SAMPLE_DEPT_STEP_SECONDS": "0.5",
            "CIVICFLOW_HANDLER_RETRY_BASE_SECONDS": "0.05",
            "CIVICFLOW_RULES_DIR": str(state_dir / "rules"),
            "CIVICFLOW_API_KEY_RATE_PER_SECOND": "10000",
            "CIVICFLOW_API_KEY_BURST": "10000",
            "CIVICFLOW_TEXTING_HOURS": "",  # no test depends on the clock; tests/integration covers texting hours
            "CIVICFLOW_SURVEY_AFTER_SECONDS": "2",
            "CIVICFLOW_SURVEY_SCAN_SECONDS": "0.5",
        }
        async with isolated_system(own, state_dir, "e2e", extra_env) as running:
            yield running


def request(contact: intake_pb2.ResidentContact) -> intake_pb2.SubmitRequestRequest:
    return intake_pb2.SubmitRequestRequest(
        service_code="POTHOLE",
        description="Deep pothole in the eastbound lane",
        location=common_pb2.Location(address="82 W Alder St"),
        contact=contact,
        channel="phone",
    )


def survey_texts(system: SystemProcesses, tracking_number: str) -> list[str]:
    bodies = []
    for file in sorted((system.phone_dir / RESIDENT).glob("*.text.txt")):
        body = file.read_text().split("body:\n", 1)[1].split("\nstatus:", 1)[0].strip()
        if tracking_number in body and "How did we do" in body:
            bodies.append(body)
    return bodies


async def scored(clients: Clients, number: str, score: int) -> bool:
    view = await view_reached(clients, number, "survey_answered")
    return view is not None and view.satisfaction == score


async def test_a_resident_who_chose_texts_answers_4_and_the_case_view_shows_it(
    system: SystemProcesses, clients: Clients
) -> None:
    sms = intake_pb2.CONTACT_CHANNEL_SMS
    case = await clients.intake.SubmitRequest(
        request(intake_pb2.ResidentContact(phone=RESIDENT, preferred_channel=sms))
    )
    number = case.tracking_number

    async def asked() -> list[str] | None:
        return survey_texts(system, number) or None

    [question] = await eventually(asked, timeout=120, what="the survey texted after resolution")
    assert question == f"311: How did we do on {number}? Reply 1 (poor) to 5 (great)."

    token = NotifierSettings(state_dir=system.state_dir).telephony_token()
    async with httpx.AsyncClient(base_url=system.phone_url, auth=(DEV_ACCOUNT_SID, token), timeout=30) as client:
        answer = await client.post("/sample/inbound", data={"From": RESIDENT, "Body": "4"})
    answer.raise_for_status()
    assert [reply["body"] for reply in answer.json()["replies"]] == [f"311 {number}: thank you for your answer."]
    await eventually(lambda: scored(clients, number, 4), timeout=30, what="the score in the case view")
    assert len(survey_texts(system, number)) == 1, "asked once"


async def test_a_resident_who_chose_email_opens_a_link_and_presses_its_button(
    system: SystemProcesses, clients: Clients
) -> None:
    email = intake_pb2.CONTACT_CHANNEL_EMAIL
    contact = intake_pb2.ResidentContact(email="resident.survey@example.org", preferred_channel=email)
    case = await clients.intake.SubmitRequest(request(contact))
    number = case.tracking_number

    async def links() -> list[str] | None:
        for message in read_messages(system.mail_dir):
            if number in message.subject and "How did we do" in message.subject:
                return [word for word in message.text.split() if "/survey/" in word]
        return None

    found = await eventually(links, timeout=120, what="the survey email after resolution")
    assert len(found) == 5
    async with httpx.AsyncClient(timeout=30) as client:
        opened = await client.get(found[4])  # what a mail scanner does too: records nothing
        assert opened.status_code == 200 and '<form method="post">' in opened.text
        page = await client.post(found[4])  # the resident's button
    assert page.status_code == 200 and "Thank you" in page.text
    await eventually(lambda: scored(clients, number, 5), timeout=30, what="the score in the case view")
