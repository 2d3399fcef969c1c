"""The sample telephony provider's REST API, driven in process (httpx.ASGITransport); its callbacks caught by a
mock transport and checked with twilio's own RequestValidator."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from civicflow.secrets import UnsafeSecret
from samples.telephony.app import create_app
from samples.telephony.provider import Provider, SampleTelephonySettings
from samples.telephony.records import E164, Text
from services.notifier.main import NotifierSettings
from tests.conftest import eventually

SID = "AC" + "5" * 32
TOKEN = "sample-telephony-token-for-tests-only"
CITY = "+15555550100"
RESIDENT = "+15555550142"  # fictional (555-01xx)
NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"
CALLS = f"/2010-04-01/Accounts/{SID}/Calls.json"
CALLBACK = "https://city.example/telephony/status"
INBOUND = "https://city.example/telephony/inbound"
DIGITS = "https://city.example/telephony/digits"


@dataclass
class City:
    """What the city's side receives: every signed POST, and what it answers to each URL."""

    received: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    answers: dict[str, Callable[[dict[str, str]], str]] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        url = str(request.url)
        self.received.append((url, params, request.headers.get("X-Twilio-Signature", "")))
        answer = self.answers.get(url)
        return httpx.Response(200, text=answer(params) if answer else "")

    def to(self, url: str) -> list[dict[str, str]]:
        return [params for got, params, _ in self.received if got == url]


def phone_settings(state: Path) -> SampleTelephonySettings:
    return SampleTelephonySettings(
        state_dir=state,
        telephony_account_sid=SID,
        telephony_auth_token=TOKEN,
        telephony_from=CITY,
        telephony_inbound_url=INBOUND,
        sample_phone_step_seconds=0,
    )


@pytest.fixture
def city() -> City:
    return City()


@pytest.fixture
async def phone(tmp_path: Path, city: City) -> AsyncIterator[tuple[httpx.AsyncClient, Provider]]:
    callbacks = httpx.AsyncClient(transport=httpx.MockTransport(city.handle))
    app = create_app(phone_settings(tmp_path), callbacks)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://phone.test", auth=(SID, TOKEN)
    ) as client:
        yield client, app.state.provider
        await app.state.provider.stop()
    await callbacks.aclose()


async def test_a_text_is_taken_as_twilio_takes_it_and_its_statuses_come_back_signed(
    phone: tuple[httpx.AsyncClient, Provider], city: City, tmp_path: Path
) -> None:
    client, provider = phone
    reply = await client.post(
        MESSAGES, data={"To": RESIDENT, "From": CITY, "Body": "Your request is closed.", "StatusCallback": CALLBACK}
    )
    assert reply.status_code == 201
    text = reply.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", text["sid"])
    assert (text["status"], text["to"], text["from"], text["direction"]) == ("queued", RESIDENT, CITY, "outbound-api")
    assert text["date_created"].endswith("+0000")  # RFC 2822, as Twilio writes dates
    await provider.idle()
    statuses = [p["MessageStatus"] for p in city.to(CALLBACK)]
    assert statuses == ["queued", "sent", "delivered"]
    validator = RequestValidator(TOKEN)
    for url, params, signature in city.received:
        assert validator.validate(url, params, signature)
    assert not validator.validate(CALLBACK, {**city.to(CALLBACK)[0], "MessageStatus": "failed"}, signature)
    [file] = (tmp_path / "phone" / RESIDENT).glob("*.text.txt")
    readable = file.read_text()
    assert "Your request is closed." in readable and "delivered" in readable and "SAMPLE" in readable


async def test_the_test_numbers_fail_as_documented(phone: tuple[httpx.AsyncClient, Provider], city: City) -> None:
    client, provider = phone
    unreachable = await client.post(
        MESSAGES, data={"To": "+15005550001", "From": CITY, "Body": "hello", "StatusCallback": CALLBACK}
    )
    assert unreachable.status_code == 201
    await provider.idle()
    last = city.to(CALLBACK)[-1]
    assert (last["MessageStatus"], last["ErrorCode"]) == ("undelivered", "30003")

    opted_out = await client.post(MESSAGES, data={"To": "+15005550002", "From": CITY, "Body": "hello"})
    assert opted_out.status_code == 400
    assert opted_out.json()["code"] == 21610

    reported = len(city.to(CALLBACK))
    lost = await client.post(
        MESSAGES, data={"To": "+15005550006", "From": CITY, "Body": "hi", "StatusCallback": CALLBACK}
    )
    await provider.idle()
    assert len(city.to(CALLBACK)) == reported  # its reports are lost on the way: only asking finds it delivered
    fetched = await client.get(MESSAGES.replace(".json", f"/{lost.json()['sid']}.json"))
    assert fetched.json()["status"] == "delivered"


