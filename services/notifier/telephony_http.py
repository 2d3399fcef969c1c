"""The notifier's HTTP endpoint for the telephony provider: inbound texts (answered with TwiML) and status
callbacks, each signed by the provider (X-Twilio-Signature); served by uvicorn in the notifier process."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qsl
from uuid import UUID
from xml.sax.saxutils import escape

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from services.notifier.telephony import Telephony
from services.notifier.voice import GATHER_PATH

log = structlog.get_logger(__name__)

INBOUND_PATH = "/telephony/inbound"
STATUS_PATH = "/telephony/status"
SIGNATURE_HEADER = "X-Twilio-Signature"
MAX_BODY_BYTES = 32 * 1024  # a text is at most 1,600 characters; the provider's other fields are short
MAX_SID_CHARS = 64
# ASCII only: str.isdigit and str.isalnum take superscript and Arabic-Indic digits too, which int() then
# refuses (a 500) or a number keeps.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
SID = re.compile(rf"[A-Za-z0-9]{{1,{MAX_SID_CHARS}}}")
CALL_STATE = re.compile(r"[A-Za-z-]{1,32}")
ERROR_CODE = re.compile(r"[0-9]{1,8}")
LENGTH = re.compile(r"[0-9]{1,12}")

# (the sender's number, the text, the provider's MessageSid) -> what to text back
Answer = Callable[[str, str, str], Awaitable[str]]
StatusReport = Callable[[str, str, int | None], Awaitable[bool]]  # (sid, status, error code) -> known sid
# (case id, call sid, digits, times the menu was repeated) -> TwiML, or None when the case has no resolution
Menu = Callable[[UUID, str, str, int], Awaitable[str | None]]


def twiml_message(words: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(words)}</Message></Response>'


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_telephony_app(
    telephony: Telephony,
    public_url: str,
    answer: Answer,
    report: StatusReport,
    more_routes: Sequence[BaseRoute] = (),
    menu: Menu | None = None,
) -> Starlette:
    """public_url: this endpoint's address as the provider calls it (what it signs), without the path;
    more_routes: other endpoints of the notifier served beside them (the survey's links); menu: answers the
    digit pressed at a resolution call's menu (POST /telephony/voice/gather)."""
    base = public_url.rstrip("/")

    async def signed_form(request: Request, path: str) -> dict[str, str]:
        declared = request.headers.get("content-length", "").strip()
        if LENGTH.fullmatch(declared) and int(declared) > MAX_BODY_BYTES:
            raise _Refused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise _Refused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            params = dict(parse_qsl(bytes(raw).decode("utf-8"), keep_blank_values=True, errors="strict"))
        except (UnicodeDecodeError, ValueError):
            raise _Refused(400, "the body is not UTF-8 form data (application/x-www-form-urlencoded)") from None
        signature = request.headers.get(SIGNATURE_HEADER, "")
        # A Gather's action carries its case in the query: the provider signs the URL with it.
        signed_url = base + path + (f"?{request.url.query}" if request.url.query else "")
        if not signature or not telephony.signed_by_provider(signed_url, params, signature):
            log.warning("telephony signature rejected", path=path)
            raise _Refused(403, f"missing or wrong {SIGNATURE_HEADER}")
        return params

    async def inbound(request: Request) -> Response:
        try:
            form = await signed_form(request, INBOUND_PATH)
        except _Refused as refused:
            return PlainTextResponse(refused.message, status_code=refused.status)
        sender, message_sid = form.get("From", ""), form.get("MessageSid", "")
        if not E164.fullmatch(sender):
            return PlainTextResponse("From: not a phone number in E.164 (+ and up to 15 digits 0-9)", status_code=400)
        if not SID.fullmatch(message_sid):
            return PlainTextResponse(
                f"MessageSid is required (1 to {MAX_SID_CHARS} letters A-Z and digits 0-9)", status_code=400
            )
        words = await answer(sender, form.get("Body", ""), message_sid)
        return Response(twiml_message(words), media_type="application/xml")

    async def status(request: Request) -> Response:
        try:
            form = await signed_form(request, STATUS_PATH)
        except _Refused as refused:
            return PlainTextResponse(refused.message, status_code=refused.status)
        # a text's callback names MessageSid and MessageStatus, a call's CallSid and CallStatus
        sid = form.get("MessageSid", "") or form.get("CallSid", "")
        state = form.get("MessageStatus", "") or form.get("CallStatus", "")
        if not SID.fullmatch(sid) or not CALL_STATE.fullmatch(state):
            return PlainTextResponse(
                "MessageSid and MessageStatus (or CallSid and CallStatus) are required"
                " (letters A-Z and digits 0-9; a status of letters and '-')",
                status_code=400,
            )
        code = form.get("ErrorCode", "")
        if code and not ERROR_CODE.fullmatch(code):
            return PlainTextResponse("ErrorCode: at most 8 digits 0-9, or none", status_code=400)
        known = await report(sid, state.lower(), int(code) if code else None)
        log.info("text status reported", status=state.lower(), known=known)
        return Response(status_code=204)

    async def gather(request: Request) -> Response:
        try:
            form = await signed_form(request, GATHER_PATH)
        except _Refused as refused:
            return PlainTextResponse(refused.message, status_code=refused.status)
        try:
            case_id = UUID(request.query_params.get("case", ""))
        except ValueError:
            return PlainTextResponse("case: not a case id (a UUID) in the query", status_code=400)
        repeat = request.query_params.get("repeat", "0")
        if request.query_params.get("stage") != "resolved" or repeat not in ("0", "1"):
            return PlainTextResponse("stage must be 'resolved' and repeat 0 or 1", status_code=400)
        sid, digits = form.get("CallSid", ""), form.get("Digits", "")
        if not SID.fullmatch(sid):
            return PlainTextResponse(
                f"CallSid is required (1 to {MAX_SID_CHARS} letters A-Z and digits 0-9)", status_code=400
            )
        if len(digits) > 20 or not all(d in "0123456789*#" for d in digits):
            return PlainTextResponse("Digits: at most 20 of 0-9, * and #", status_code=400)
        assert menu is not None  # the route exists only with a menu
        twiml = await menu(case_id, sid, digits, int(repeat))
        if twiml is None:
            return PlainTextResponse("no resolution to answer about for that case", status_code=404)
        return Response(twiml, media_type="application/xml")

    routes = [
        Route(INBOUND_PATH, inbound, methods=["POST"]),
        Route(STATUS_PATH, status, methods=["POST"]),
        *more_routes,
    ]
    if menu is not None:
        routes.append(Route(GATHER_PATH, gather, methods=["POST"]))
    return Starlette(routes=routes)
