"""The sample telephony provider as `civicflow dev` runs it: started with the system, sharing the state folder's
token with the notifier's settings, filing texts under the system's phone folder and logging no number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from services.notifier.main import NotifierSettings
from services.notifier.twilio_telephony import TwilioTelephony
from tests.conftest import eventually
from tests.e2e.conftest import running_system

pytestmark = pytest.mark.e2e

RESIDENT = "+15555550142"  # fictional (555-01xx)


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("phone")) as running:
        yield running


async def test_the_notifiers_settings_reach_the_sample_provider_and_the_text_is_filed(system: SystemProcesses) -> None:
    environment = system.environment()
    settings = NotifierSettings(
        state_dir=system.state_dir, telephony_base_url=environment["CIVICFLOW_TELEPHONY_BASE_URL"]
    )
    telephony = TwilioTelephony(
        settings.telephony_base_url, settings.telephony_account_sid, settings.telephony_token(), settings.telephony_from
    )
    try:
        sent = await telephony.send_text(RESIDENT, "Your request was received.")
    finally:
        await telephony.aclose()

    async def filed() -> list[Path]:
        return list(system.phone_dir.glob(f"{RESIDENT}/*_{sent.sid}.text.txt"))

    [file] = await eventually(filed, timeout=30, what="the text's file")
    assert "Your request was received." in file.read_text()
    log = (system.state_dir / "logs" / "sample_telephony.log").read_text()
    assert sent.sid in log and RESIDENT not in log and "Your request was received." not in log
