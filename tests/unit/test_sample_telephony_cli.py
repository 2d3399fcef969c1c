"""`civicflow phone …` against the sample telephony provider served on a free port, with a stand-in city that
answers texts in TwiML."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from civicflow.infra import free_ports
from samples.telephony.app import create_app
from samples.telephony.cli import phone_app
from samples.telephony.provider import SampleTelephonySettings
from tests.conftest import served_in_thread

SID = "AC" + "8" * 32
TOKEN = "cli-telephony-token-for-tests-only"
RESIDENT = "+15555550142"  # fictional (555-01xx)


def _city() -> Starlette:
    async def inbound(request: Request) -> Response:
        body = (await request.body()).decode()
        answer = "Case 311-0001 is in progress." if "STATUS" in body else ""
        return Response(f"<Response><Message>{answer}</Message></Response>", media_type="text/xml")

    return Starlette(routes=[Route("/telephony/inbound", inbound, methods=["POST"])])


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    phone_port, city_port = free_ports(2)
    environment = {
        "CIVICFLOW_STATE_DIR": str(tmp_path),
        "CIVICFLOW_TELEPHONY_ACCOUNT_SID": SID,
        "CIVICFLOW_TELEPHONY_AUTH_TOKEN": TOKEN,
        "CIVICFLOW_TELEPHONY_BASE_URL": f"http://127.0.0.1:{phone_port}",
        "CIVICFLOW_TELEPHONY_INBOUND_URL": f"http://127.0.0.1:{city_port}/telephony/inbound",
        "CIVICFLOW_SAMPLE_PHONE_STEP_SECONDS": "0",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with served_in_thread(create_app(SampleTelephonySettings()), phone_port), served_in_thread(_city(), city_port):
        yield tmp_path / "phone"


def test_a_resident_texts_the_city_and_reads_its_answer_then_lists_the_texts(running: Path) -> None:
    runner = CliRunner()
    replied = runner.invoke(phone_app, ["reply", RESIDENT, "STATUS", "--wait", "5"])
    assert replied.exit_code == 0, replied.output
    assert "the city answered: Case 311-0001 is in progress." in replied.output
    listed = runner.invoke(phone_app, ["list", RESIDENT])
    assert listed.exit_code == 0
    assert len([line for line in listed.output.splitlines() if line.startswith("text")]) == 2
    assert str(running / RESIDENT) in listed.output


def test_no_answer_and_a_number_that_is_not_e164_say_so(running: Path) -> None:
    runner = CliRunner()
    silent = runner.invoke(phone_app, ["reply", RESIDENT, "hello", "--wait", "0.2"])
    assert silent.exit_code == 1 and "no answer from the city" in silent.output
    refused = runner.invoke(phone_app, ["reply", "555-0142", "STATUS"])
    assert refused.exit_code != 0 and "E.164" in refused.output
    assert not (running / "555-0142").exists()


def test_digits_wait_for_the_next_call(running: Path) -> None:
    pressed = CliRunner().invoke(phone_app, ["press", RESIDENT, "2"])
    assert pressed.exit_code == 0 and "1 answer(s) waiting" in pressed.output
    wrong = CliRunner().invoke(phone_app, ["press", RESIDENT, "two"])
    assert wrong.exit_code == 1 and "Digits" in wrong.output
