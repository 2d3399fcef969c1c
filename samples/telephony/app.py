"""The SAMPLE telephony provider's HTTP API (Twilio's REST subset and the /sample routes a person or test
drives it with), as a Starlette app. See the package docstring."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from civicflow.secrets import UnsafeSecret
from samples.telephony.provider import (
    Provider,
    Refused,
    SampleTelephonySettings,
    authorised,
    callback_url,
    form_of,
    number,
    one,
)
from samples.telephony.records import API_VERSION, MAX_BODY
from samples.telephony.twiml import TwimlError

log = structlog.get_logger(__name__)

ACCOUNT = f"/{API_VERSION}/Accounts/{{account_sid}}"
Handler = Callable[[Request], Awaitable[Response]]


def _parse_date(name: str, value: str) -> datetime:
    for shape in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, shape).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise Refused(400, 20001, f"'{name}' must be a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDTHH:MM:SSZ)")


def _page(key: str, records: list[dict[str, Any]], uri: str) -> JSONResponse:
    """One page of a Twilio list holding every record (the sample never pages)."""
    return JSONResponse(
        {
            key: records,
            "end": max(0, len(records) - 1),
            "first_page_uri": uri,
            "next_page_uri": None,
            "page": 0,
            "page_size": len(records),
            "previous_page_uri": None,
            "start": 0,
            "uri": uri,
        }
    )


def create_app(settings: SampleTelephonySettings | None = None, client: httpx.AsyncClient | None = None) -> Starlette:
    """The app; tests may pass an httpx client whose transport catches the callbacks."""
    settings = settings or SampleTelephonySettings()
    owned = client is None
    http = client or httpx.AsyncClient(timeout=10.0)
    provider = Provider(settings, http)
    sid, token = settings.telephony_account_sid, provider.token

    def from_the_city(form: dict[str, list[str]]) -> str:
        from_ = number(form, "From")
        if from_ != settings.telephony_from:
            # as Twilio refuses a From that is not one of the account's numbers; the city's number is not personal
            raise Refused(400, 21606, f"The 'From' number is not this account's; use {settings.telephony_from}.")
        return from_

    def guarded(handler: Handler) -> Handler:
        async def route(request: Request) -> Response:
            try:
                authorised(request, sid, token)
                return await handler(request)
            except Refused as refused:
                return refused.response()

        return route

    async def create_message(request: Request) -> Response:
        form = await form_of(request)
        to, from_ = number(form, "To"), from_the_city(form)
        body = one(form, "Body") or ""
        if not body.strip():
            raise Refused(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY:
            raise Refused(400, 21617, f"The concatenated message body exceeds the {MAX_BODY} character limit.")
        text = provider.take_text(to, from_, body, callback_url(form, "StatusCallback"))
        return JSONResponse(text.as_twilio(), status_code=201)

    async def list_messages(request: Request) -> Response:
        query = request.query_params
        found = [t for t in provider.texts if t.direction == "outbound-api"]
        for name, attribute in (("To", "to"), ("From", "from_")):
            if name in query:
                found = [t for t in found if getattr(t, attribute) == query[name]]
        # As Twilio: DateSent filters on when a text was sent, so a text still queued (no sent time) matches none.
        if "DateSent" in query:
            day = _parse_date("DateSent", query["DateSent"]).date()
            found = [t for t in found if t.sent_at and t.sent_at.date() == day]
        if "DateSent>" in query:
            after = _parse_date("DateSent>", query["DateSent>"])
            found = [t for t in found if t.sent_at and t.sent_at.replace(microsecond=0) >= after]
        if "DateSent<" in query:
            before = _parse_date("DateSent<", query["DateSent<"])
            found = [t for t in found if t.sent_at and t.sent_at.replace(microsecond=0) <= before]
        found.sort(key=lambda t: t.created_at, reverse=True)
        return _page("messages", [t.as_twilio() for t in found], f"/{API_VERSION}/Accounts/{sid}/Messages.json")

    async def fetch_message(request: Request) -> Response:
        """One text by its sid (either way, as Twilio), as Twilio answers it; 404 with Twilio's error for a sid
        it does not hold, which after a restart is every earlier one (texts are kept in memory)."""
        wanted = request.path_params["message_sid"]
        found = next((t for t in provider.texts if t.sid == wanted), None)
        if found is None:
            raise Refused(404, 20404, "The requested resource was not found")
        return JSONResponse(found.as_twilio())

    async def list_calls(request: Request) -> Response:
        """Twilio's Calls list, filtered by To, From, Status and StartTime (a sample call starts when placed)."""
        query = request.query_params
        found = list(provider.calls.values())
        for name, attribute in (("To", "to"), ("From", "from_"), ("Status", "status")):
            if name in query:
                found = [c for c in found if getattr(c, attribute) == query[name]]
        if "StartTime" in query:
            day = _parse_date("StartTime", query["StartTime"]).date()
            found = [c for c in found if c.created_at.date() == day]
        if "StartTime>" in query:
            after = _parse_date("StartTime>", query["StartTime>"])
            found = [c for c in found if c.created_at.replace(microsecond=0) >= after]
        if "StartTime<" in query:
            before = _parse_date("StartTime<", query["StartTime<"])
            found = [c for c in found if c.created_at.replace(microsecond=0) <= before]
        found.sort(key=lambda c: c.created_at, reverse=True)
        return _page("calls", [c.as_twilio() for c in found], f"/{API_VERSION}/Accounts/{sid}/Calls.json")

    async def create_call(request: Request) -> Response:
        form = await form_of(request)
        to, from_ = number(form, "To"), from_the_city(form)
        twiml, url = one(form, "Twiml", required=False), callback_url(form, "Url")
        if (twiml is None) == (url is None):
            raise Refused(400, 21205, "Give either 'Twiml' or 'Url' (one of them).")
        events = frozenset(e for value in form.get("StatusCallbackEvent", []) for e in value.split()) or frozenset(
            {"completed"}
        )
        try:
            call = provider.place_call(to, from_, twiml, url, callback_url(form, "StatusCallback"), events)
        except TwimlError as exc:
            raise Refused(400, 12100, f"Document parse failure: {exc}") from None
        return JSONResponse(call.as_twilio(), status_code=201)

    async def inbound(request: Request) -> Response:
        """A resident texts the city's number (what `civicflow phone reply` does)."""
        form = await form_of(request)
        resident, body = number(form, "From"), one(form, "Body") or ""
        if not body.strip() or len(body) > MAX_BODY:
            raise Refused(400, 21602, f"Write a 'Body' of 1 to {MAX_BODY} characters.")
        text, webhook, replies = await provider.receive_text(resident, body)
        return JSONResponse(
            {"sid": text.sid, "webhook": webhook, "replies": [{"sid": r.sid, "body": r.body} for r in replies]}
        )

    async def press(request: Request) -> Response:
        """The digits a resident will press at the next Gather of a call to their number (one entry a Gather)."""
        form = await form_of(request)
        resident, digits = number(form, "To"), one(form, "Digits") or ""
        if not digits or not all(c in "0123456789*#" for c in digits) or len(digits) > 20:
            raise Refused(400, 21602, "'Digits' must be 1 to 20 of 0-9, * and #.")
        provider.presses[resident].append(digits)
        return JSONResponse({"waiting": len(provider.presses[resident])})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        log.info("SAMPLE telephony provider ready (development only)", folder=str(provider.folder.path))
        yield
        await provider.stop()
        if owned:
            await http.aclose()

    app = Starlette(
        routes=[
            Route(f"{ACCOUNT}/Messages.json", guarded(create_message), methods=["POST"]),
            Route(f"{ACCOUNT}/Messages.json", guarded(list_messages), methods=["GET"]),
            Route(f"{ACCOUNT}/Messages/{{message_sid}}.json", guarded(fetch_message), methods=["GET"]),
            Route(f"{ACCOUNT}/Calls.json", guarded(create_call), methods=["POST"]),
            Route(f"{ACCOUNT}/Calls.json", guarded(list_calls), methods=["GET"]),
            Route("/sample/inbound", guarded(inbound), methods=["POST"]),
            Route("/sample/press", guarded(press), methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.provider = provider
    return app


def main() -> None:
    """Serve the sample telephony provider on 127.0.0.1:$CIVICFLOW_SAMPLE_PHONE_PORT (default 8095)."""
    from civicflow.logging import configure_logging

    settings = SampleTelephonySettings()
    configure_logging("sample_telephony", settings.log_level)
    try:
        app = create_app(settings)
    except UnsafeSecret as exc:
        raise SystemExit(f"sample telephony provider: {exc}") from None
    # uvicorn's access log would print each request's query string, which carries residents' numbers
    uvicorn.run(app, host="127.0.0.1", port=settings.sample_phone_port, log_level="info", access_log=False)


if __name__ == "__main__":
    main()
