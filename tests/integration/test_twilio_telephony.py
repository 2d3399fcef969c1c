"""TwilioTelephony (the official twilio library) against the sample telephony provider running on a free port,
with a stand-in for the city's webhooks on another: both sides sign and check with the same token."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from civicflow.infra import free_ports
from samples.telephony.app import create_app
from samples.telephony.provider import SampleTelephonySettings
from services.notifier.telephony import TelephonyRefused, TelephonyUnavailable
from services.notifier.twilio_telephony import TwilioTelephony
from tests.conftest import eventually

SID = "AC" + "7" * 32
TOKEN = "integration-telephony-token-not-a-secret"
CITY = "+15555550100"
RESIDENT = "+15555550142"  # fictional (555-01xx)


@dataclass
class CityWebhooks:
    """The city's side: what came back, and whether each came signed (checked by the adapter under test)."""

    url: str
    provider_url: str  # where the sample provider listens (its /sample routes, beside Twilio's API)
    telephony: TwilioTelephony | None = None
    received: list[tuple[str, dict[str, str], bool]] = field(default_factory=list)

    def to(self, path: str) -> list[dict[str, str]]:
        return [params for url, params, _ in self.received if url == self.url + path]

    def app(self) -> Starlette:
        async def webhook(request: Request) -> Response:
            # parsed here: Starlette's request.form() needs python-multipart, which the project does not install
            params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            url = self.url + request.url.path
            assert self.telephony is not None
            signed = self.telephony.signed_by_provider(url, params, request.headers.get("X-Twilio-Signature", ""))
            self.received.append((url, params, signed))
            if request.url.path == "/digits":
                return Response(
                    f"<Response><Say>You pressed {params['Digits']}.</Say></Response>", media_type="text/xml"
                )
            return Response("", status_code=204)

        return Starlette(routes=[Route("/{path:path}", webhook, methods=["POST"])])


async def _serve(app: Starlette, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started)

    await eventually(started, timeout=20, what="a test server to start")
    return server, task


@pytest.fixture
async def phone(tmp_path: Path) -> AsyncIterator[tuple[TwilioTelephony, CityWebhooks, Path]]:
    async with running_phone(tmp_path, step_seconds=0) as running:
        yield running


@contextlib.asynccontextmanager
async def running_phone(
    tmp_path: Path, step_seconds: float
) -> AsyncIterator[tuple[TwilioTelephony, CityWebhooks, Path]]:
    """The sample provider and the city's webhooks on free ports; texts move on every `step_seconds`."""
    phone_port, city_port = free_ports(2)
    city = CityWebhooks(f"http://127.0.0.1:{city_port}", f"http://127.0.0.1:{phone_port}")
    settings = SampleTelephonySettings(
        state_dir=tmp_path,
        telephony_account_sid=SID,
        telephony_auth_token=TOKEN,
        telephony_from=CITY,
        telephony_inbound_url=f"{city.url}/inbound",
        sample_phone_step_seconds=step_seconds,
    )
    telephony = TwilioTelephony(city.provider_url, SID, TOKEN, CITY, timeout_seconds=5)
    city.telephony = telephony
    servers = [await _serve(create_app(settings), phone_port), await _serve(city.app(), city_port)]
    try:
        yield telephony, city, tmp_path / "phone"
    finally:
        await telephony.aclose()
        for server, task in servers:
            server.should_exit = True
            await task


async def test_a_text_goes_out_its_statuses_come_back_signed_and_it_is_found_again(
    phone: tuple[TwilioTelephony, CityWebhooks, Path],
) -> None:
    telephony, city, folder = phone
    before = datetime.now(UTC) - timedelta(seconds=1)
    sent = await telephony.send_text(RESIDENT, "Case 311-0001 is closed.", f"{city.url}/status")
    assert sent.sid.startswith("SM") and sent.status == "queued" and sent.to == RESIDENT
    assert sent.created_at.tzinfo is not None

    async def delivered() -> list[dict[str, str]]:
        return [p for p in city.to("/status") if p["MessageStatus"] == "delivered"]

    await eventually(delivered, timeout=10, what="the delivered callback")
    assert all(signed for _, _, signed in city.received)
    found = await telephony.texts_to(RESIDENT, before)
    assert [m.sid for m in found] == [sent.sid] and found[0].status == "delivered"
    assert await telephony.texts_to(RESIDENT, datetime.now(UTC) + timedelta(minutes=1)) == []
    assert await telephony.texts_to("+15555550143", before) == []
    assert any(folder.glob(f"{RESIDENT}/*_{sent.sid}.text.txt"))


