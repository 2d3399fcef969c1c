"""The embedded broker keeps nothing: after it restarts empty, the system catches up from the event store."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from civicflow.infra import EmbeddedKafka, Infrastructure
from civicflow.launcher import SystemProcesses
from samples.smtp_sink.sink import read_messages
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, view_reached
from tests.e2e.test_lifecycle import pothole

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedKafka]:
    kafka = EmbeddedKafka(tmp_path_factory.mktemp("broker"))
    kafka.start()
    yield kafka  # type: ignore[misc]
    kafka.stop()


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, broker: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    own = Infrastructure(infrastructure.database_url, broker.bootstrap_servers, "embedded")
    async with running_system(own, Path(tmp_path_factory.mktemp("restart"))) as running:
        yield running


async def test_after_the_broker_restarts_empty_old_cases_stay_whole_and_new_ones_flow(
    system: SystemProcesses, broker: EmbeddedKafka
) -> None:
    clients = Clients(system)
    try:
        before = await clients.intake.SubmitRequest(pothole(email="before@example.org"))
        await eventually(lambda: view_reached(clients, before.tracking_number, "resolved"), timeout=60, what="resolved")
        # the notifier sends after the view resolves: its emails must be out before the broker goes
        await eventually(lambda: _mails_for(system, before.case_id, 3), timeout=60, what="the old case's emails")

        broker.stop()
        broker.start()  # same port, nothing in it: no topics, no groups, no offsets

        after = await clients.intake.SubmitRequest(pothole(email="after@example.org"))
        await eventually(
            lambda: view_reached(clients, after.tracking_number, "resolved"),
            timeout=120,
            what="a new case after restart",
        )
        await eventually(lambda: _mails_for(system, after.case_id, 3), timeout=60, what="the new case's emails")
        await eventually(lambda: _mails_for(system, before.case_id, 3), timeout=30, what="the old case's emails")
    finally:
        await clients.close()
    cases = (before.case_id, after.case_id)  # only this test's own mail: the sink is shared
    mails = Counter(
        m.message_id for m in read_messages(system.mail_dir) if any(c in (m.message_id or "") for c in cases)
    )
    assert set(mails.values()) == {1} and len(mails) == 6, "a republished event sent an email again"


async def _mails_for(system: SystemProcesses, case_id: str, n: int) -> bool:
    """At least n emails of this case in the sink (the assertion after the waits checks there is no extra)."""
    return sum(case_id in (m.message_id or "") for m in read_messages(system.mail_dir)) >= n
