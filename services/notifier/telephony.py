"""The notifier's telephony port: texts and calls through a provider that speaks Twilio's REST API (Twilio
itself, or SignalWire, Telnyx and others that offer the same API; the sample provider in samples/telephony
in development). What the notifier needs of a provider, and nothing more."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True)
class ProviderMessage:
    """A text as the provider holds it."""

    sid: str
    to: str  # E.164
    body: str
    status: str  # queued, sending, sent, delivered, undelivered, failed (Twilio's words)
    created_at: datetime
    error_code: int | None = None


@dataclass(frozen=True)
class ProviderCall:
    """A call as the provider holds it."""

    sid: str
    to: str  # E.164
    status: str  # queued, ringing, in-progress, completed, busy, no-answer, failed, canceled
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # when the provider took it


class TelephonyUnavailable(Exception):
    """The provider could not be reached or answered with a server error: try again later."""


class TelephonyRefused(Exception):
    """The provider refused this message or call for what it is (an invalid number, an opted-out number):
    retrying cannot help. Carries the provider's error code."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Telephony(Protocol):
    async def send_text(self, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        """Hand a text to the provider; TelephonyUnavailable or TelephonyRefused when it will not take it."""
        ...

    async def texts_to(self, to: str, since: datetime) -> list[ProviderMessage]:
        """The texts sent to a number since a moment: how a crash between the provider taking a text and
        our commit is closed before sending again."""
        ...

    async def text_status(self, sid: str) -> ProviderMessage:
        """One text as the provider holds it now (its status and error code): how a delivery report that never
        reached us (the provider posts each once, best effort) is found. TelephonyUnavailable when the provider
        cannot be asked or does not know the sid."""
        ...

    async def place_call(self, to: str, twiml: str, status_callback: str | None = None) -> ProviderCall:
        """Call a number and play TwiML (what to say, which digits to gather)."""
        ...

    async def calls_to(self, to: str, since: datetime) -> list[ProviderCall]:
        """The calls placed to a number since a moment: how a crash between the provider taking a call and our
        commit is closed before calling again."""
        ...

    def signed_by_provider(self, url: str, params: Mapping[str, str], signature: str) -> bool:
        """Whether a callback or inbound text really comes from the provider (X-Twilio-Signature)."""
        ...


# Development defaults, shared by the notifier's settings and the sample provider (samples/telephony) so that
# `civicflow dev` needs no account: an account SID of zeros (an identifier, not a secret: the auth token is
# one, kept per state folder), the sample provider's usual address, and a fictional city number (555-01xx).
DEV_ACCOUNT_SID = "AC" + "0" * 32
DEV_PROVIDER_URL = "http://127.0.0.1:8095"
DEV_CITY_NUMBER = "+15555550100"
AUTH_TOKEN_FILE = "telephony.key"
