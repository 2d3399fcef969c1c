"""The SMTP sink files one .eml per distinct Message-ID and the files read back as email messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from uuid import uuid4

import aiosmtplib
import pytest

from civicflow.infra import free_port
from samples.smtp_sink.sink import MailFolder, read_messages, start_sink


def _message(message_id: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "311 <no-reply@civicflow.local>"
    message["To"] = "resident@example.org"
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content(body)
    return message


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[tuple[Path, int]]:
    port = free_port()
    server = await start_sink(tmp_path / "mail", "127.0.0.1", port)
    try:
        yield tmp_path / "mail", port
    finally:
        server.close()
        await server.wait_closed()


async def test_one_file_per_distinct_message_id(sink: tuple[Path, int]) -> None:
    folder, port = sink
    case = uuid4()
    first_id = f"<{case}.submitted@civicflow.local>"
    second_id = f"<{case}.routed@civicflow.local>"

    await aiosmtplib.send(_message(first_id, "Request ABCD-123 received", "first"), hostname="127.0.0.1", port=port)
    # the notifier's resend after a crash: same Message-ID, accepted but not filed again
    await aiosmtplib.send(_message(first_id, "Request ABCD-123 received", "again"), hostname="127.0.0.1", port=port)
    await aiosmtplib.send(_message(second_id, "Request ABCD-123 routed", "second"), hostname="127.0.0.1", port=port)

    stored = read_messages(folder)
    assert [m.message_id for m in stored] == [first_id, second_id]
    assert len(list(folder.glob("*.eml"))) == 2
    assert stored[0].subject == "Request ABCD-123 received"
    assert stored[0].text.strip() == "first"
    assert stored[1].text.strip() == "second"
    assert stored[0].message["To"] == "resident@example.org"
    # a person can find a case's mail by its id and stage
    assert f"{case}.submitted" in stored[0].path.name


def test_file_names_keep_similar_ids_apart(tmp_path: Path) -> None:
    folder = MailFolder(tmp_path)
    # both sanitise to the same readable text; the hash keeps them distinct
    a = folder.store(_message("<a/b@x>", "s", "a").as_bytes())
    b = folder.store(_message("<a:b@x>", "s", "b").as_bytes())
    assert a is not None and b is not None and a != b
    assert folder.store(_message("<a/b@x>", "s", "a again").as_bytes()) is None
    assert [m.text.strip() for m in folder.messages()] == ["a", "b"]


def test_messages_without_message_id_are_all_kept(tmp_path: Path) -> None:
    folder = MailFolder(tmp_path)
    for body in ("one", "two"):
        message = _message("<x@y>", "s", body)
        del message["Message-ID"]
        assert folder.store(message.as_bytes()) is not None
    assert sorted(m.text.strip() for m in folder.messages()) == ["one", "two"]
    assert read_messages(tmp_path / "nowhere") == []
