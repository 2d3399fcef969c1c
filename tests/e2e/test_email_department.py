"""A department that works from its inbox, through the running system: the work order is an email in the SMTP sink
(Code Enforcement's inbox in development), the department's reply resolves the case, and its one-click links
record only when their button is pressed."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.v1 import common_pb2, intake_pb2
from samples.smtp_sink.sink import StoredMessage, read_messages
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, stored_rows, view_reached

pytestmark = pytest.mark.e2e
WARD_3 = common_pb2.Location(lat=41.910, long=-87.610, address="3100 N Example Ave")
LINK = re.compile(r"^  ([a-z ]+): (http://\S+)", re.MULTILINE)


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("email")) as running:
        yield running


async def graffiti(clients: Clients) -> str:
    request = intake_pb2.SubmitRequestRequest(
        service_code="GRAFFITI", description="Tags on the garage door", location=WARD_3, channel="phone"
    )
    return (await clients.intake.SubmitRequest(request)).tracking_number


async def work_order_mail(system: SystemProcesses, number: str) -> StoredMessage:
    async def mailed() -> StoredMessage | None:
        found = [m for m in read_messages(system.mail_dir) if "[EM-" in m.subject and number in m.subject]
        return found[0] if found else None

    return await eventually(mailed, timeout=60, what="the work order's email in Code Enforcement's inbox")


async def test_a_reply_done_resolves_the_case(clients: Clients, system: SystemProcesses) -> None:
    number = await graffiti(clients)
    mail = await work_order_mail(system, number)
    assert mail.message["To"] == "code@sample-city.example"
    reference = mail.subject.split("]")[0].lstrip("[")
    # the email goes out before the bridge records the work order: a reply before that is held, not recorded
    await eventually(lambda: view_reached(clients, number, "work_order_opened"), what="the work order recorded")
    # as the department's staff would answer in development: the command line, on the sink's folder
    command = [sys.executable, "-m", "civicflow.cli", "mail", "reply", reference, "done: scrubbed the door"]
    replied = await asyncio.to_thread(
        subprocess.run, command, env=system.environment(), capture_output=True, text=True, timeout=120
    )
    assert replied.returncode == 0, replied.stderr
    assert "the bridge took it" in replied.stdout and "recorded" in replied.stdout
    view = await eventually(lambda: view_reached(clients, number, "resolved"), timeout=60, what="resolved")
    assert view.department_id == "code" and view.work_order_id == reference
    assert "scrubbed the door" in view.resolution


async def test_a_link_records_only_when_its_button_is_pressed(clients: Clients, system: SystemProcesses) -> None:
    number = await graffiti(clients)
    mail = await work_order_mail(system, number)
    reference = mail.subject.split("]")[0].lstrip("[")
    links = dict(LINK.findall(mail.text))
    await eventually(lambda: view_reached(clients, number, "work_order_opened"), what="the work order recorded")
    recorded = "SELECT status FROM workorder_bridge.status_updates WHERE department_id = 'code' AND external_id = :x"
    async with httpx.AsyncClient(timeout=15) as client:
        shown = await client.get(links["in progress"])
        assert shown.status_code == 200 and "<form" in shown.text
        assert await stored_rows(system, recorded, x=reference) == [], "opening the link records nothing"
        pressed = await client.post(links["in progress"])
        assert pressed.status_code == 200 and "Recorded" in pressed.text
    await eventually(lambda: view_reached(clients, number, "work_order_in_progress"), timeout=60, what="in progress")