async def test_texts_are_listed_newest_first_by_recipient_and_time(phone: tuple[httpx.AsyncClient, Provider]) -> None:
    client, provider = phone
    other = "+15555550143"
    for to in (RESIDENT, other, RESIDENT):
        assert (await client.post(MESSAGES, data={"To": to, "From": CITY, "Body": "x"})).status_code == 201
    listed = (await client.get(MESSAGES, params={"To": RESIDENT})).json()
    assert [m["to"] for m in listed["messages"]] == [RESIDENT, RESIDENT]
    assert listed["next_page_uri"] is None
    sids = [t.sid for t in provider.texts if t.to == RESIDENT]
    assert [m["sid"] for m in listed["messages"]] == sids[::-1]
    later = (await client.get(MESSAGES, params={"To": RESIDENT, "DateSent>": "2999-01-01T00:00:00Z"})).json()
    assert later["messages"] == []

    async def all_sent() -> bool:
        return all(t.sent_at is not None for t in provider.texts)

    await eventually(all_sent, timeout=10, what="the texts to leave the queue")
    earlier = (await client.get(MESSAGES, params={"To": RESIDENT, "DateSent>": "2020-01-01"})).json()
    assert len(earlier["messages"]) == 2
    bad = await client.get(MESSAGES, params={"DateSent>": "yesterday"})
    assert bad.status_code == 400 and "DateSent>" in bad.json()["message"]


async def test_one_text_is_fetched_by_its_sid_as_it_stands_and_an_unknown_sid_is_twilios_404(
    phone: tuple[httpx.AsyncClient, Provider],
) -> None:
    client, provider = phone
    sids = []
    for to in (RESIDENT, "+15005550001"):  # delivered; undelivered with 30003
        taken = await client.post(MESSAGES, data={"To": to, "From": CITY, "Body": "Your request is closed."})
        sids.append(taken.json()["sid"])
    await provider.idle()
    delivered, undelivered = [(await client.get(MESSAGES.replace(".json", f"/{sid}.json"))) for sid in sids]
    assert delivered.status_code == 200
    assert delivered.json() == next(t for t in provider.texts if t.sid == sids[0]).as_twilio()
    assert (delivered.json()["status"], delivered.json()["error_code"]) == ("delivered", None)
    assert (undelivered.json()["status"], undelivered.json()["error_code"]) == ("undelivered", 30003)

    for unknown in ("SM" + "0" * 32, "SM" + "a" * 5000, "%00", "SM%20x"):
        missing = await client.get(MESSAGES.replace(".json", f"/{unknown}.json"))
        assert missing.status_code == 404 and missing.json()["code"] == 20404
    assert (await client.get(MESSAGES.replace(".json", "/..%2F..%2FCalls.json"))).status_code == 404
    other_account = MESSAGES.replace(SID, "AC" + "6" * 32).replace(".json", f"/{sids[0]}.json")
    assert (await client.get(other_account)).status_code == 404
    unauthenticated = await client.get(MESSAGES.replace(".json", f"/{sids[0]}.json"), auth=("AC" + "6" * 32, TOKEN))
    assert unauthenticated.status_code == 401 and "Your request" not in unauthenticated.text


