"""A wrapper over the in-memory telephony double (tests/telephony_double.py) that catches a sender mid-way at the
provider: the first lookup (after the provider answered it) or the first send (before the provider took it) of
the kind named is held until the test releases it; and a number the provider is down for."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from services.notifier.telephony import ProviderCall, ProviderMessage, TelephonyUnavailable
from tests.telephony_double import InMemoryTelephony

DEADLINE_SECONDS = 30.0


class HeldTelephony:
    def __init__(self, inner: InMemoryTelephony, hold_at: str = "", down_for: str = "") -> None:
        self.inner = inner
        self.hold_at = hold_at  # send_text, texts_to, place_call or calls_to
        self.down_for = down_for
        self.reached = asyncio.Event()
        self.released = asyncio.Event()

    async def held(self) -> None:
        """Wait (with a deadline) until a sender is held."""
        await asyncio.wait_for(self.reached.wait(), DEADLINE_SECONDS)

    async def _hold(self, where: str, to: str) -> None:
        if to == self.down_for:
            raise TelephonyUnavailable("the test double is down for this number")
        if where == self.hold_at and not self.reached.is_set():
            self.reached.set()
            await asyncio.wait_for(self.released.wait(), DEADLINE_SECONDS)

    async def send_text(self, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        await self._hold("send_text", to)
        return await self.inner.send_text(to, body, status_callback)

    async def texts_to(self, to: str, since: datetime) -> list[ProviderMessage]:
        found = await self.inner.texts_to(to, since)
        await self._hold("texts_to", to)
        return found

    async def text_status(self, sid: str) -> ProviderMessage:
        return await self.inner.text_status(sid)

    async def place_call(self, to: str, twiml: str, status_callback: str | None = None) -> ProviderCall:
        await self._hold("place_call", to)
        return await self.inner.place_call(to, twiml, status_callback)

    async def calls_to(self, to: str, since: datetime) -> list[ProviderCall]:
        found = await self.inner.calls_to(to, since)
        await self._hold("calls_to", to)
        return found

    def signed_by_provider(self, url: str, params: Mapping[str, str], signature: str) -> bool:
        return self.inner.signed_by_provider(url, params, signature)
