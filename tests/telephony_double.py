"""A test double of the notifier's telephony port (services/notifier/telephony.py), in memory: it keeps the texts
it took (and what it says of each now, moved on by the test) and the calls it was asked to place, can refuse, be
down, or "crash" right after taking a text or placing a call; signatures are valid when they are HMAC-SHA1 of the
URL and sorted parameters with its auth token, as Twilio signs them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from uuid import uuid4

from services.notifier.telephony import (
    ProviderCall,
    ProviderMessage,
    TelephonyRefused,
    TelephonyUnavailable,
)


@dataclass(frozen=True)
class PlacedCall:
    """A call the double was asked to place: what it would play (its outcome is told by the test, through the
    notifier's status callback, as the provider would)."""

    sid: str
    to: str
    twiml: str
    status_callback: str | None
    created_at: datetime


class CrashedAfterTaking(BaseException):
    """The process died after the provider took the text or call and before the notifier recorded it (a
    BaseException: nothing in the process may catch it and carry on, as nothing would after a real crash)."""


@dataclass
class InMemoryTelephony:
    auth_token: str = "test-double-auth-token"
    taken: list[ProviderMessage] = field(default_factory=list)
    refuse_with: int | None = None  # the next texts are refused with this error code
    down: bool = False
    crash_after_taking: bool = False
    lookups: int = 0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # when the provider says it took a text
    calls: list[PlacedCall] = field(default_factory=list)
    refuse_calls_with: int | None = None  # the next calls are refused with this error code
    crash_after_placing: bool = False
    call_lookups: int = 0
    statuses: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # sid -> (status, error code) now
    status_lookups: list[str] = field(default_factory=list)  # the sids text_status was asked about, in order

    async def send_text(self, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        if self.down:
            raise TelephonyUnavailable("the test double is down")
        if self.refuse_with is not None:
            raise TelephonyRefused(self.refuse_with, "refused by the test double")
        message = ProviderMessage(sid=f"SM{uuid4().hex}", to=to, body=body, status="queued", created_at=self.clock())
        self.taken.append(message)
        if self.crash_after_taking:
            raise CrashedAfterTaking()
        return message

    async def texts_to(self, to: str, since: datetime) -> list[ProviderMessage]:
        self.lookups += 1
        if self.down:
            raise TelephonyUnavailable("the test double is down")
        return [m for m in self.taken if m.to == to and m.created_at >= since]

    async def text_status(self, sid: str) -> ProviderMessage:
        self.status_lookups.append(sid)
        if self.down:
            raise TelephonyUnavailable("the test double is down")
        message = next((m for m in self.taken if m.sid == sid), None)
        if message is None:  # as TwilioTelephony takes the provider's 404
            raise TelephonyUnavailable("the test double holds no text with that sid")
        status, code = self.statuses.get(sid, (message.status, message.error_code))
        return replace(message, status=status, error_code=code)

    def move(self, sid: str, status: str, error_code: int | None = None) -> None:
        """What the provider will say of a text from now on (its callback is the test's to send, or not)."""
        self.statuses[sid] = (status, error_code)

    def forget(self, sid: str) -> None:
        """The provider no longer knows the text (the sample provider after a restart)."""
        self.taken = [m for m in self.taken if m.sid != sid]

    async def place_call(self, to: str, twiml: str, status_callback: str | None = None) -> ProviderCall:
        if self.down:
            raise TelephonyUnavailable("the test double is down")
        if self.refuse_calls_with is not None:
            raise TelephonyRefused(self.refuse_calls_with, "refused by the test double")
        call = PlacedCall(f"CA{uuid4().hex}", to, twiml, status_callback, self.clock())
        self.calls.append(call)
        if self.crash_after_placing:
            raise CrashedAfterTaking()
        return ProviderCall(sid=call.sid, to=to, status="queued", created_at=call.created_at)

    async def calls_to(self, to: str, since: datetime) -> list[ProviderCall]:
        self.call_lookups += 1
        if self.down:
            raise TelephonyUnavailable("the test double is down")
        return [
            ProviderCall(sid=c.sid, to=c.to, status="queued", created_at=c.created_at)
            for c in self.placed_to(to)
            if c.created_at >= since
        ]

    def placed_to(self, to: str) -> list[PlacedCall]:
        """The calls placed to a number, oldest first (what a test reads; `calls_to` is the port's)."""
        return [c for c in self.calls if c.to == to]

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        signed = url + "".join(f"{k}{params[k]}" for k in sorted(params))
        return base64.b64encode(hmac.new(self.auth_token.encode(), signed.encode(), hashlib.sha1).digest()).decode()

    def signed_by_provider(self, url: str, params: Mapping[str, str], signature: str) -> bool:
        return hmac.compare_digest(self.sign(url, params), signature)

    def bodies_to(self, to: str) -> list[str]:
        return [m.body for m in self.taken if m.to == to]
