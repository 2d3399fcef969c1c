"""The SAMPLE telephony provider's state and work: texts and their signed status callbacks, calls played from
TwiML, inbound texts, Twilio-style refusals. A stand-in for development and tests; see the package docstring.
It logs sids and statuses, never a number or a body: those are only in the files under <state>/phone."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
import shutil
from collections import defaultdict, deque
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin

import httpx
import structlog
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from twilio.request_validator import RequestValidator

from civicflow.secrets import shared_secret
from civicflow.settings import KernelSettings
from samples.telephony.records import (
    API_VERSION,
    E164,
    MAX_BODY,
    TEXT_OPTED_OUT,
    TEXT_REPORTS_LOST,
    TEXT_UNDELIVERED,
    Call,
    PhoneFolder,
    Text,
    call_outcome,
    new_sid,
)
from samples.telephony.twiml import CallScript, Message, Post, TwimlError, read_twiml
from services.notifier.telephony import AUTH_TOKEN_FILE, DEV_ACCOUNT_SID, DEV_CITY_NUMBER

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
HTTP_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")
MAX_REQUEST_BYTES = 256_000
MAX_DOCUMENTS_PER_CALL = 10  # a call following Redirects and Gather actions further than this is cut off
# The StatusCallbackEvent each call status belongs to; busy, no-answer, failed and completed are all 'completed'.
CALL_EVENTS = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}


class SampleTelephonySettings(KernelSettings):
    """CIVICFLOW_SAMPLE_PHONE_* and the telephony settings the notifier shares (account, token, city number)."""

    sample_phone_port: int = 8095
    sample_phone_step_seconds: float = Field(default=0.5, ge=0)
    telephony_account_sid: str = DEV_ACCOUNT_SID
    telephony_auth_token: str = ""
    telephony_from: str = DEV_CITY_NUMBER
    telephony_inbound_url: str = "http://127.0.0.1:8082/telephony/inbound"
    phone_dir: Path | None = None

    def auth_token(self) -> str:
        return shared_secret(self, self.telephony_auth_token, "CIVICFLOW_TELEPHONY_AUTH_TOKEN", AUTH_TOKEN_FILE)

    def folder(self) -> Path:
        return self.phone_dir or self.state_dir / "phone"


class Refused(Exception):
    """A request the provider answers with Twilio's error JSON."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return JSONResponse(
            {
                "code": self.code,
                "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
                "status": self.status,
            },
            status_code=self.status,
        )


