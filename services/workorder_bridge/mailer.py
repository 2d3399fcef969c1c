"""The bridge's mail to departments: work orders for departments with no system of their own (kinds/email.py), and
telling a department what its kind cannot be told through its system (a cancellation a system cannot take).

Every message carries a Message-ID derived from what caused it, so a resend after a crash between the mail server's
acceptance and our commit is the same message: mail clients show it once, and the development SMTP sink files it
once (samples/smtp_sink). The bridge hands mail to the city's SMTP server as the notifier does
(services/notifier/mail.py), with its own settings (CIVICFLOW_BRIDGE_SMTP_*), since work orders may leave through
another relay than residents' mail.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import yaml

from services.workorder_bridge.connector import DepartmentUnavailable

# The domain every Message-ID the bridge makes ends in; replies name it in In-Reply-To (email_replies.py).
MESSAGE_ID_DOMAIN = "workorders.civicflow.local"
_TAG = re.compile(r"[A-Za-z0-9_-]{1,40}")


def department_tag(department_id: str) -> str:
    """How a department is named inside a Message-ID: its id when that fits a mail domain's label, else a digest
    (a reply's In-Reply-To says which department it answers, and the bridge checks its sender against that inbox)."""
    if _TAG.fullmatch(department_id):
        return department_id
    return "h" + hashlib.sha256(department_id.encode()).hexdigest()[:16]


class TellDepartment(Protocol):
    """Tell a department something by its channel (the cancellation its system cannot take)."""

    async def __call__(self, department_id: str, subject: str, body: str) -> None: ...


class Mailer:
    """Hands the bridge's messages to SMTP. An outage, a timeout or a refusal is DepartmentUnavailable: the work
    order is parked and tried again (opener.py), and a refused inbox is a configuration to fix, not the case's fault."""

    def __init__(self, host: str, port: int, timeout: float, mail_from: str, reply_to: str = "") -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        self.mail_from = mail_from
        self.reply_to = reply_to or mail_from

    def compose(
        self, to: str, subject: str, body: str, message_id: str, *, sent_at: datetime | None = None
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = to
        message["Reply-To"] = self.reply_to
        message["Subject"] = subject
        message["Message-ID"] = message_id
        message["Date"] = format_datetime(sent_at or datetime.now(UTC))
        # RFC 3834, and Exchange's own header: out-of-office responders do not answer it (their answer would arrive
        # as a reply; email_replies.py ignores those that come anyway)
        message["Auto-Submitted"] = "auto-generated"
        message["X-Auto-Response-Suppress"] = "All"
        message.set_content(body)
        return message

    async def tell(self, inbox: str, subject: str, body: str, message_id: str) -> None:
        """Send one plain-text message to inbox; DepartmentUnavailable when the mail server cannot take it now."""
        await self.send(self.compose(inbox, subject, body, message_id))

    async def send(self, message: EmailMessage) -> None:
        try:
            await aiosmtplib.send(message, hostname=self._host, port=self._port, timeout=self._timeout)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = ", ".join(str(r.code) for r in exc.recipients)
            raise DepartmentUnavailable(
                f"the mail server refused the department's inbox (SMTP {codes}); check its address in the city file"
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DepartmentUnavailable(
                f"the mail server at {self._host}:{self._port} did not take the message ({type(exc).__name__})"
            ) from exc
        except (ValueError, UnicodeError) as exc:  # aiosmtplib checks addresses before it connects
            raise DepartmentUnavailable(
                f"the mail client cannot send to the department's inbox ({type(exc).__name__}); check the city file"
            ) from exc

    async def answers(self) -> str | None:
        """None when the mail server greets us, takes EHLO and NOOP; else what went wrong, in words."""
        client = aiosmtplib.SMTP(hostname=self._host, port=self._port, timeout=self._timeout, start_tls=False)
        try:
            await client.connect()
            await client.ehlo()
            await client.noop()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return f"the mail server at {self._host}:{self._port} does not answer ({type(exc).__name__})"
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    client.close()
        return None


def mail_department(settings: Any) -> MailDepartment:
    """TellDepartment for the bridge (BridgeSettings): by the city file's `email` of each department."""
    return MailDepartment(mailer_of(settings), department_emails(Path(settings.city_file)))


def mailer_of(settings: Any) -> Mailer:
    """The bridge's Mailer from its settings (BridgeSettings, services/workorder_bridge/main.py)."""
    return Mailer(
        settings.bridge_smtp_host,
        settings.bridge_smtp_port,
        settings.bridge_smtp_timeout_seconds,
        settings.bridge_mail_from,
        settings.bridge_mail_reply_to,
    )


def department_emails(city_file: Path) -> dict[str, str]:
    """Each department's `email` from the city file (departments with none are left out)."""
    raw: Any = yaml.safe_load(city_file.read_text())
    departments = raw.get("departments") if isinstance(raw, dict) else None
    found: dict[str, str] = {}
    for department_id, definition in departments.items() if isinstance(departments, dict) else ():
        if isinstance(definition, dict) and definition.get("email"):
            found[str(department_id)] = str(definition["email"])
    return found


class MailDepartment:
    """TellDepartment by email: the department's `email` from the city file. The Message-ID is derived from what is
    said, so telling the same thing again (a retry after a crash) is the same message."""

    def __init__(self, mailer: Mailer, emails: Mapping[str, str]) -> None:
        self._mailer = mailer
        self._emails = dict(emails)

    async def __call__(self, department_id: str, subject: str, body: str) -> None:
        inbox = self._emails.get(department_id)
        if inbox is None:
            raise DepartmentUnavailable(
                f"{department_id}: the city file gives the department no email to tell it by; add `email:` to it"
            )
        digest = hashlib.sha256(f"{department_id}\0{subject}\0{body}".encode()).hexdigest()[:24]
        message_id = f"<told.{digest}@{department_tag(department_id)}.{MESSAGE_ID_DOMAIN}>"
        await self._mailer.tell(inbox, subject, body, message_id)