async def test_a_text_still_queued_at_the_provider_is_found_again(tmp_path: Path) -> None:
    # A day's step: the text stays queued (no date_sent) for the whole test, as in a rate-limit queue.
    async with running_phone(tmp_path, step_seconds=86_400) as (telephony, city, _):
        before = datetime.now(UTC) - timedelta(seconds=1)
        sent = await telephony.send_text(RESIDENT, "Case 311-0002 is routed.", f"{city.url}/status")

        found = await telephony.texts_to(RESIDENT, before)

        assert [(m.sid, m.status) for m in found] == [(sent.sid, "queued")]
        assert await telephony.texts_to(RESIDENT, datetime.now(UTC) + timedelta(minutes=1)) == []


async def test_a_texts_status_is_fetched_by_its_sid_and_one_the_provider_does_not_hold_is_unavailable(
    phone: tuple[TwilioTelephony, CityWebhooks, Path],
) -> None:
    telephony, city, _ = phone
    delivered = await telephony.send_text(RESIDENT, "Case 311-0003 is resolved.", f"{city.url}/status")
    undelivered = await telephony.send_text("+15005550001", "Case 311-0004 is resolved.", f"{city.url}/status")

    async def final() -> list[dict[str, str]]:
        done = [p for p in city.to("/status") if p["MessageStatus"] in ("delivered", "undelivered")]
        return done if len(done) == 2 else []

    await eventually(final, timeout=10, what="both texts' final callbacks")
    fetched = await telephony.text_status(delivered.sid)
    assert (fetched.sid, fetched.to, fetched.status, fetched.error_code) == (delivered.sid, RESIDENT, "delivered", None)
    assert fetched.body == "Case 311-0003 is resolved." and fetched.created_at == delivered.created_at
    assert (await telephony.text_status(undelivered.sid)).error_code == 30003
    assert (await telephony.text_status(undelivered.sid)).status == "undelivered"

    with pytest.raises(TelephonyUnavailable, match="HTTP 404"):  # forgotten (the sample after a restart)
        await telephony.text_status("SM" + "0" * 32)
    for not_a_sid in ("../Calls", "SM1?To=x", "", "SM" + "a" * 65):  # never put into a request's path
        with pytest.raises(TelephonyRefused, match="not a message sid"):
            await telephony.text_status(not_a_sid)


async def test_a_call_gathers_the_digits_pressed_says_what_the_city_answers_and_is_found_again(
    phone: tuple[TwilioTelephony, CityWebhooks, Path], tmp_path: Path
) -> None:
    telephony, city, folder = phone
    before = datetime.now(UTC) - timedelta(seconds=1)
    async with httpx.AsyncClient(base_url=city.provider_url, auth=(SID, TOKEN)) as sample:
        assert (await sample.post("/sample/press", data={"To": RESIDENT, "Digits": "1"})).status_code == 200
    twiml = (
        f'<Response><Gather numDigits="1" action="{city.url}/digits"><Say>Press 1 to confirm.</Say></Gather></Response>'
    )
    call = await telephony.place_call(RESIDENT, twiml, f"{city.url}/call-status")
    assert call.sid.startswith("CA") and call.status == "queued"

    async def completed() -> list[dict[str, str]]:
        return [p for p in city.to("/call-status") if p["CallStatus"] == "completed"]

    await eventually(completed, timeout=10, what="the call to complete")
    assert [p["CallStatus"] for p in city.to("/call-status")] == ["initiated", "ringing", "in-progress", "completed"]
    assert [p["Digits"] for p in city.to("/digits")] == ["1"]
    assert all(signed for _, _, signed in city.received)
    [file] = folder.glob(f"{RESIDENT}/*_{call.sid}.call.txt")
    assert "pressed: 1" in file.read_text() and "You pressed 1." in file.read_text()
    found = await telephony.calls_to(RESIDENT, before)
    assert [(c.sid, c.to, c.status) for c in found] == [(call.sid, RESIDENT, "completed")]
    assert found[0].created_at.tzinfo is not None
    assert await telephony.calls_to(RESIDENT, datetime.now(UTC) + timedelta(minutes=1)) == []
    assert await telephony.calls_to("+15555550143", before) == []


