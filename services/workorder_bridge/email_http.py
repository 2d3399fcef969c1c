"""The email kind's endpoints on the bridge's HTTP server: departments' replies, posted as raw messages by the
city's inbound-mail relay, and the one-click answer links of work-order emails (kinds/email.py).

Replies: `POST /webhooks/email-replies` with the message as it arrived (RFC 822, as Mailgun's, SendGrid's and
Postmark's inbound relays can post it), signed by the relay: `X-Civicflow-Timestamp` (Unix seconds) and
`X-Civicflow-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body>` with the bridge's signing secret; a
timestamp more than five minutes away is refused, so a captured request cannot be replayed later (within the
window a replay is the same reply, whose Message-ID the recorder has seen). The reply must answer one of our work
orders (In-Reply-To/References, else "[EM-…]" in the subject) and come from that department's inbox; the relay is
trusted to have checked the sender's domain (SPF/DKIM), as our signature proves only that the relay posted it.

Links: `GET /work-orders/answer/<token>` shows a page with a button; only its `POST` records (email_links.py).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from civicflow.department_systems import ConnectorSpec
from services.workorder_bridge.connector import ExternalUpdate, Outcome, RecordUpdate
from services.workorder_bridge.email_links import (
    LINKS_PATH,
    BadLink,
    ExpiredLink,
    Page,
    page,
    read_token,
)
from services.workorder_bridge.email_replies import ReplyUnreadable, read_reply, when_sent
from services.workorder_bridge.kinds.email import NoStatus, answer_words, department_link_key, read_answer
from services.workorder_bridge.mailer import department_tag
from services.workorder_bridge.webhook import BodyTooLarge, read_limited

log = structlog.get_logger(__name__)

EMAIL_REPLIES_PATH = "/webhooks/email-replies"
TIMESTAMP_HEADER = "X-Civicflow-Timestamp"
SIGNATURE_HEADER = "X-Civicflow-Signature"
SIGNATURE_SCHEME = "sha256="
TOLERANCE_SECONDS = 300
# A reply with a photo attached is a few MiB; more is not a reply to a work order.
MAX_REPLY_BYTES = 10 * 1024 * 1024


def sign_relay(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header for a posted reply: sha256=<hex HMAC-SHA256 of '<timestamp>.' + body>."""
    return SIGNATURE_SCHEME + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def relay_signature_problem(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, now: datetime
) -> str | None:
    """What is wrong with a posted reply's signature, or None when it is ours and fresh."""
    if not timestamp or not timestamp.strip().isdigit() or len(timestamp.strip()) > 12:
        return f"missing or malformed {TIMESTAMP_HEADER}: send the time of signing in Unix seconds"
    sent = int(timestamp.strip())
    if abs(now.timestamp() - sent) > TOLERANCE_SECONDS:
        return f"{TIMESTAMP_HEADER} is more than {TOLERANCE_SECONDS} seconds away from our clock: sign it afresh"
    expected = sign_relay(secret, sent, body)
    if not signature or not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return (
            f"missing or wrong {SIGNATURE_HEADER}: sign '<timestamp>.' followed by the raw body with HMAC-SHA256"
            " and the bridge's signing secret"
        )
    return None


@dataclass
class EmailDepartments:
    """The departments on the email kind: their connectors, link keys, and how a Message-ID names them."""

    specs: dict[str, ConnectorSpec]
    link_keys: dict[str, bytes]
    by_tag: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, specs: dict[str, ConnectorSpec], signing_secret: str, city_dir: Path | None) -> EmailDepartments:
        emails = {d: s for d, s in specs.items() if s.kind == "email"}
        keys = {d: department_link_key(s, d, signing_secret, city_dir) for d, s in emails.items()}
        return cls(emails, keys, {department_tag(d): d for d in emails})

    def inbox_of(self, department_id: str) -> str:
        inbox = self.specs[department_id].inbox
        assert inbox is not None  # the email kind needs one (department_systems.py)
        return inbox.strip().lower()

    def with_inbox(self, sender: str) -> list[str]:
        return [d for d in self.specs if self.inbox_of(d) == sender]


def _error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


