"""One-click answers in a work-order email: a signed token per status, and the small pages its link opens. Pure.

A token is ``<payload>.<signature>``: payload the base64url of a JSON list [department, work order, status, expiry
(Unix seconds)], signature the first 16 bytes of HMAC-SHA256 with the department's own link key. The token is the
whole authority of a click, so it says which department and work order it is for and is refused after its expiry;
a token signed with another department's key is refused. Opening the link (GET) shows a page with a button and
records nothing, since mail scanners and link previews open every link in an email; only the button's POST to the
same address records the status.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape

LINKS_PATH = "/work-orders/answer"
MAX_TOKEN_CHARS = 600
_SIGNATURE_BYTES = 16


class BadLink(ValueError):
    """The link is not one of ours: malformed, cut short, or not signed by the department's key."""


class ExpiredLink(ValueError):
    """The link was ours, but its time is over."""


@dataclass(frozen=True)
class LinkAnswer:
    department_id: str
    external_id: str
    status: str  # theirs: the word the email offered
    expires_at: int  # Unix seconds

    def update_id(self) -> str:
        """The same for every click of one link, so a second click records nothing new."""
        raw = f"{self.department_id}\0{self.external_id}\0{self.status}\0{self.expires_at}"
        return "link:" + hashlib.sha256(raw.encode()).hexdigest()[:24]


def link_key(signing_secret: str, department_id: str) -> bytes:
    """A department's link key derived from the bridge's signing secret, when the city file gives it none: each
    department's links are signed with a key of its own, and the secret itself signs nothing a person is sent."""
    return hmac.new(
        signing_secret.encode(), b"civicflow email links\0" + department_id.encode(), hashlib.sha256
    ).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest()[:_SIGNATURE_BYTES])


def make_token(key: bytes, answer: LinkAnswer) -> str:
    body = [answer.department_id, answer.external_id, answer.status, answer.expires_at]
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{payload}.{_signature(key, payload)}"


def read_token(token: str, key_of: Callable[[str], bytes | None], now: datetime) -> LinkAnswer:
    """The answer a token carries. BadLink when it is malformed, names a department that has no link key
    (`key_of` gives None) or is not signed by that department's key; ExpiredLink after its expiry."""
    if len(token) > MAX_TOKEN_CHARS:
        raise BadLink(f"the link is longer than {MAX_TOKEN_CHARS} characters")
    payload, dot, signature = token.partition(".")
    letters = (payload + signature).replace("-", "").replace("_", "")
    if not dot or not payload or not signature or not letters.isascii() or not letters.isalnum():
        raise BadLink("the link is not one of ours (malformed); open the whole link from the email")
    try:
        body = json.loads(_unb64(payload))
    except (ValueError, binascii.Error) as exc:
        raise BadLink("the link is not one of ours (malformed); open the whole link from the email") from exc
    if (
        not isinstance(body, list)
        or len(body) != 4
        or not all(isinstance(part, str) and part for part in body[:3])
        or not isinstance(body[3], int)
        or isinstance(body[3], bool)
    ):
        raise BadLink("the link is not one of ours (malformed); open the whole link from the email")
    key = key_of(body[0])
    if key is None or not hmac.compare_digest(signature, _signature(key, payload)):
        raise BadLink("the link is not one of ours (wrong signature)")
    answer = LinkAnswer(body[0], body[1], body[2], body[3])
    if now.timestamp() >= answer.expires_at:
        raise ExpiredLink(
            f"this link expired; reply to the work order's email with {answer.status!r} on the first line instead"
        )
    return answer


def link(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}{LINKS_PATH}/{token}"


@dataclass(frozen=True)
class Page:
    status: int
    html: str


def page(status: int, *paragraphs: str, button: str | None = None) -> Page:
    """A small plain page; the text is escaped. button: a form that POSTs to the page's own address."""
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    if button is not None:
        body += f'<form method="post"><button type="submit">{escape(button)}</button></form>'
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Work order answer</title>'
        f'<meta name="viewport" content="width=device-width"></head><body>{body}</body></html>'
    )
    return Page(status, html)
