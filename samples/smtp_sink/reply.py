"""SAMPLE: a department answering a work-order email, for development and tests. The SMTP sink's folder is the
department's inbox; this finds the work order's mail there, writes the reply as the department's mail client
would (From the inbox, In-Reply-To the work order's Message-ID, "Re:" subject, the original quoted below), and
posts it to the bridge's inbound endpoint signed as the city's inbound-mail relay would
(services/workorder_bridge/email_http.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path

import httpx

from samples.smtp_sink.sink import StoredMessage, read_messages
from services.workorder_bridge.email_http import (
    EMAIL_REPLIES_PATH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign_relay,
)

_REFERENCE = re.compile(r"EM-[A-Z2-7]{10}", re.IGNORECASE)


class NoSuchWorkOrder(LookupError):
    """The mail folder holds no work-order email with that reference."""


def find_work_order(folder: Path, reference_or_file: str) -> StoredMessage:
    """The work order's email: a file of the folder named as it is, else the message whose Message-ID is the
    reference's (the work order itself, not a cancellation notice about it)."""
    given = Path(reference_or_file)
    if given.suffix == ".eml" and given.is_file():
        found = [m for m in read_messages(given.parent) if m.path.resolve() == given.resolve()]
        if found:
            return found[0]
    if not _REFERENCE.fullmatch(reference_or_file.strip()):
        raise NoSuchWorkOrder(f"{reference_or_file!r} is neither a work order's reference (EM-…) nor an .eml file")
    reference = reference_or_file.strip().upper()
    for stored in reversed(read_messages(folder)):
        if (stored.message_id or "").startswith(f"<{reference}@"):
            return stored
    raise NoSuchWorkOrder(f"no work-order email {reference} in {folder}")


def compose_reply(original: StoredMessage, text: str, now: datetime | None = None) -> EmailMessage:
    """The department's reply: its words on top, the work order quoted below, as mail clients write it."""
    sent = now or datetime.now(UTC)
    inbox = parseaddr(str(original.message["To"] or ""))[1]
    city = str(original.message["Reply-To"] or original.message["From"] or "")
    reply = EmailMessage()
    reply["From"] = inbox
    reply["To"] = city
    subject = original.subject
    reply["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    reply["Message-ID"] = make_msgid(domain=inbox.rpartition("@")[2] or "sample-department.example")
    reply["Date"] = format_datetime(sent)
    if original.message_id:
        reply["In-Reply-To"] = original.message_id
        earlier = str(original.message["References"] or "").split()
        reply["References"] = " ".join([*earlier, original.message_id])
    quoted = "\n".join(f"> {line}" if line else ">" for line in original.text.splitlines())
    written = str(original.message["Date"] or "")
    reply.set_content(f"{text}\n\nOn {written}, {city} wrote:\n{quoted}\n")
    return reply


@dataclass(frozen=True)
class Posted:
    status_code: int
    answer: str  # the bridge's JSON answer, as text


def signed(secret: str, reply: EmailMessage) -> tuple[bytes, dict[str, str]]:
    """The raw message and the headers the inbound-mail relay signs it with (the time of signing in them)."""
    raw = reply.as_bytes()
    stamp = int(time.time())
    headers = {
        "Content-Type": "message/rfc822",
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign_relay(secret, stamp, raw),
    }
    return raw, headers


def post_reply(bridge_url: str, secret: str, reply: EmailMessage, *, timeout: float = 15.0) -> Posted:
    """Post the reply as the inbound-mail relay does."""
    raw, headers = signed(secret, reply)
    answer = httpx.post(bridge_url.rstrip("/") + EMAIL_REPLIES_PATH, content=raw, headers=headers, timeout=timeout)
    return Posted(answer.status_code, answer.text)


async def post_reply_async(client: httpx.AsyncClient, bridge_url: str, secret: str, reply: EmailMessage) -> Posted:
    """post_reply on an async client (tests, benchmarks)."""
    raw, headers = signed(secret, reply)
    answer = await client.post(bridge_url.rstrip("/") + EMAIL_REPLIES_PATH, content=raw, headers=headers)
    return Posted(answer.status_code, answer.text)
