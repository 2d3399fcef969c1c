"""The local SMTP sink: an aiosmtpd server that files each message once, by Message-ID, as an .eml file.

Run it with ``python -m samples.smtp_sink.sink``; it listens on CIVICFLOW_SMTP_PORT (default 8025) on
127.0.0.1 and writes to CIVICFLOW_MAIL_DIR (default: the mail folder under CIVICFLOW_STATE_DIR, which
defaults to .civicflow). Files are named
``<received UTC time>-<Message-ID made filename-safe>-<short hash>.eml`` so they sort by arrival and a
person can find a case's mail by its id. A message whose Message-ID is already filed is accepted and
not stored again: the notifier resends with the same Message-ID after a crash between the SMTP
acceptance and its own commit, and that resend is the same message, not a new one.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import os
import re
import signal
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

log = structlog.get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")


def _identity(message_id: str) -> str:
    """The part of a file name that stands for one Message-ID: readable, and exact thanks to the hash."""
    bare = message_id.strip().strip("<>")
    readable = _UNSAFE.sub("_", bare)[:100].strip("._") or "id"
    digest = hashlib.sha256(message_id.strip().encode()).hexdigest()[:10]
    return f"{readable}-{digest}"


@dataclass(frozen=True)
class StoredMessage:
    """One filed message, parsed with the stdlib email package."""

    path: Path
    message: EmailMessage

    @property
    def message_id(self) -> str | None:
        value = self.message["Message-ID"]
        return None if value is None else str(value).strip()

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def text(self) -> str:
        """The plain-text body (the notifier only sends plain text)."""
        part = self.message.get_body(preferencelist=("plain",))
        return "" if part is None else str(part.get_content())


class MailFolder:
    """A folder of .eml files, one per distinct Message-ID, in arrival order."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def store(self, raw: bytes, received_at: datetime | None = None) -> Path | None:
        """File the message; None when a message with its Message-ID is already filed."""
        headers = email.message_from_bytes(raw, policy=email.policy.default)
        message_id = headers["Message-ID"]
        self.path.mkdir(parents=True, exist_ok=True)
        if message_id:
            identity = _identity(str(message_id))
            if any(self.path.glob(f"*-{identity}.eml")):
                return None
        else:
            identity = f"no-message-id-{uuid.uuid4().hex[:10]}"
        stamp = (received_at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
        final = self.path / f"{stamp}-{identity}.eml"
        # Written aside and renamed, so a reader never sees half a message.
        partial = self.path / f".{final.name}.partial"
        partial.write_bytes(raw)
        os.replace(partial, final)
        return final

    def messages(self) -> list[StoredMessage]:
        """Every filed message, oldest first."""
        found = sorted(p for p in self.path.glob("*.eml")) if self.path.is_dir() else []
        return [StoredMessage(p, _parse(p.read_bytes())) for p in found]


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)  # guaranteed by policy.default
    return parsed


def read_messages(folder: Path) -> list[StoredMessage]:
    """The messages filed in folder, oldest first (for tests and for people reading the sink)."""
    return MailFolder(folder).messages()


class FilingHandler:
    """aiosmtpd handler: accepts every message and files it in the mail folder."""

    def __init__(self, folder: MailFolder) -> None:
        self.folder = folder

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            raw = str(raw).encode()
        # No await between the duplicate check and the write, so two deliveries of one Message-ID on
        # this loop cannot both be filed.
        stored = self.folder.store(raw)
        if stored is None:
            log.info("duplicate message accepted, not stored again")
            return "250 OK already stored"
        # Recipients are personal data: log the file, not who it was for.
        log.info("message stored", file=stored.name)
        return "250 OK stored"


async def start_sink(folder: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> asyncio.Server:
    """Start the sink on the running loop; close the returned server to stop it."""
    handler = FilingHandler(MailFolder(folder))
    loop = asyncio.get_running_loop()

    def protocol() -> Any:
        # hostname given so aiosmtpd does not look up this machine's FQDN (slow on some networks)
        return SMTP(handler, hostname="civicflow-smtp-sink")

    try:
        return await loop.create_server(protocol, host=host, port=port)
    except OSError as exc:
        raise OSError(
            f"the SMTP sink cannot listen on {host}:{port} ({exc.strerror}); set CIVICFLOW_SMTP_PORT to a free port"
        ) from exc


async def serve(folder: Path, host: str, port: int) -> None:
    """Run the sink until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await start_sink(folder, host, port)
    log.info("smtp sink ready", host=host, port=port, folder=str(folder))
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def main() -> None:
    from civicflow.logging import configure_logging

    configure_logging("smtp_sink", os.environ.get("CIVICFLOW_LOG_LEVEL", "INFO"))
    state_dir = Path(os.environ.get("CIVICFLOW_STATE_DIR", "") or ".civicflow")
    folder = Path(os.environ.get("CIVICFLOW_MAIL_DIR", "") or state_dir / "mail")
    port = int(os.environ.get("CIVICFLOW_SMTP_PORT", "") or DEFAULT_PORT)
    asyncio.run(serve(folder, DEFAULT_HOST, port))


if __name__ == "__main__":
    main()