async def test_refusals_carry_the_providers_code_and_never_the_number(
    phone: tuple[TwilioTelephony, CityWebhooks, Path],
) -> None:
    telephony, _, _ = phone
    with pytest.raises(TelephonyRefused) as opted_out:
        await telephony.send_text("+15005550002", "hello")
    assert opted_out.value.code == 21610 and "unsubscribed" in str(opted_out.value)
    with pytest.raises(TelephonyRefused) as invalid:
        await telephony.send_text("555-0142", "hello")
    assert invalid.value.code == 21211 and "555-0142" not in str(invalid.value)
    with pytest.raises(TelephonyRefused) as bad_twiml:
        await telephony.place_call(RESIDENT, "<Response><Say>unclosed</Response>")
    assert bad_twiml.value.code == 12100


async def test_a_provider_unreachable_failing_unreadable_or_refusing_our_credentials_is_unavailable(
    phone: tuple[TwilioTelephony, CityWebhooks, Path],
) -> None:
    _, city, _ = phone
    unused, broken_port = free_ports(2)

    async def broken(request: Request) -> Response:
        if request.method == "GET" and "/Messages/" in request.url.path:  # Twilio's shape, fields that are not
            text = {"sid": "SM1", "to": RESIDENT, "status": "delivered", "date_created": "soon", "error_code": "x"}
            return JSONResponse(text)
        if request.method == "GET" or b"15005550009" in await request.body():  # the newer RFC 9457 error shape
            problem = {"type": "https://www.twilio.com/docs/errors/21614", "title": "Not a mobile number"}
            return JSONResponse({**problem, "status": 400, "code": 21614}, status_code=400)
        if request.url.path.endswith("Calls.json"):
            return Response("<html>a proxy's error page</html>", status_code=200, media_type="text/html")
        return Response('{"code": 20500, "message": "Internal Server Error", "status": 500}', status_code=500)

    server, task = await _serve(Starlette(routes=[Route("/{path:path}", broken, methods=["GET", "POST"])]), broken_port)
    nowhere = TwilioTelephony(f"http://127.0.0.1:{unused}", SID, TOKEN, CITY, timeout_seconds=2)
    wrong_token = TwilioTelephony(city.provider_url, SID, "not-the-token-of-this-account", CITY)
    failing = TwilioTelephony(f"http://127.0.0.1:{broken_port}", SID, TOKEN, CITY)
    try:
        for unavailable in (nowhere, wrong_token, failing):
            with pytest.raises(TelephonyUnavailable):
                await unavailable.send_text(RESIDENT, "hello")
        with pytest.raises(TelephonyUnavailable, match="could not be read"):
            await failing.place_call(RESIDENT, "<Response/>")
        with pytest.raises(TelephonyRefused) as refused:
            await failing.send_text("+15005550009", "hello")
        assert refused.value.code == 21614 and "cannot receive texts" in str(refused.value)
        with pytest.raises(TelephonyUnavailable, match="HTTP 400"):  # what was sent cannot be told: ask again later
            await failing.texts_to(RESIDENT, datetime.now(UTC))
        with pytest.raises(TelephonyUnavailable, match="could not be read"):
            await failing.text_status("SM1")
        with pytest.raises(TelephonyUnavailable):
            await nowhere.text_status("SM1")
    finally:
        for telephony in (nowhere, wrong_token, failing):
            await telephony.aclose()
        server.should_exit = True
        await task


async def test_a_signature_made_with_another_token_or_over_other_params_is_not_the_providers(
    phone: tuple[TwilioTelephony, CityWebhooks, Path],
) -> None:
    telephony, city, _ = phone
    await telephony.send_text(RESIDENT, "hello", f"{city.url}/status")

    async def first() -> list[tuple[str, dict[str, str], bool]]:
        return city.received[:1]

    [(url, params, signed)] = await eventually(first, timeout=10, what="a status callback")
    assert signed
    forged = RequestValidator("another-account-token-entirely").compute_signature(url, params)
    assert not telephony.signed_by_provider(url, params, forged)
    genuine = RequestValidator(TOKEN).compute_signature(url, params)
    assert telephony.signed_by_provider(url, params, genuine)
    assert not telephony.signed_by_provider(url, {**params, "MessageStatus": "failed"}, genuine)
    assert not telephony.signed_by_provider(url, params, "")


async def test_twilios_edge_and_region_settings_do_not_send_requests_elsewhere(
    phone: tuple[TwilioTelephony, CityWebhooks, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, city, _ = phone
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    telephony = TwilioTelephony(city.provider_url, SID, TOKEN, CITY)
    try:
        assert (await telephony.send_text(RESIDENT, "hello")).sid.startswith("SM")
    finally:
        await telephony.aclose()