async def form_of(request: Request) -> dict[str, list[str]]:
    """The form-encoded body, every value of every name; refused when it is not UTF-8 or too big."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_BYTES:
            raise Refused(413, 21617, f"the request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise Refused(400, 21602, "the request is not UTF-8 form data") from None
    form: dict[str, list[str]] = defaultdict(list)
    for name, value in pairs:
        form[name].append(value)
    return form


def one(form: Mapping[str, list[str]], name: str, required: bool = True) -> str | None:
    values = form.get(name, [])
    if not values:
        if required:
            raise Refused(400, 21604 if name == "To" else 21602, f"A '{name}' parameter is required.")
        return None
    if "\x00" in values[0]:
        raise Refused(400, 21602, f"The '{name}' parameter holds a NUL character; remove it.")
    return values[0]


def callback_url(form: Mapping[str, list[str]], name: str) -> str | None:
    """An optional URL the provider will call: absolute http(s), as Twilio requires."""
    value = one(form, name, required=False)
    if value is None:
        return None
    if not HTTP_URL.fullmatch(value) or len(value) > 2000:
        raise Refused(400, 21609 if name == "StatusCallback" else 21205, f"'{name}' must be an absolute http(s) URL.")
    return value


def number(form: Mapping[str, list[str]], name: str) -> str:
    value = one(form, name) or ""
    if not E164.fullmatch(value):
        # Never the number itself in an error: it may be a resident's.
        raise Refused(400, 21211 if name == "To" else 21212, f"The '{name}' number is not a valid E.164 phone number.")
    return value


class Provider:
    """The provider's state (texts, calls, digits to press) and its work (callbacks, playing calls)."""

    def __init__(self, settings: SampleTelephonySettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.token = settings.auth_token()
        self.signer = RequestValidator(self.token)
        self.folder = PhoneFolder(settings.folder())
        self.texts: list[Text] = []
        self.calls: dict[str, Call] = {}
        self.presses: dict[str, deque[str]] = defaultdict(deque)
        self._client = client
        self._running: set[asyncio.Task[None]] = set()

    def start(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            problem = task.exception()
            log.error(
                "sample telephony: a text or call broke off", task=task.get_name(), problem=type(problem).__name__
            )

    async def idle(self) -> None:
        """Wait until every text and call has run its course (for tests)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def stop(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def post_signed(self, url: str, params: dict[str, str]) -> httpx.Response | None:
        """POST form params to url signed as Twilio signs; None when it could not be reached."""
        headers = {SIGNATURE_HEADER: self.signer.compute_signature(url, params)}
        try:
            return await self._client.post(url, data=params, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.warning("sample telephony: callback not delivered", problem=type(exc).__name__)
            return None

    # texts

    def file_text(self, text: Text) -> None:
        self.folder.write(self.folder.file_for(text.resident, text.created_at, text.sid, "text"), text.readable())

    def take_text(self, to: str, from_: str, body: str, status_callback: str | None) -> Text:
        if to.endswith(TEXT_OPTED_OUT):
            raise Refused(400, 21610, "Attempt to send to unsubscribed recipient")
        now = datetime.now(UTC)
        text = Text(self.settings.telephony_account_sid, new_sid("SM"), to, from_, body, "outbound-api", "queued", now)
        text.move("queued", at=now)
        text.status_callback = status_callback
        self.texts.append(text)
        self.file_text(text)
        self.start(self._deliver(text), f"text-{text.sid}")
        log.info("sample telephony: text queued", sid=text.sid)
        return text

    async def _deliver(self, text: Text) -> None:
        final = ("undelivered", 30003) if text.to.endswith(TEXT_UNDELIVERED) else ("delivered", None)
        steps: list[tuple[str, int | None]] = [("queued", None), ("sent", None), final]
        # a provider's callbacks are best effort: this test number's are all lost, so the city must ask
        lost = text.to.endswith(TEXT_REPORTS_LOST)
        for status, code in steps:
            if status != "queued":  # queued is where the text stands already: it is only told
                await asyncio.sleep(self.settings.sample_phone_step_seconds)
                text.move(status, code)
                self.file_text(text)
                log.info("sample telephony: text moved", sid=text.sid, status=status)
            if text.status_callback and not lost:
                params = {
                    "MessageSid": text.sid,
                    "SmsSid": text.sid,
                    "MessageStatus": status,
                    "SmsStatus": status,
                    "AccountSid": text.account_sid,
                    "From": text.from_,
                    "To": text.to,
                    "ApiVersion": API_VERSION,
                }
                if code is not None:
                    params["ErrorCode"] = str(code)
                await self.post_signed(text.status_callback, params)

    async def receive_text(self, from_: str, body: str) -> tuple[Text, int | None, list[Text]]:
        """A resident's text to the city's number: posted to the inbound webhook, its <Message> replies sent.
        Returns the text, the webhook's HTTP status (None: not reached) and the replies."""
        settings = self.settings
        text = Text(
            settings.telephony_account_sid, new_sid("SM"), settings.telephony_from, from_, body, "inbound",
            "received", datetime.now(UTC),
        )  # fmt: skip
        text.move("received")
        self.texts.append(text)
        self.file_text(text)
        params = {
            "MessageSid": text.sid,
            "SmsSid": text.sid,
            "SmsMessageSid": text.sid,
            "AccountSid": text.account_sid,
            "From": from_,
            "To": text.to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        answer = await self.post_signed(settings.telephony_inbound_url, params)
        log.info("sample telephony: inbound text", sid=text.sid, webhook=answer.status_code if answer else None)
        replies: list[Text] = []
        if answer is not None and answer.is_success and answer.content.strip():
            try:
                verbs = read_twiml(answer.content)
            except TwimlError as exc:
                log.warning("sample telephony: the inbound webhook's TwiML is not playable", problem=str(exc))
                verbs = []
            for verb in verbs:
                to = (verb.to or from_) if isinstance(verb, Message) else ""
                if isinstance(verb, Message) and verb.body and E164.fullmatch(to):
                    try:
                        replies.append(self.take_text(to, settings.telephony_from, verb.body[:MAX_BODY], None))
                    except Refused as refused:  # the resident has opted out
                        log.warning("sample telephony: a reply was refused", sid=text.sid, code=refused.code)
                elif isinstance(verb, Message):
                    log.warning("sample telephony: a reply with no body or an invalid 'to' was not sent", sid=text.sid)
        return text, answer.status_code if answer is not None else None, replies

    # calls

    def file_call(self, call: Call) -> Path:
        file = self.folder.file_for(call.to, call.created_at, call.sid, "call")
        self.folder.write(file, call.readable())
        return file

    def place_call(self, to: str, from_: str, twiml: str | None, url: str | None, status_callback: str | None,
                   events: frozenset[str]) -> Call:  # fmt: skip
        if twiml is not None:
            read_twiml(twiml)  # refused now when it cannot be played, as Twilio refuses bad Twiml
        now = datetime.now(UTC)
        call = Call(self.settings.telephony_account_sid, new_sid("CA"), to, from_, "queued", now, status_callback)
        call.events = events
        call.move("queued", at=now)
        self.calls[call.sid] = call
        self.file_call(call)
        self.start(self._play(call, twiml, url), f"call-{call.sid}")
        log.info("sample telephony: call queued", sid=call.sid)
        return call

    async def _move_call(self, call: Call, status: str) -> None:
        call.move(status)
        self.file_call(call)
        log.info("sample telephony: call moved", sid=call.sid, status=status)
        if call.status_callback and CALL_EVENTS.get(status, "completed") in call.events:
            await self.post_signed(
                call.status_callback, {**self._call_params(call), "CallbackSource": "call-progress-events"}
            )

    def _call_params(self, call: Call) -> dict[str, str]:
        return {
            "CallSid": call.sid,
            "AccountSid": call.account_sid,
            "From": call.from_,
            "To": call.to,
            "CallStatus": call.status,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }

    async def _play(self, call: Call, twiml: str | None, url: str | None) -> None:
        step = self.settings.sample_phone_step_seconds
        await self._move_call(call, "initiated")
        await asyncio.sleep(step)
        await self._move_call(call, "ringing")
        await asyncio.sleep(step)
        outcome = call_outcome(call.to)
        if outcome != "completed":
            call.transcript.append(f"not answered: {outcome}")
            await self._move_call(call, outcome)
            return
        await self._move_call(call, "in-progress")
        script = CallScript(self.presses[call.to], call.transcript)
        next_step: Post | None = Post(url, None) if twiml is None and url else None
        document = twiml
        here = url  # where the document playing came from: a relative action or Redirect is read from there
        for _ in range(MAX_DOCUMENTS_PER_CALL):
            if document is None and next_step is not None:
                if here is not None:
                    next_step = Post(urljoin(here, next_step.url), next_step.digits)
                here = next_step.url
                document = await self._fetch_twiml(call, next_step)
            if document is None:
                break
            try:
                next_step = script.play(read_twiml(document))
            except TwimlError as exc:
                call.transcript.append(f"(an application error: {exc})")
                next_step = None
            self.file_call(call)
            document = None
            if next_step is None:
                break
        else:
            call.transcript.append(f"(cut off after {MAX_DOCUMENTS_PER_CALL} TwiML documents)")
        await self._render_speech(call, script)
        await self._move_call(call, "completed")

    async def _fetch_twiml(self, call: Call, where: Post) -> str | None:
        params = self._call_params(call)
        if where.digits is not None:
            params.update({"Digits": where.digits, "FinishedOnKey": ""})
        answer = await self.post_signed(where.url, params)
        if answer is None or not answer.is_success:
            call.transcript.append(
                f"(the TwiML at the action URL did not come: {answer.status_code if answer else 'unreachable'})"
            )
            return None
        return answer.text

    async def _render_speech(self, call: Call, script: CallScript) -> None:
        """A WAV of what was said, where espeak-ng is installed (a person can play it); nothing otherwise."""
        speech = script.speech()
        espeak = shutil.which("espeak-ng")
        if espeak is None or not speech:
            return
        wav = self.folder.file_for(call.to, call.created_at, call.sid, "call").with_suffix(".wav")
        process = await asyncio.create_subprocess_exec(
            espeak, "-w", str(wav), "--stdin", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await process.communicate(speech.encode())


def authorised(request: Request, account_sid: str, token: str) -> None:
    """HTTP Basic with the account SID and auth token, as Twilio's API asks; Refused(401) otherwise."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user = password = ""
    known = hmac.compare_digest(user.encode(), account_sid.encode()) & hmac.compare_digest(
        password.encode(), token.encode()
    )
    if scheme.lower() != "basic" or not known:
        raise Refused(401, 20003, "Authenticate: give the account SID and auth token (HTTP Basic)")
    path_sid = request.path_params.get("account_sid")
    if path_sid is not None and path_sid != account_sid:
        raise Refused(404, 20404, "The requested resource was not found")