async def test_calls_are_listed_newest_first_by_recipient_status_and_start_time(
    phone: tuple[httpx.AsyncClient, Provider],
) -> None:
    client, provider = phone
    other, hello = "+15555550143", "<Response><Say>hi</Say></Response>"
    for to in (RESIDENT, other, RESIDENT):
        assert (await client.post(CALLS, data={"To": to, "From": CITY, "Twiml": hello})).status_code == 201
    await provider.idle()
    listed = (await client.get(CALLS, params={"To": RESIDENT, "From": CITY})).json()
    sids = [c.sid for c in provider.calls.values() if c.to == RESIDENT]
    assert [c["sid"] for c in listed["calls"]] == sids[::-1] and listed["next_page_uri"] is None
    assert {(c["to"], c["status"]) for c in listed["calls"]} == {(RESIDENT, "completed")}
    assert all(c["start_time"] for c in listed["calls"])
    later = (await client.get(CALLS, params={"To": RESIDENT, "StartTime>": "2999-01-01T00:00:00Z"})).json()
    assert later["calls"] == []
    since = (await client.get(CALLS, params={"To": RESIDENT, "StartTime>": "2020-01-01"})).json()
    assert len(since["calls"]) == 2
    queued = (await client.get(CALLS, params={"To": RESIDENT, "Status": "queued"})).json()
    assert queued["calls"] == []


# (a query of 64 KiB is the most httpx sends)
@pytest.mark.parametrize("moment", ["yesterday", "", "\x00", "NaN", "2026-13-40", "9" * 60_000, "2026-01-01 00:00"])
async def test_a_call_list_with_a_start_time_that_is_not_a_time_is_refused_naming_it(
    phone: tuple[httpx.AsyncClient, Provider], moment: str
) -> None:
    client, _ = phone
    bad = await client.get(CALLS, params={"StartTime>": moment})
    assert bad.status_code == 400 and bad.json()["code"] == 20001
    assert "'StartTime>'" in bad.json()["message"] and len(bad.json()["message"]) < 200


