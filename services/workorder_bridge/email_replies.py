"""Reading a department's reply to a work-order email: which work order it answers, who sent it, and what the first
paragraph says. Pure: the standard library's `email` package and nothing else.

A reply is a person's email, written in whatever client the department uses: top-posted above the quoted work
order, or below it; plain text, HTML only, or both; in any charset, sometimes a wrong one. What we need is small:
the reference (In-Reply-To/References name our Message-ID, else the subject keeps "[EM-…]"), the sender, and the
first paragraph the person wrote above or below the quoted history (quoted lines, "On … wrote:", Outlook's
"Original Message" block and the signature are not theirs). Anything unreadable is ReplyUnreadable with a message
that says what to send instead; nothing here raises anything else, whatever the bytes (tests/unit prove it with
hypothesis).
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser

from services.workorder_bridge.mailer import MESSAGE_ID_DOMAIN

REFERENCE = re.compile(r"EM-[A-Z2-7]{10}")
_OUR_MESSAGE_ID = re.compile(
    r"<(EM-[A-Z2-7]{10})(?:\.[A-Za-z0-9._-]{1,80})?@([A-Za-z0-9_-]{1,40})\." + re.escape(MESSAGE_ID_DOMAIN) + ">"
)
_SUBJECT_REFERENCE = re.compile(r"\[\s*(EM-[A-Z2-7]{10})\s*\]", re.IGNORECASE)
MAX_TEXT_CHARS = 100_000  # of the chosen text part: the answer is at its top, the rest is history
MAX_HEADER_CHARS = 4_000
_ATTRIBUTION = re.compile(r"^\s*(on\s.{0,300}\bwrote:|le\s.{0,300}\ba écrit\s?:|el\s.{0,300}\bescribió:)\s*$", re.I)
_HISTORY = re.compile(r"^\s*(-{2,}\s*(original message|forwarded message)\s*-{2,}|_{10,})\s*$", re.I)
_HEADER_BLOCK = re.compile(r"^\s*(from|sent|de|envoyé|enviado)\s*:\s", re.I)


class ReplyUnreadable(ValueError):
    """The message cannot be read as a reply to a work order; the text says what was wrong."""


@dataclass(frozen=True)
class Reply:
    message_id: str | None
    sender: str  # the From address, lower-cased; personal data of the department's staff: never logged
    reference: str | None  # EM-… from In-Reply-To/References, else the subject
    department_tag: str | None  # from our Message-ID in In-Reply-To/References; None when only the subject says
    paragraph: list[str]  # the first paragraph the sender wrote, line by line (empty: they wrote nothing)
    sent_at: datetime | None  # the Date header, when it reads as an aware time
    automatic: bool = False  # an out-of-office or other automatic answer (RFC 3834 and what responders send)


def read_reply(raw: bytes) -> Reply:
    """The parts of a reply we act on; ReplyUnreadable when it is not an email we can read."""
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as exc:  # the parser is meant to be lenient; a bug in it must not become a 500
        raise ReplyUnreadable(f"the body is not an e-mail message ({type(exc).__name__})") from None
    if not isinstance(parsed, EmailMessage) or not parsed.keys():
        raise ReplyUnreadable("the body is not an e-mail message: send the raw message (RFC 822) as it arrived")
    sender = _sender(parsed)
    reference, tag = _reference(parsed)
    return Reply(
        message_id=_header(parsed, "Message-ID"),
        sender=sender,
        reference=reference,
        department_tag=tag,
        paragraph=first_paragraph(_text(parsed)),
        sent_at=_date(parsed),
        automatic=_automatic(parsed),
    )


def _automatic(message: Message) -> bool:
    """Whether an autoresponder sent it: RFC 3834's Auto-Submitted (anything but 'no'), the X-Autoreply family,
    and Precedence auto_reply, bulk or junk."""
    submitted = (_header(message, "Auto-Submitted") or "no").strip().lower()
    precedence = (_header(message, "Precedence") or "").strip().lower()
    flagged = any(_header(message, name) for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"))
    return submitted != "no" or precedence in ("auto_reply", "bulk", "junk") or flagged


def _header(message: Message, name: str) -> str | None:
    """A header as text; None when it is absent or does not parse (the header registry raises on some garbage)."""
    try:
        value = message.get(name)
        text = None if value is None else str(value)
    except Exception:
        return None
    if text is None:
        return None
    text = " ".join(text.split())[:MAX_HEADER_CHARS]
    return text or None


def _sender(message: Message) -> str:
    values: list[str] = []
    try:
        values = message.get_all("From") or []
        addresses = [a for _, a in getaddresses([str(v) for v in values]) if a]
    except Exception:
        addresses = []
    if len(values) != 1 or len(addresses) != 1 or "@" not in addresses[0]:
        raise ReplyUnreadable("the message must have one From header with one address (the department's inbox)")
    return addresses[0].strip().lower()


def _reference(message: Message) -> tuple[str | None, str | None]:
    for name in ("In-Reply-To", "References"):
        found = _OUR_MESSAGE_ID.search(_header(message, name) or "")
        if found:
            return found.group(1), found.group(2)
    subject = _SUBJECT_REFERENCE.search(_header(message, "Subject") or "")
    return (subject.group(1).upper(), None) if subject else (None, None)


def _date(message: Message) -> datetime | None:
    value = _header(message, "Date")
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else None


def _text(message: EmailMessage) -> str:
    """The reply's words: its text/plain part, else its text/html part as text; '' when it has neither."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
    except Exception:
        part = None
    if part is None:
        return ""
    content = _decoded(part)
    if part.get_content_subtype() == "html":
        return html_text(content)
    return content


