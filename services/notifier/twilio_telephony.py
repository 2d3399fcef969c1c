"""The telephony port on the official `twilio` library: Twilio itself, or any provider speaking its REST API
(SignalWire, Telnyx and others; the sample provider in samples/telephony in development).

The library always builds https://api.twilio.com URLs; `edge` and `region` only rename Twilio's own hosts.
So requests go through an HTTP client of our own (`ProviderHttpClient`) that puts the configured base URL in
place of Twilio's, with a timeout, and logs no query or form values: twilio's own client logs query
parameters at INFO, and a list filtered by recipient carries the resident's number there.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import structlog
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from services.notifier.telephony import ProviderCall, ProviderMessage, TelephonyRefused, TelephonyUnavailable

log = structlog.get_logger(__name__)

TWILIO_API = "https://api.twilio.com"
CALLS_LISTED = 50  # calls to one number in a crash window: a handful at most
TEXTS_LISTED = 50  # texts to one number in a crash window, as for calls
# A sid goes into the request's path as it is (twilio formats it in unquoted), so only a sid's own characters
# are let through: a stored value with '/', '?' or '..' would ask the provider about something else.
MESSAGE_SID = re.compile(r"[A-Za-z0-9]{1,64}")

# What a provider's error code means, in words that never carry the number (the provider's own message does).
REFUSALS: dict[int, str] = {
    21211: "the number is not a valid phone number",
    21214: "the number cannot be reached by this provider",
    21408: "the provider is not allowed to reach this region",
    21610: "the resident has unsubscribed from texts (replied STOP)",
    21612: "the provider cannot route a text to this number",
    21614: "the number cannot receive texts (not a mobile number)",
    21617: "the text is longer than the provider accepts",
    30003: "the handset is unreachable",
    30005: "the number is unknown or no longer exists",
    30006: "the number is a landline or cannot receive texts",
}


def refusal_words(code: int | None, status: int) -> str:
    """What a refusal says: the known meaning of the provider's code, never the provider's own message."""
    known = REFUSALS.get(code) if code is not None else None
    return known or f"the provider refused it (HTTP {status}, code {code if code is not None else 'none'})"


class ProviderHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """twilio's async HTTP client, aimed at the configured provider and quiet about what it sends."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout_seconds)
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def provider_url(self, url: str) -> str:
        if url.startswith(TWILIO_API):
            return self.base_url + url[len(TWILIO_API) :]
        return url

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        async with self._session.request(
            method.upper(),
            self.provider_url(url),
            params=_pairs(params),
            data=_pairs(data),
            headers=headers,
            allow_redirects=allow_redirects,
        ) as response:
            return Response(response.status, await response.text(), response.headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _pairs(values: dict[str, object] | None) -> list[tuple[str, str]] | None:
    """Form or query pairs as Twilio reads them: a list (StatusCallbackEvent) is the name repeated."""
    if values is None:
        return None
    pairs: list[tuple[str, str]] = []
    for name, value in values.items():
        for one in value if isinstance(value, list | tuple) else [value]:
            if one is not None:
                pairs.append((name, str(one)))
    return pairs


class TwilioTelephony:
    """`Telephony` through the twilio library; one per notifier process, closed with `aclose`."""

    def __init__(
        self, base_url: str, account_sid: str, auth_token: str, from_number: str, timeout_seconds: float = 10.0
    ) -> None:
        self._http = ProviderHttpClient(base_url, timeout_seconds)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        # twilio reads TWILIO_EDGE / TWILIO_REGION from the environment and would then name another Twilio host,
        # one ProviderHttpClient does not replace: the base URL alone says where requests go.
        self._client.edge = None
        self._client.region = None
        self._validator = RequestValidator(auth_token)
        self._from = from_number

    async def send_text(self, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        options: dict[str, Any] = {"status_callback": status_callback} if status_callback else {}
        message = await self._call(self._client.messages.create_async(to=to, from_=self._from, body=body, **options))
        return _message(message)

    async def texts_to(self, to: str, since: datetime) -> list[ProviderMessage]:
        # No "DateSent>" filter: Twilio applies it to date_sent, which stays null while a text is queued or
        # accepted (a rate-limit queue can hold it for minutes), so exactly the texts of the crash window this
        # asks about would be missed and sent again. The newest texts to the number are listed instead and
        # kept from the second `since` falls in by their creation, as `calls_to` does for queued calls.
        since = since.astimezone(UTC).replace(microsecond=0)
        messages = await self._call(self._client.messages.list_async(to=to, from_=self._from, limit=TEXTS_LISTED))
        found = [_message(m) for m in messages]
        return [m for m in found if m.created_at >= since]

    async def text_status(self, sid: str) -> ProviderMessage:
        if not MESSAGE_SID.fullmatch(sid):
            raise TelephonyRefused(None, "not a message sid (1 to 64 letters A-Z and digits 0-9)")
        message = await self._call(self._client.messages(sid).fetch_async())
        try:
            return _message(message)
        except (TypeError, ValueError):  # an error code that is not a number, a date that is not one
            log.warning("telephony provider answered unreadably", problem="message fields")
            raise TelephonyUnavailable("the telephony provider's answer could not be read") from None

    async def place_call(self, to: str, twiml: str, status_callback: str | None = None) -> ProviderCall:
        options: dict[str, Any] = {}
        if status_callback:
            options = {
                "status_callback": status_callback,
                "status_callback_event": ["initiated", "ringing", "answered", "completed"],
            }
        call = await self._call(self._client.calls.create_async(to=to, from_=self._from, twiml=twiml, **options))
        return _call(call)

    async def calls_to(self, to: str, since: datetime) -> list[ProviderCall]:
        # "StartTime>" (sent as StartTime>=) is inclusive and to the second at most, as for texts; a call still
        # queued has no start time yet and would be missed by it, so calls made but not started are asked for
        # by their creation instead: the newest calls to the number, kept from the second `since` falls in.
        since = since.astimezone(UTC).replace(microsecond=0)
        started = await self._call(
            self._client.calls.list_async(to=to, from_=self._from, start_time_after=since, limit=CALLS_LISTED)
        )
        queued = await self._call(
            self._client.calls.list_async(to=to, from_=self._from, status="queued", limit=CALLS_LISTED)
        )
        found = {c.sid: c for c in map(_call, [*started, *queued])}
        return [c for c in found.values() if c.created_at >= since]

    def signed_by_provider(self, url: str, params: Mapping[str, str], signature: str) -> bool:
        return bool(self._validator.validate(url, dict(params), signature))

    async def aclose(self) -> None:
        await self._http.close()

    async def _call(self, request: Any) -> Any:
        """Await one twilio request, turning what went wrong into the port's two kinds of failure."""
        try:
            return await request
        except (TwilioRestException, TwilioServiceException) as exc:  # the legacy and the RFC 9457 error shapes
            if exc.status >= 500 or exc.status in (401, 403, 404, 429):
                # The provider is down, overloaded, or our account settings are wrong: nothing about this
                # text; it can go once that is put right.
                log.warning("telephony provider unavailable", status=exc.status, code=exc.code)
                raise TelephonyUnavailable(f"the telephony provider answered HTTP {exc.status}") from None
            code = exc.code if isinstance(exc.code, int) else None
            raise TelephonyRefused(code, refusal_words(code, exc.status)) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("telephony provider unreachable", problem=type(exc).__name__)
            raise TelephonyUnavailable(f"the telephony provider could not be reached ({type(exc).__name__})") from None
        except (TwilioException, ValueError, KeyError) as exc:
            # A list page that is not 200 comes as a bare TwilioException holding the response (whatever the
            # code: `texts_to` cannot tell what was sent, so it is asked again later); else an answer that is not
            # Twilio's JSON.
            answered = getattr(exc.args[1], "status_code", None) if len(exc.args) > 1 else None
            log.warning("telephony provider answered unreadably", status=answered, problem=type(exc).__name__)
            if answered is not None:
                raise TelephonyUnavailable(f"the telephony provider answered HTTP {answered}") from None
            raise TelephonyUnavailable("the telephony provider's answer could not be read") from None


def _call(call: Any) -> ProviderCall:
    # A call without a readable date counts as made now, as a text does (`_message`): the safe side.
    created = call.date_created
    if isinstance(created, str):
        created = parsedate_to_datetime(created)
    return ProviderCall(
        sid=str(call.sid),
        to=str(call.to),
        status=str(call.status),
        created_at=created if isinstance(created, datetime) else datetime.now(UTC),
    )


def _message(message: Any) -> ProviderMessage:
    # A text without a readable date counts as made now: `texts_to` then finds it, and a text found is not
    # sent again, which is the safe side of a crash between the provider taking it and our commit.
    created = message.date_created
    if isinstance(created, str):
        created = parsedate_to_datetime(created)
    return ProviderMessage(
        sid=str(message.sid),
        to=str(message.to),
        body=str(message.body or ""),
        status=str(message.status),
        created_at=created if isinstance(created, datetime) else datetime.now(UTC),
        error_code=int(message.error_code) if message.error_code is not None else None,
    )