async def test_a_call_plays_its_twiml_posts_the_digits_pressed_and_follows_the_answer(
    phone: tuple[httpx.AsyncClient, Provider], city: City, tmp_path: Path
) -> None:
    client, provider = phone
    city.answers[DIGITS] = lambda params: f"<Response><Say>You pressed {params['Digits']}.</Say></Response>"
    assert (await client.post("/sample/press", data={"To": RESIDENT, "Digits": "2"})).json() == {"waiting": 1}
    twiml = f'<Response><Gather numDigits="1" action="{DIGITS}"><Say>Press 2 if it is fixed.</Say></Gather></Response>'
    reply = await client.post(
        CALLS,
        data={
            "To": RESIDENT,
            "From": CITY,
            "Twiml": twiml,
            "StatusCallback": CALLBACK,
            "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        },
    )
    assert reply.status_code == 201 and reply.json()["sid"].startswith("CA")
    await provider.idle()
    assert [p["CallStatus"] for p in city.to(CALLBACK)] == ["initiated", "ringing", "in-progress", "completed"]
    [pressed] = city.to(DIGITS)
    assert (pressed["Digits"], pressed["CallSid"]) == ("2", reply.json()["sid"])
    validator = RequestValidator(TOKEN)
    assert all(validator.validate(url, params, signature) for url, params, signature in city.received)
    [file] = (tmp_path / "phone" / RESIDENT).glob("*.call.txt")
    readable = file.read_text()
    assert "said (en-US): Press 2 if it is fixed." in readable
    assert "pressed: 2" in readable and "said (en-US): You pressed 2." in readable


@pytest.mark.parametrize(
    ("to", "outcome"), [("+15005550003", "busy"), ("+15005550004", "no-answer"), ("+15005550005", "failed")]
)
async def test_the_test_numbers_do_not_answer_as_documented(
    phone: tuple[httpx.AsyncClient, Provider], city: City, to: str, outcome: str
) -> None:
    client, provider = phone
    reply = await client.post(
        CALLS, data={"To": to, "From": CITY, "Twiml": "<Response><Say>hi</Say></Response>", "StatusCallback": CALLBACK}
    )
    assert reply.status_code == 201
    await provider.idle()
    assert [p["CallStatus"] for p in city.to(CALLBACK)] == [outcome]  # only 'completed' events by default


async def test_a_residents_text_reaches_the_city_signed_and_its_reply_is_texted_back(
    phone: tuple[httpx.AsyncClient, Provider], city: City, tmp_path: Path
) -> None:
    client, provider = phone
    city.answers[INBOUND] = lambda params: "<Response><Message>We have your request.</Message></Response>"
    answer = await client.post("/sample/inbound", data={"From": RESIDENT, "Body": "STATUS"})
    assert answer.status_code == 200
    assert [r["body"] for r in answer.json()["replies"]] == ["We have your request."]
    [(url, params, signature)] = city.received
    assert url == INBOUND and RequestValidator(TOKEN).validate(url, params, signature)
    assert (params["From"], params["To"], params["Body"], params["NumMedia"]) == (RESIDENT, CITY, "STATUS", "0")
    await provider.idle()
    files = sorted(p.name for p in (tmp_path / "phone" / RESIDENT).glob("*.text.txt"))
    assert len(files) == 2


async def test_wrong_credentials_or_account_are_refused_as_twilio_refuses_them(
    phone: tuple[httpx.AsyncClient, Provider],
) -> None:
    client, provider = phone
    form = {"To": RESIDENT, "From": CITY, "Body": "x"}
    for auth in ((SID, "wrong-token"), ("AC" + "6" * 32, TOKEN)):
        refused = await client.post(MESSAGES, data=form, auth=auth)
        assert refused.status_code == 401 and refused.json()["code"] == 20003
    unauthenticated = await client.post(MESSAGES, data=form, headers={"Authorization": "Basic %%%"}, auth=None)
    assert unauthenticated.status_code == 401
    other_account = await client.post(MESSAGES.replace(SID, "AC" + "6" * 32), data=form)
    assert other_account.status_code == 404
    assert provider.texts == []


@pytest.mark.parametrize(
    ("content", "code", "names"),
    [
        (b"To=%2B15555550142&From=%2B15555550100&Body=a%00b", 21602, "Body"),
        (b"To=%2B15555550142&From=%2B15555550100&Body=" + b"a" * 1601, 21617, "1600"),
        (b"To=%2B15555550142&From=%2B15555550100&Body=" + b"a" * 300_000, 21617, "larger"),
        (b"To=%2B15555550142&From=%2B15555550100&Body=%FF%FE", 21602, "UTF-8"),
        (b"To=%2B15555550142&From=%2B15555550100&Body=%20%20", 21602, "required"),
        (b"To=%2B15555550142&Body=x", 21602, "From"),
        (b"To=tel%3A555-0142&From=%2B15555550100&Body=x", 21211, "To"),
        (b"To=%2B15555550142&From=%2B15555550199&Body=x", 21606, "From"),
        (b"To=%2B15555550142&From=%2B15555550100&Body=x&StatusCallback=javascript%3Aalert(1)", 21609, "StatusCallback"),
    ],
)
async def test_messy_input_is_refused_naming_the_field_and_nothing_is_kept(
    phone: tuple[httpx.AsyncClient, Provider], tmp_path: Path, content: bytes, code: int, names: str
) -> None:
    client, provider = phone
    refused = await client.post(
        MESSAGES, content=content, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert refused.status_code in (400, 413)
    assert refused.json()["code"] == code and names in refused.json()["message"]
    assert provider.texts == [] and not (tmp_path / "phone").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(to=st.text(max_size=40).filter(lambda t: not E164.fullmatch(t)))
def test_any_recipient_that_is_not_e164_is_refused_without_repeating_it(tmp_path: Path, to: str) -> None:
    app = create_app(phone_settings(tmp_path))

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://phone.test", auth=(SID, TOKEN)) as client:
            return await client.post(MESSAGES, data={"To": to, "From": CITY, "Body": "x"})

    refused = asyncio.run(send())
    assert refused.status_code == 400 and refused.json()["code"] in (21211, 21602, 21604)
    assert app.state.provider.texts == []
    if len(to.strip()) > 3:
        assert to not in refused.json()["message"]


async def test_no_number_or_body_is_logged(phone: tuple[httpx.AsyncClient, Provider], city: City) -> None:
    client, provider = phone
    city.answers[INBOUND] = lambda params: "<Response><Message>Reply body here</Message></Response>"
    with capture_logs() as logs:
        await client.post(
            MESSAGES, data={"To": RESIDENT, "From": CITY, "Body": "Secret body", "StatusCallback": CALLBACK}
        )
        await client.post(
            CALLS, data={"To": RESIDENT, "From": CITY, "Twiml": "<Response><Say>Said body</Say></Response>"}
        )
        await client.post("/sample/inbound", data={"From": RESIDENT, "Body": "Inbound body"})
        await provider.idle()
    logged = repr(logs)
    assert logs and all(
        secret not in logged for secret in (RESIDENT, CITY, "Secret body", "Said body", "Inbound body", "Reply body")
    )


async def test_a_call_by_url_fetches_its_twiml_signed_and_a_redirect_loop_is_cut_off(
    phone: tuple[httpx.AsyncClient, Provider], city: City, tmp_path: Path
) -> None:
    client, provider = phone
    start = "https://city.example/telephony/call"
    # a relative Redirect is read from the document's own URL, as Twilio reads it
    city.answers[start] = lambda params: "<Response><Say>Hello.</Say><Redirect>call</Redirect></Response>"
    reply = await client.post(CALLS, data={"To": RESIDENT, "From": CITY, "Url": start})
    assert reply.status_code == 201
    await provider.idle()
    fetched = city.to(start)
    assert len(fetched) == 10 and fetched[0]["CallStatus"] == "in-progress"
    validator = RequestValidator(TOKEN)
    assert all(validator.validate(url, params, signature) for url, params, signature in city.received)
    [file] = (tmp_path / "phone" / RESIDENT).glob("*.call.txt")
    assert "cut off after 10 TwiML documents" in file.read_text()
    assert provider.calls[reply.json()["sid"]].status == "completed"


async def test_a_call_needs_exactly_one_of_twiml_and_url_and_playable_twiml(
    phone: tuple[httpx.AsyncClient, Provider],
) -> None:
    client, provider = phone
    both = await client.post(CALLS, data={"To": RESIDENT, "From": CITY, "Url": DIGITS, "Twiml": "<Response/>"})
    neither = await client.post(CALLS, data={"To": RESIDENT, "From": CITY})
    unplayable = await client.post(CALLS, data={"To": RESIDENT, "From": CITY, "Twiml": "<Response><Dial/></Response>"})
    superscript = await client.post(
        CALLS, data={"To": RESIDENT, "From": CITY, "Twiml": '<Response><Pause length="\u00b2"/></Response>'}
    )
    assert [r.json()["code"] for r in (both, neither, unplayable, superscript)] == [21205, 21205, 12100, 12100]
    assert "length" in superscript.json()["message"]
    assert provider.calls == {}


async def test_a_reply_to_a_number_that_is_not_e164_is_not_sent_nor_filed(
    phone: tuple[httpx.AsyncClient, Provider], city: City, tmp_path: Path
) -> None:
    client, _ = phone
    city.answers[INBOUND] = lambda params: '<Response><Message to="../../elsewhere">Hi</Message></Response>'
    answer = await client.post("/sample/inbound", data={"From": RESIDENT, "Body": "STATUS"})
    assert answer.json()["replies"] == []
    assert [p.name for p in (tmp_path / "phone").iterdir()] == [RESIDENT]


def test_the_notifier_and_the_sample_provider_on_one_state_folder_share_a_token_and_production_needs_one(
    tmp_path: Path,
) -> None:
    notifier = NotifierSettings(state_dir=tmp_path).telephony_token()
    assert notifier == SampleTelephonySettings(state_dir=tmp_path).auth_token()
    assert notifier != NotifierSettings(state_dir=tmp_path / "elsewhere").telephony_token()
    with pytest.raises(UnsafeSecret, match="CIVICFLOW_TELEPHONY_AUTH_TOKEN"):
        NotifierSettings(state_dir=tmp_path, environment="production").telephony_token()


def test_a_queued_text_has_no_sent_time_so_a_datesent_filter_misses_it_as_twilios_does() -> None:
    text = Text(SID, "SM" + "1" * 32, RESIDENT, CITY, "x", "outbound-api", "queued", NOW)
    assert text.sent_at is None and text.as_twilio()["date_sent"] is None
    text.move("sent", at=NOW + timedelta(minutes=3))
    text.move("delivered", at=NOW + timedelta(minutes=4))
    assert text.sent_at == NOW + timedelta(minutes=3)
    assert text.as_twilio()["date_sent"] == "Thu, 26 Nov 2026 12:03:00 +0000"