def _decoded(part: Message) -> str:
    """A text part's content; an unknown or lying charset falls back to UTF-8 with replacements."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        return ""
    payload = payload[: MAX_TEXT_CHARS * 4]
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
        text = payload.decode(charset, errors="replace")
    except (LookupError, ValueError):
        text = payload.decode("utf-8", errors="replace")
    return text[:MAX_TEXT_CHARS]


def first_paragraph(text: str) -> list[str]:
    """The first paragraph the sender wrote: its lines, without the quoted history, the attribution line (also
    when a mail client wrapped it onto two), an Outlook header block or the signature, whether they wrote above
    the quote or below it."""
    lines = [line.strip().replace("\u00a0", " ") for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    paragraph: list[str] = []
    skip = 0
    for n, bare in enumerate(lines):
        if skip:
            skip -= 1
            continue
        quoted = bare.startswith(">") or bare.startswith("|")
        if bare == "--" or _HISTORY.match(bare) or _HEADER_BLOCK.match(bare):
            break  # the signature or the history: nothing the sender wrote for us comes after it
        wrapped = n + 1 < len(lines) and bool(_ATTRIBUTION.match(f"{bare} {lines[n + 1]}"))
        if _ATTRIBUTION.match(bare) or wrapped:
            if paragraph:
                break
            skip = 1 if wrapped else 0
            continue
        if quoted or not bare:
            if paragraph:
                break
            continue
        paragraph.append(bare)
    return paragraph


class _HtmlText(HTMLParser):
    """Text of an HTML part with block elements as line breaks; quoted history (blockquote, and the divs Gmail,
    Outlook and Thunderbird put it in) and scripts left out."""

    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"})
    _SKIPPED = frozenset({"blockquote", "script", "style", "head", "title"})
    _HISTORY_MARKS = ("gmail_quote", "moz-cite-prefix", "divrplyfwdmsg", "appendonsend", "yahoo_quoted")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping: list[str] = []
        self.history = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.history:
            return
        marks = " ".join(v or "" for k, v in attrs if k in ("class", "id")).lower()
        if any(mark in marks for mark in self._HISTORY_MARKS):
            self.history = True
            return
        if tag in self._SKIPPED:
            self._skipping.append(tag)
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._skipping and self._skipping[-1] == tag:
            self._skipping.pop()
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping and not self.history:
            self.parts.append(" ".join(data.split("\n")))


def html_text(html: str) -> str:
    parser = _HtmlText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; keep what was read if it still gives up
        pass
    return "".join(parser.parts)


def when_sent(reply: Reply, received_at: datetime) -> datetime:
    """When the status changed: the reply's Date, unless it is missing, unreadable or later than we received it
    (a clock ahead); a reply cannot have been written after it arrived."""
    if reply.sent_at is None or reply.sent_at > received_at or reply.sent_at < received_at - timedelta(days=3650):
        return received_at
    return reply.sent_at
