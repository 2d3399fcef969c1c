"""The survey task carries on past a survey it fails on: a mail server down for one resident's address holds up no
other survey, and the failing one waits its backoff, then goes."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage

import pytest

from civicflow.events import SurveySent
from civicflow.pii import ResidentContact
from services.notifier.survey_delivery import SurveySender
from tests.integration.test_notifier_survey import DELAY, PUBLIC_URL, STORE, Notifier, notifier

pytestmark = pytest.mark.integration
__all__ = ["notifier"]  # the survey tests' fixture, used here too

DOWN_FOR = "resident-a@example.org"


class DownForOne:
    """A mail server that refuses to answer for one address (an outage, not a refusal) and keeps the rest."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        if message["To"] == DOWN_FOR:
            raise ConnectionRefusedError("the test's mail server is down")
        self.messages.append(message)


async def test_a_survey_the_task_fails_on_is_put_off_and_the_one_behind_it_goes(notifier: Notifier) -> None:
    failing = await notifier.resolved_case(ResidentContact(email=DOWN_FOR), "email")
    behind = await notifier.resolved_case(ResidentContact(email="resident-b@example.org"), "email")
    mail = DownForOne()
    task = SurveySender(
        notifier.engine,
        STORE,
        notifier.vault,
        notifier.texts,
        mail,
        "311 <a@b>",
        notifier.tokens,
        PUBLIC_URL,
        notifier.clock,
    )
    notifier.clock.now = notifier.resolved_at + DELAY
    await task.send_due()
    assert [m["To"] for m in mail.messages] == ["resident-b@example.org"]
    assert [type(e).__name__ for e in await notifier.history(behind) if isinstance(e, SurveySent)] == ["SurveySent"]
    row = await notifier.survey_row(failing)
    assert row is not None and row["status"] == "sending"
    assert row["due_at"] == notifier.clock.now + timedelta(minutes=1)

    notifier.clock.now += timedelta(minutes=3)  # its backoff and its claim have passed; the server is back
    await notifier.new_process().send_due()
    [sent] = [m for m in notifier.outbox.messages if m["To"] == DOWN_FOR]
    assert [e for e in await notifier.history(failing) if isinstance(e, SurveySent)] == [
        SurveySent(channel="email", message_id=sent["Message-ID"])
    ]
