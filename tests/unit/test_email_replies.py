"""Reading departments' replies to work-order emails, their one-click answer links, and the reply endpoint's checks
(services/workorder_bridge/email_replies.py, email_links.py, email_http.py, kinds/email.py). Pure, or the endpoint
in process with a recorder that keeps what it is handed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from civicflow.department_systems import ConnectorSpec
from services.workorder_bridge.connector import ExternalUpdate, Outcome
from services.workorder_bridge.email_http import (
    EMAIL_REPLIES_PATH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EmailDepartments,
    email_routes,
    relay_signature_problem,
    sign_relay,
)
from services.workorder_bridge.email_links import (
    BadLink,
    ExpiredLink,
    LinkAnswer,
    link_key,
    make_token,
    read_token,
)
from services.workorder_bridge.email_replies import ReplyUnreadable, first_paragraph, read_reply
from services.workorder_bridge.kinds.email import (
    NoStatus,
    department_link_key,
    read_answer,
    reference_for,
    work_order_message_id,
)

SECRET = "unit-test-signing-secret-0123456789"
SPEC = ConnectorSpec(kind="email", inbox="Code@Sample-City.example")
NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
REFERENCE = reference_for("a routing event")


def a_reply(body: str, *, sender: str = "code@sample-city.example", subtype: str = "plain", **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "workorders@civicflow.local"
    message["Subject"] = headers.pop("subject", f"Re: [{REFERENCE}] Work order: POTHOLE")
    message["Message-ID"] = headers.pop("message_id", "<reply-1@sample-city.example>")
    message["In-Reply-To"] = headers.pop("in_reply_to", work_order_message_id(REFERENCE, "code"))
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body, subtype=subtype)
    return message.as_bytes()


# --- what a reply says ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "paragraph"),
    [
        ("done: filled it\nwith asphalt\n\nSam\n", ["done: filled it", "with asphalt"]),
        ("\n\n  in progress  \n> On Tue you wrote:\n> Work order", ["in progress"]),
        ("On Tue, 26 Nov 2026, 311 <w@c.example> wrote:\n> Work order EM-X\n> Due\n\ndone\n", ["done"]),
        ("> quoted first\n>\nscheduled for Tuesday\n-- \nSam, Code Enforcement", ["scheduled for Tuesday"]),
        ("not ours\n-----Original Message-----\nFrom: 311\ndone", ["not ours"]),
        ("-----Original Message-----\ndone", []),
        ("done\r\nsecond line\r\n\r\nthird", ["done", "second line"]),
        (
            "done: fixed\nOn Thu, Nov 26, 2026 at 3:08 PM 311 work orders <\nw@civicflow.local> wrote:\n> x",
            ["done: fixed"],
        ),
        ("On Thu, Nov 26, 2026 at 3:08 PM 311 work orders <\nw@civicflow.local> wrote:\n> x\n\nreopen", ["reopen"]),
        ("", []),
    ],
)
def test_the_first_paragraph_leaves_out_the_quote_and_the_signature(text: str, paragraph: list[str]) -> None:
    assert first_paragraph(text) == paragraph


@pytest.mark.parametrize(
    ("line", "status", "refers_to", "note"),
    [
        ("done: filled the pothole", "done", None, "filled the pothole"),
        ("DONE.", "DONE", None, None),
        ("In Progress - crew on site", "In Progress", None, "crew on site"),
        ("not ours, try streets", "not ours", None, "try streets"),
        ("not our responsibility", "not our responsibility", None, None),
        ("duplicate of CT-12AB34CD", "duplicate", "CT-12AB34CD", None),
        ("refer parks: it is in the park", "refer", "parks", "it is in the park"),
        ("reopen", "reopen", None, None),
        ("awaiting_parts_xq until Friday", "awaiting_parts_xq", None, "until Friday"),
        ("done: see https://evil.example/x", "done", None, "see [link removed]"),
    ],
)
def test_the_status_word_its_argument_and_the_note(line: str, status: str, refers_to: str | None, note: str) -> None:
    answer = read_answer([line], SPEC)
    assert (answer.status, answer.refers_to, answer.note) == (status, refers_to, note)


def test_an_unknown_word_arrives_as_theirs_unmapped() -> None:
    assert SPEC.ours(read_answer(["awaiting_parts_xq"], SPEC).status) is None


@pytest.mark.parametrize("paragraph", [[], ["!!!"], ["-- : --"], ["x" * 65]])
def test_a_first_line_without_a_status_word_is_refused(paragraph: list[str]) -> None:
    with pytest.raises(NoStatus):
        read_answer(paragraph, SPEC)


def test_a_reply_names_its_work_order_department_and_sender() -> None:
    reply = read_reply(a_reply("done", sender="Code Desk <CODE@sample-city.example>"))
    assert (reply.reference, reply.department_tag, reply.sender) == (REFERENCE, "code", "code@sample-city.example")
    assert reply.message_id == "<reply-1@sample-city.example>"


def test_without_in_reply_to_the_subject_names_the_work_order() -> None:
    raw = a_reply("done", in_reply_to="<something@else.example>", subject=f"RE: [{REFERENCE.lower()}] thanks")
    reply = read_reply(raw)
    assert (reply.reference, reply.department_tag) == (REFERENCE, None)


def test_an_html_only_reply_is_read_without_its_quoted_history() -> None:
    html = (
        "<html><body><div dir='ltr'>In progress &amp; on site<br>Sam</div>"
        "<div class='gmail_quote'>On Tue 311 wrote:<blockquote>done</blockquote></div></body></html>"
    )
    reply = read_reply(a_reply(html, subtype="html"))
    assert reply.paragraph == ["In progress & on site", "Sam"]


def test_an_unknown_charset_is_read_as_utf8_with_replacements() -> None:
    raw = (
        b"From: code@sample-city.example\r\nSubject: Re: [" + REFERENCE.encode() + b"]\r\n"
        b"Content-Type: text/plain; charset=x-made-up\r\n\r\nd\xf6ne: caf\xe9\r\n"
    )
    reply = read_reply(raw)
    assert reply.paragraph and reply.paragraph[0].endswith("caf\ufffd")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not an email at all",
        b"Subject: no sender\r\n\r\ndone",
        b"From: a@x.example, b@x.example\r\n\r\ndone",
        b"From: a@x.example\r\nFrom: b@x.example\r\n\r\ndone",
        b"From: nobody\r\n\r\ndone",
    ],
)
def test_what_is_not_a_reply_is_unreadable(raw: bytes) -> None:
    with pytest.raises(ReplyUnreadable):
        read_reply(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_crash_the_reader(raw: bytes) -> None:
    try:
        read_reply(raw)
    except ReplyUnreadable:
        pass


_HEADER_NAMES = st.sampled_from(["From", "Subject", "In-Reply-To", "References", "Date", "Content-Type", "Message-ID"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_HEADER_NAMES, st.binary(max_size=200)), max_size=8),
    st.binary(max_size=2000),
)
def test_arbitrary_headers_and_bodies_never_crash_the_reader(headers: list[tuple[str, bytes]], body: bytes) -> None:
    raw = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body
    try:
        reply = read_reply(raw)
    except ReplyUnreadable:
        return
    try:
        read_answer(reply.paragraph, SPEC)
    except NoStatus:
        pass


# --- one-click links ------------------------------------------------------------------------------------------

KEY = link_key(SECRET, "code")


def key_of(department_id: str) -> bytes | None:
    return KEY if department_id == "code" else None


def test_a_link_reads_back_what_it_was_made_with() -> None:
    answer = LinkAnswer("code", REFERENCE, "done", int((NOW + timedelta(days=1)).timestamp()))
    assert read_token(make_token(KEY, answer), key_of, NOW) == answer


def test_a_link_after_its_expiry_is_refused() -> None:
    answer = LinkAnswer("code", REFERENCE, "done", int(NOW.timestamp()))
    with pytest.raises(ExpiredLink, match="reply to the work order's email"):
        read_token(make_token(KEY, answer), key_of, NOW)


def test_a_tampered_link_is_refused() -> None:
    answer = LinkAnswer("code", REFERENCE, "in progress", int((NOW + timedelta(days=1)).timestamp()))
    token = make_token(KEY, answer)
    payload, signature = token.split(".")
    forged = make_token(b"another key entirely, 32 bytes..", LinkAnswer("code", REFERENCE, "done", answer.expires_at))
    other_department = make_token(link_key(SECRET, "parks"), LinkAnswer("parks", REFERENCE, "done", answer.expires_at))
    for bad in (
        forged,
        other_department,
        forged.split(".")[0] + "." + signature,  # another status under this link's signature
        payload + "." + signature[:-2] + ("AA" if not signature.endswith("AA") else "BB"),
        payload,
        "." + signature,
        "%%%." + signature,
        "a" * 700,
    ):
        with pytest.raises(BadLink):
            read_token(bad, key_of, NOW)


def test_each_department_signs_with_a_key_of_its_own() -> None:
    assert link_key(SECRET, "code") != link_key(SECRET, "parks")


# --- the reply endpoint ---------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[str, ExternalUpdate]] = []

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        self.received.append((department_id, update))
        return Outcome.RECORDED


def endpoint(recorder: Recorder, specs: dict[str, ConnectorSpec] | None = None) -> httpx.AsyncClient:
    departments = EmailDepartments.of(specs or {"code": SPEC}, SECRET, None)
    app = Starlette(routes=email_routes(departments, recorder, SECRET, now=lambda: NOW))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge")


def signed_headers(body: bytes, at: datetime = NOW) -> dict[str, str]:
    stamp = int(at.timestamp())
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign_relay(SECRET, stamp, body)}


async def post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post(
        EMAIL_REPLIES_PATH, content=body, headers=signed_headers(body) if headers is None else headers
    )


async def test_a_signed_reply_is_recorded_in_their_words() -> None:
    recorder = Recorder()
    async with endpoint(recorder) as client:
        answer = await post(client, a_reply("done: filled\n\n> history", Date="Thu, 26 Nov 2026 14:00:00 +0000"))
    assert answer.status_code == 200, answer.text
    [(department_id, update)] = recorder.received
    assert (department_id, update.status, update.note) == ("code", "done", "filled")
    assert update.changed_at == datetime(2026, 11, 26, 14, 0, tzinfo=UTC)


async def test_a_reply_dated_in_the_future_counts_from_when_it_arrived() -> None:
    recorder = Recorder()
    async with endpoint(recorder) as client:
        await post(client, a_reply("done", Date="Thu, 26 Nov 2099 14:00:00 +0000"))
    assert recorder.received[0][1].changed_at == NOW


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({TIMESTAMP_HEADER: str(int(NOW.timestamp()))}, 401),
        ({SIGNATURE_HEADER: "sha256=00"}, 401),
    ],
)
async def test_an_unsigned_reply_is_refused(headers: dict[str, str], status: int) -> None:
    recorder = Recorder()
    async with endpoint(recorder) as client:
        answer = await post(client, a_reply("done"), headers)
    assert answer.status_code == status and recorder.received == []


async def test_a_stale_or_replayed_signature_is_refused() -> None:
    recorder = Recorder()
    body = a_reply("done")
    async with endpoint(recorder) as client:
        stale = await post(client, body, signed_headers(body, NOW - timedelta(minutes=6)))
        other_body = await post(client, a_reply("reopen"), signed_headers(body))
    assert (stale.status_code, other_body.status_code) == (401, 401)
    assert "seconds away" in stale.json()["error"]
    assert recorder.received == []


def test_the_relay_signature_is_over_the_timestamp_and_the_body() -> None:
    stamp = int(NOW.timestamp())
    good = sign_relay(SECRET, stamp, b"x")
    assert relay_signature_problem(SECRET, b"x", str(stamp), good, NOW) is None
    assert relay_signature_problem(SECRET, b"x", str(stamp + 1), good, NOW) is not None
    assert relay_signature_problem(SECRET, b"x", "1e9", good, NOW) is not None


async def test_a_reply_from_another_address_is_refused_and_not_logged_with_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    recorder = Recorder()
    async with endpoint(recorder) as client:
        answer = await post(client, a_reply("done", sender="mallory@elsewhere.example"))
    assert answer.status_code == 403 and recorder.received == []
    assert "mallory" not in answer.text and "mallory" not in capsys.readouterr().out


async def test_a_reply_naming_only_the_subject_is_placed_by_its_sender() -> None:
    recorder = Recorder()
    async with endpoint(recorder) as client:
        ok = await post(client, a_reply("done", in_reply_to="<x@y.example>"))
        stranger = await post(client, a_reply("done", in_reply_to="<x@y.example>", sender="x@y.example"))
    assert (ok.status_code, stranger.status_code) == (200, 403)
    assert [d for d, _ in recorder.received] == ["code"]


async def test_a_shared_inbox_needs_the_in_reply_to() -> None:
    recorder = Recorder()
    async with endpoint(recorder, {"code": SPEC, "environment": SPEC}) as client:
        ambiguous = await post(client, a_reply("done", in_reply_to="<x@y.example>"))
        placed = await post(client, a_reply("done"))
    assert ambiguous.status_code == 422 and placed.status_code == 200
    assert [d for d, _ in recorder.received] == ["code"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"garbage", 400, "not an e-mail message"),
        (a_reply("done", in_reply_to="<x@y.example>", subject="Re: hello"), 422, "answers no work order"),
        (a_reply("> only the quote"), 422, "start the reply with one of: done,"),
        (
            a_reply("done", in_reply_to=f"<{REFERENCE}@parks.workorders.civicflow.local>"),
            404,
            "not sent to a department on email",
        ),
    ],
)
async def test_what_cannot_be_recorded_gets_a_clear_error(body: bytes, status: int, says: str) -> None:
    recorder = Recorder()
    async with endpoint(recorder) as client:
        answer = await post(client, body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]
    assert recorder.received == []


async def test_a_huge_message_is_refused_unread() -> None:
    recorder = Recorder()
    async with endpoint(recorder) as client:
        answer = await client.post(
            EMAIL_REPLIES_PATH, content=b"x" * (10 * 1024 * 1024 + 1), headers=signed_headers(b"")
        )
    assert answer.status_code == 413 and recorder.received == []


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=3000))
async def test_signed_garbage_gets_a_4xx_never_a_crash(raw: bytes) -> None:
    recorder = Recorder()
    async with endpoint(recorder) as client:
        answer = await post(client, raw)
    assert 400 <= answer.status_code < 500 or answer.status_code == 200
    json.loads(answer.text)


async def test_a_link_get_records_nothing_and_its_post_records() -> None:
    recorder = Recorder()
    token = make_token(KEY, LinkAnswer("code", REFERENCE, "done", int(time.time()) + 3600))
    async with endpoint(recorder) as client:
        shown = await client.get(f"/work-orders/answer/{token}")
        assert shown.status_code == 200 and recorder.received == []
        recorded = await client.post(f"/work-orders/answer/{token}")
    assert recorded.status_code == 200
    [(department_id, update)] = recorder.received
    assert (department_id, update.external_id, update.status) == ("code", REFERENCE, "done")


@pytest.mark.parametrize(
    "header", [{"Auto_Submitted": "auto-replied"}, {"X_Autoreply": "yes"}, {"Precedence": "auto_reply"}]
)
async def test_an_out_of_office_answer_records_nothing(header: dict[str, str]) -> None:
    recorder = Recorder()
    async with endpoint(recorder) as client:
        answer = await post(client, a_reply("I am out of the office until Monday", **header))
    assert answer.status_code == 200 and answer.json()["outcome"] == "ignored"
    assert recorder.received == []


def test_a_department_may_sign_its_links_with_a_credential_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODE_LINK_KEY", "code's own link key, by reference")
    own = ConnectorSpec.model_validate(
        {"kind": "email", "inbox": "code@x.example", "credentials": {"env": "CODE_LINK_KEY"}}
    )
    assert department_link_key(own, "code", SECRET, None) == b"code's own link key, by reference"
    assert department_link_key(SPEC, "code", SECRET, None) == link_key(SECRET, "code")
    with pytest.raises(ValueError, match="never inline"):
        ConnectorSpec.model_validate({"kind": "email", "inbox": "code@x.example", "credentials": "inline"})