def email_routes(
    departments: EmailDepartments,
    record: RecordUpdate,
    secret: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[Route]:
    """The routes to add to the bridge's HTTP app (services/workorder_bridge/main.py)."""

    async def receive_reply(request: Request) -> Response:
        try:
            body = await read_limited(request, MAX_REPLY_BYTES)
        except BodyTooLarge:
            return _error(
                413, f"the message is larger than {MAX_REPLY_BYTES} bytes; send the reply without attachments"
            )
        problem = relay_signature_problem(
            secret, body, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), now()
        )
        if problem is not None:
            log.warning("email reply refused: signature", problem=problem.split(":")[0])
            return _error(401, problem)
        try:
            reply = read_reply(body)
        except ReplyUnreadable as exc:
            return _error(400, str(exc))
        if reply.automatic:
            # an out-of-office answer is not the department's status; answered 200 so the relay does not retry it
            log.info("automatic email reply ignored", reference=reply.reference)
            return JSONResponse({"outcome": "ignored", "reason": "an automatic reply (out of office) records nothing"})
        if reply.reference is None:
            return _error(
                422,
                "the message answers no work order: reply to the work order's email (keep its In-Reply-To),"
                " or keep the reference [EM-…] in the subject",
            )
        if reply.department_tag is not None:
            department_id = departments.by_tag.get(reply.department_tag)
            if department_id is None:
                return _error(404, f"work order {reply.reference} was not sent to a department on email")
            if departments.inbox_of(department_id) != reply.sender:
                # who sent it is personal data: the department and reference only
                log.warning("email reply refused: not from the department's inbox", department_id=department_id)
                return _error(403, f"work order {reply.reference} takes replies from its department's inbox only")
        else:
            found = departments.with_inbox(reply.sender)
            if not found:
                log.warning("email reply refused: not from any email department's inbox", reference=reply.reference)
                return _error(403, f"work order {reply.reference} takes replies from its department's inbox only")
            if len(found) > 1:
                return _error(
                    422,
                    "several departments share this inbox: reply to the work order's email itself (its In-Reply-To"
                    " says which department it is for)",
                )
            department_id = found[0]
        spec = departments.specs[department_id]
        try:
            answer = read_answer(reply.paragraph, spec)
        except NoStatus as exc:
            words = ", ".join(f"{theirs}{argument}" for _, theirs, _, argument in answer_words(spec))
            return _error(422, f"{exc}: start the reply with one of: {words}")
        received = now()
        update_id = reply.message_id or "reply:" + hashlib.sha256(body).hexdigest()[:32]
        update = ExternalUpdate(
            external_id=reply.reference,
            status=answer.status,
            changed_at=when_sent(reply, received),
            note=answer.note,
            update_id=update_id[:200],
            refers_to=answer.refers_to,
        )
        with structlog.contextvars.bound_contextvars(department_id=department_id, external_id=reply.reference):
            outcome = await record(department_id, update)
            log.info("email reply received", outcome=outcome.value, their_status=answer.status)
        if outcome is Outcome.UNKNOWN_WORK_ORDER:
            return _error(404, f"no work order {reply.reference} of department {department_id!r}")
        if outcome is Outcome.HOLD_FULL:
            return _error(
                503, f"work order {reply.reference} is not recorded yet and no more replies are held for it now"
            )
        if outcome is Outcome.TOO_FAR_AHEAD:
            return _error(400, "the reply's Date is more than a day ahead of civicflow's clock")
        # held: the work order is still being recorded (the reply came first); it is applied once it is
        code = 202 if outcome is Outcome.HELD else 200
        said = {"outcome": outcome.value, "reference": reply.reference, "status": answer.status}
        return JSONResponse(said, status_code=code)

    def key_of(department_id: str) -> bytes | None:
        return departments.link_keys.get(department_id)

    async def answer_link(request: Request) -> Response:
        token = str(request.path_params["token"])
        try:
            answer = read_token(token, key_of, now())
        except ExpiredLink as exc:
            return _page(page(410, str(exc)))
        except BadLink as exc:
            return _page(page(400, f"{str(exc).capitalize()}."))
        what = f"Work order {answer.external_id}: {answer.status}"
        if request.method != "POST":
            return _page(page(200, f"{what}. Press the button to record it.", button=f"Record '{answer.status}'"))
        update = ExternalUpdate(
            external_id=answer.external_id,
            status=answer.status,
            changed_at=now(),
            update_id=answer.update_id(),
        )
        with structlog.contextvars.bound_contextvars(
            department_id=answer.department_id, external_id=answer.external_id
        ):
            outcome = await record(answer.department_id, update)
            log.info("email link answer received", outcome=outcome.value, their_status=answer.status)
        said = {
            Outcome.RECORDED: (200, f"Recorded. {what}. Thank you."),
            Outcome.DUPLICATE: (200, f"{what} was already recorded; nothing changed."),
            Outcome.OUTDATED: (409, f"{what} was not recorded: a later answer on this work order was recorded first."),
            Outcome.UNKNOWN_WORK_ORDER: (404, f"No work order {answer.external_id} is known; nothing was recorded."),
            Outcome.HELD: (202, f"Received. {what} will be recorded in a moment, once the work order is. Thank you."),
            Outcome.HOLD_FULL: (503, f"{what} could not be taken just now; press the button again later."),
            Outcome.TOO_FAR_AHEAD: (400, f"{what} was not recorded: civicflow's clock is wrong; tell the city."),
        }
        status, words = said[outcome]
        return _page(page(status, words))

    async def elsewhere(request: Request) -> Response:  # a link cut short: our page, not a bare 404
        return _page(page(404, "This link is not complete; open the whole link from the work order's email."))

    return [
        Route(EMAIL_REPLIES_PATH, receive_reply, methods=["POST"]),
        Route(LINKS_PATH + "/{token}", answer_link, methods=["GET", "POST"]),
        Route(LINKS_PATH + "/{rest:path}", elsewhere, methods=["GET", "POST"]),
    ]


def _page(shown: Page) -> Response:
    # no caching: a page says what this click did; no referrer: the link is the department's key
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(shown.html, status_code=shown.status, headers=headers)
