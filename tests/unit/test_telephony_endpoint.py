"""The notifier's telephony endpoint without a database: a signed text or status callback whose sender, sid,
status or error code is not plain ASCII of the right shape is refused naming the field, and reaches nothing."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlencode

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.telephony_http import INBOUND_PATH, SIGNATURE_HEADER, STATUS_PATH, create_telephony_app
from tests.telephony_double import InMemoryTelephony

PUBLIC_URL = "https://notifier.example.org"
PHONE = "+13125550177"  # in the 555-01xx range kept for fiction
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
SID = re.compile(r"[A-Za-z0-9]{1,64}")
# Any digit or letter Unicode has, so ASCII-looking checks (str.isdigit, str.isalnum) are put to the test.
UNICODE_DIGITS = st.characters(categories=["Nd", "No", "L"])


class Endpoint:
    """The app over the in-memory telephony double, recording what reached the handlers."""

    def __init__(self) -> None:
        self.telephony = InMemoryTelephony()
        self.reached: list[tuple[str, ...]] = []

        async def answer(sender: str, body: str, message_sid: str) -> str:
            self.reached.append((sender, body, message_sid))
            return "ok"

        async def report(sid: str, status: str, code: int | None) -> bool:
            self.reached.append((sid, status, str(code)))
            return True

        self.app = create_telephony_app(self.telephony, PUBLIC_URL, answer, report)

    def post(self, path: str, form: dict[str, str]) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
                return await client.post(
                    path,
                    content=urlencode(form),
                    headers={
                        "content-type": "application/x-www-form-urlencoded",
                        SIGNATURE_HEADER: self.telephony.sign(PUBLIC_URL + path, form),
                    },
                )

        return asyncio.run(send())


@settings(max_examples=80, deadline=None)
@given(
    sender=st.text(UNICODE_DIGITS | st.sampled_from("+ -()\x00"), max_size=20)
    | st.text(st.characters(categories=["Nd"]), min_size=1, max_size=15).map(lambda digits: "+" + digits)
)
def test_a_sender_is_taken_only_as_ascii_e164(sender: str) -> None:
    endpoint = Endpoint()
    answered = endpoint.post(INBOUND_PATH, {"From": sender, "Body": "STATUS", "MessageSid": "SM1"})
    if E164.fullmatch(sender):
        assert answered.status_code == 200 and endpoint.reached == [(sender, "STATUS", "SM1")]
    else:
        assert answered.status_code == 400 and answered.text.startswith("From")
        assert endpoint.reached == []


@settings(max_examples=80, deadline=None)
@given(sid=st.text(UNICODE_DIGITS | st.sampled_from(" \x00"), max_size=70), code=st.text(UNICODE_DIGITS, max_size=10))
def test_a_status_callback_takes_only_ascii_sids_and_error_codes(sid: str, code: str) -> None:
    endpoint = Endpoint()
    form = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": code}
    answered = endpoint.post(STATUS_PATH, form)
    if not SID.fullmatch(sid):
        assert answered.status_code == 400 and "MessageSid" in answered.text and endpoint.reached == []
    elif code and not re.fullmatch(r"[0-9]{1,8}", code):
        assert answered.status_code == 400 and answered.text.startswith("ErrorCode") and endpoint.reached == []
    else:
        assert answered.status_code == 204
        assert endpoint.reached == [(sid, "undelivered", str(int(code) if code else None))]
