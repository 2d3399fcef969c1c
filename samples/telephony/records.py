"""The sample telephony provider's texts and calls: Twilio's JSON for them, the test numbers' outcomes, and the
readable files a person opens under <state>/phone (the only place a number or a body is written)."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

API_VERSION = "2010-04-01"
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
MAX_BODY = 1600  # Twilio refuses longer texts with 21617

# By the last four digits of the number texted or called (Twilio's own test numbers work the same way).
TEXT_UNDELIVERED = "0001"  # accepted, then undelivered: 30003, the handset is unreachable
TEXT_OPTED_OUT = "0002"  # refused at create: 21610, the resident replied STOP
TEXT_REPORTS_LOST = "0006"  # delivered, but its status callbacks never reach the city (lost on the way)
CALL_OUTCOMES = {"0003": "busy", "0004": "no-answer", "0005": "failed"}


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC))  # "Thu, 26 Nov 2026 12:00:00 +0000", as Twilio writes


LEFT_THE_PROVIDER = frozenset({"sent", "delivered", "undelivered", "read"})


@dataclass
class Text:
    """One text, either way: outbound-api (the city's) or inbound (a resident's)."""

    account_sid: str
    sid: str
    to: str
    from_: str
    body: str
    direction: str
    status: str
    created_at: datetime
    status_callback: str | None = None
    error_code: int | None = None
    history: list[tuple[datetime, str]] = field(default_factory=list)

    def move(self, status: str, error_code: int | None = None, at: datetime | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.history.append((at or datetime.now(UTC), status if error_code is None else f"{status} ({error_code})"))

    @property
    def sent_at(self) -> datetime | None:
        """Twilio's date_sent: when the text left the provider; None while it is queued or accepted, and for
        one that failed before it went. A resident's text was sent when it arrived."""
        if self.direction == "inbound":
            return self.created_at
        return next((at for at, status in self.history if status.split(" ")[0] in LEFT_THE_PROVIDER), None)

    @property
    def resident(self) -> str:
        return self.to if self.direction != "inbound" else self.from_

    def as_twilio(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": rfc2822(self.created_at),
            "date_sent": rfc2822(self.sent_at) if self.sent_at else None,
            "date_updated": rfc2822(self.history[-1][0] if self.history else self.created_at),
            "direction": self.direction,
            "error_code": self.error_code,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(max(1, -(-len(self.body) // 160))),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self.to,
            "uri": uri,
        }

    def readable(self) -> str:
        lines = [
            "SAMPLE telephony provider: a text (development only; no real phone was involved)",
            f"sid:       {self.sid}",
            f"direction: {self.direction}",
            f"from:      {self.from_}",
            f"to:        {self.to}",
            f"created:   {self.created_at.isoformat()}",
            "body:",
            *(f"  {line}" for line in self.body.splitlines() or [""]),
            "status:",
            *(f"  {at.isoformat()} {what}" for at, what in self.history),
        ]
        return "\n".join(lines) + "\n"


@dataclass
class Call:
    account_sid: str
    sid: str
    to: str
    from_: str
    status: str
    created_at: datetime
    status_callback: str | None = None
    events: frozenset[str] = frozenset({"completed"})
    transcript: list[str] = field(default_factory=list)
    history: list[tuple[datetime, str]] = field(default_factory=list)

    def move(self, status: str, at: datetime | None = None) -> None:
        self.status = status
        self.history.append((at or datetime.now(UTC), status))

    def as_twilio(self) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "date_created": rfc2822(self.created_at),
            "date_updated": rfc2822(self.history[-1][0] if self.history else self.created_at),
            "direction": "outbound-api",
            "from": self.from_,
            "from_formatted": self.from_,
            "sid": self.sid,
            "start_time": rfc2822(self.created_at),  # a sample call is dialled as soon as it is placed
            "status": self.status,
            "to": self.to,
            "to_formatted": self.to,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json",
        }

    def readable(self) -> str:
        lines = [
            "SAMPLE telephony provider: a call (development only; no real phone was involved)",
            f"sid:     {self.sid}",
            f"from:    {self.from_}",
            f"to:      {self.to}",
            f"created: {self.created_at.isoformat()}",
            "what happened:",
            *(f"  {line}" for line in self.transcript),
            "status:",
            *(f"  {at.isoformat()} {what}" for at, what in self.history),
        ]
        return "\n".join(lines) + "\n"


def call_outcome(to: str) -> str:
    """How a call to this number ends when nobody hangs up early."""
    return CALL_OUTCOMES.get(to[-4:], "completed")


class PhoneFolder:
    """<state>/phone: one folder per resident's number, one file per text or call, named so they sort by time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def file_for(self, number: str, created_at: datetime, sid: str, kind: str) -> Path:
        stamp = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%S")
        return self.path / number / f"{stamp}_{sid}.{kind}.txt"

    def write(self, file: Path, text: str) -> None:
        # Written aside and renamed, so a reader never sees half a file.
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f".{file.name}.partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, file)

    def files(self, number: str | None = None) -> list[Path]:
        """The texts and calls kept, newest first; only one number's when given."""
        if not self.path.is_dir():
            return []
        folders = [self.path / number] if number else [p for p in self.path.iterdir() if p.is_dir()]
        found = [f for folder in folders if folder.is_dir() for f in folder.glob("*.txt")]
        return sorted(found, key=lambda f: (f.name, f.parent.name), reverse=True)
