"""`civicflow mail reply` as a department on the SMTP sink: the reply it writes, and what it says when it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from civicflow.infra import free_port
from samples.smtp_sink.cli import mail_app
from samples.smtp_sink.reply import compose_reply, find_work_order
from samples.smtp_sink.sink import MailFolder
from services.workorder_bridge.email_replies import read_reply
from services.workorder_bridge.mailer import Mailer

REFERENCE = "EM-ABCDEFGHJK"


@pytest.fixture
def inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "mail"
    mailer = Mailer("127.0.0.1", 9, 1, "311 work orders <workorders@civicflow.local>")
    work_order = mailer.compose(
        "code@sample-city.example",
        f"[{REFERENCE}] Work order: GRAFFITI",
        "Work order\n\nDue: soon\n",
        f"<{REFERENCE}@code.workorders.civicflow.local>",
    )
    MailFolder(folder).store(work_order.as_bytes())
    monkeypatch.setenv("CIVICFLOW_MAIL_DIR", str(folder))
    monkeypatch.setenv("CIVICFLOW_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CIVICFLOW_BRIDGE_PUBLIC_URL", f"http://127.0.0.1:{free_port()}")
    return folder


def test_the_reply_is_the_departments_answer_to_the_work_order(inbox: Path) -> None:
    reply = read_reply(compose_reply(find_work_order(inbox, REFERENCE.lower()), "done: scrubbed").as_bytes())
    assert (reply.reference, reply.department_tag, reply.sender) == (REFERENCE, "code", "code@sample-city.example")
    assert reply.paragraph == ["done: scrubbed"], "the quoted work order below it is not the answer"


def test_an_unknown_reference_says_so(inbox: Path) -> None:
    result = CliRunner().invoke(mail_app, ["reply", "EM-ZZZZZZZZZZ", "done"])
    assert result.exit_code == 1 and "no work-order email EM-ZZZZZZZZZZ" in result.output
    result = CliRunner().invoke(mail_app, ["reply", "pothole", "done"])
    assert result.exit_code == 1 and "neither a work order's reference" in result.output


def test_a_bridge_that_is_not_running_is_said_to_be(inbox: Path) -> None:
    result = CliRunner().invoke(mail_app, ["reply", REFERENCE, "done"])
    assert result.exit_code == 1 and "cannot be reached" in result.output


def test_work_orders_lists_the_sinks_work_order_mail(inbox: Path) -> None:
    result = CliRunner().invoke(mail_app, ["work-orders"])
    assert result.exit_code == 0 and f"[{REFERENCE}]" in result.output
