"""Handing email to SMTP, and telling an address that can never be delivered to from an outage."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

# 421: the server is closing the connection (going down, too busy): an outage, not about the address.
_SERVICE_UNAVAILABLE = 421


class MailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpSender:
    """Hands messages to an SMTP server (STARTTLS when the server offers it)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(message, hostname=self._host, port=self._port, timeout=self._timeout)


def undeliverable(exc: Exception) -> str | None:
    """Why this message's address cannot be delivered to, by kind and SMTP code and never the address;
    None when the failure is not about the address (a server down, a timeout: worth retrying).

    A recipient refused for now (4xx) is not retried either: the consumer can only retry by holding
    the partition, and a mailbox that is full for hours must not hold up other residents' mail; the
    call centre sees the NotificationFailed instead."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in exc.recipients]
    elif isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        codes = [exc.code]
    elif isinstance(exc, aiosmtplib.SMTPNotSupported):
        # aiosmtplib's message names what the server lacks, not the address.
        if "SMTPUTF8" in str(exc):
            return "mail server cannot take a non-ASCII address (no SMTPUTF8)"
        return None  # the server lacks something every message needs: a configuration problem
    elif isinstance(exc, aiosmtplib.SMTPException):
        return None
    elif isinstance(exc, ValueError | UnicodeError):
        # aiosmtplib checks addresses before it connects ("characters not permitted in an SMTP mailbox").
        return f"mail client cannot send to this address ({type(exc).__name__})"
    else:
        return None
    if not codes or _SERVICE_UNAVAILABLE in codes:
        return None
    code = codes[0]
    if all(500 <= c < 600 for c in codes):
        return f"mail server refused the address (SMTP {code})"
    return f"mail server refused the address for now (SMTP {code}); not retried"
