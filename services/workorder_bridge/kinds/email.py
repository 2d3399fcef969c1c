"""The `email` kind: for a department with no system of its own, a work order is an email to its inbox, and the
department answers by replying with a status word on the first line, or by a signed one-click link per status.

- The reference ("EM-" and 10 letters and digits) and the Message-ID are derived from our key, so opening the same
  work order again (a retry, a crash before our commit) sends the same message: mail clients show one, and the
  development SMTP sink files one. The Message-ID also names the department, so a reply's In-Reply-To says whose
  inbox it must come from (services/workorder_bridge/email_http.py).
- The email carries the 311 tracking number, the service, the catalogue's summary and the due date; never the
  resident's words, name, phone, email or address (the summary is built from the catalogue: domain.py).
- Cancelling sends a cancellation notice that references the work order, keyed by the cancellation's cause: for
  a department that works from its inbox, that is what cancelling is.
- Updates are pushed (replies and link clicks reach the bridge's HTTP endpoint), so updates_since finds none.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from civicflow.department_systems import ConnectorSpec
from civicflow.notes import resident_text
from services.workorder_bridge.connector import (
    CannotRead,
    ConnectorContext,
    ConnectorError,
    ExternalUpdate,
    Health,
    OpenedWorkOrder,
    UpdatesPage,
)
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.email_links import LinkAnswer, link, link_key, make_token
from services.workorder_bridge.email_replies import REFERENCE
from services.workorder_bridge.mailer import MESSAGE_ID_DOMAIN, Mailer, department_tag, mailer_of

KIND = "email"
MAX_STATUS_CHARS = 64
MAX_NOTE_CHARS = 2000

# The answers a work-order email lists, in our words, with what each means to the department and the argument it
# takes; the department's own word for each is its forward mapping (civicflow/department_systems.py).
ANSWERS: tuple[tuple[str, str, str], ...] = (
    ("resolved", "the work is done; 311 tells the resident and closes the case", ""),
    ("in_progress", "a crew is on it", ""),
    ("action_scheduled", "the work is scheduled", ""),
    ("not_our_responsibility", "not this department's; 311 places the case elsewhere", ""),
    ("duplicate", "the same problem as another 311 case", " <tracking number>"),
    ("internal_referral", "passed to another department", " <department>"),
    ("reopened", "the job is open again", ""),
)
LINKED = ("resolved", "in_progress", "action_scheduled", "not_our_responsibility")
_TAKES_ARGUMENT = frozenset({"duplicate", "internal_referral"})
_KEYWORD_EDGES = ":;,.!?-\u2013\u2014()[]\"'"  # and the en and em dashes


def reference_for(idempotency_key: str) -> str:
    """The work order's reference, from our key: the same key is always the same reference."""
    digest = hashlib.sha256(b"civicflow email work order\0" + idempotency_key.encode()).digest()
    return "EM-" + base64.b32encode(digest).decode()[:10]


def work_order_message_id(reference: str, department_id: str) -> str:
    return f"<{reference}@{department_tag(department_id)}.{MESSAGE_ID_DOMAIN}>"


def cancellation_message_id(reference: str, department_id: str, idempotency_key: str) -> str:
    cause = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
    return f"<{reference}.cancel-{cause}@{department_tag(department_id)}.{MESSAGE_ID_DOMAIN}>"


def answer_words(spec: ConnectorSpec) -> list[tuple[str, str, str, str]]:
    """(ours, their word, what it means, argument) for each answer the department's mappings read back as ours."""
    found = []
    for ours, meaning, argument in ANSWERS:
        theirs = spec.theirs(ours)
        if spec.ours(theirs) == ours:
            found.append((ours, theirs, meaning, argument))
    return found


@dataclass(frozen=True)
class Answer:
    """What a reply's first paragraph says, in the department's words."""

    status: str
    refers_to: str | None
    note: str | None


class NoStatus(ValueError):
    """The first paragraph names no status."""


def read_answer(paragraph: Sequence[str], spec: ConnectorSpec) -> Answer:
    """The status word on the first line (the longest run of up to four words the department's mappings know,
    else the first word, which arrives as their own unmapped word), the argument of duplicate and referral, and
    the rest of the paragraph as the note, plain text."""
    if not paragraph:
        raise NoStatus("the reply's first line is empty")
    words = paragraph[0].split()
    status: str | None = None
    used = 0
    for count in range(min(4, len(words)), 0, -1):
        candidate = " ".join(words[:count]).strip(_KEYWORD_EDGES + " ")
        if candidate and spec.ours(candidate) is not None:
            status, used = candidate, count
            break
    if status is None:
        status, used = words[0].strip(_KEYWORD_EDGES), 1
    if not status or not any(c.isalnum() for c in status) or len(status) > MAX_STATUS_CHARS:
        raise NoStatus("the reply's first line does not start with a status word")
    rest = words[used:]
    refers_to = None
    if spec.ours(status) in _TAKES_ARGUMENT:
        if rest and rest[0].lower() in ("to", "of", "with"):
            rest = rest[1:]
        if rest:
            refers_to = rest[0].strip(_KEYWORD_EDGES)[:100] or None
            rest = rest[1:]
    text = " ".join([*rest, *paragraph[1:]]).lstrip(_KEYWORD_EDGES + " ")
    note = resident_text(text[:MAX_NOTE_CHARS]) or None
    return Answer(status=status, refers_to=refers_to, note=note)


def _city_facts(city_file: Path | None, department_id: str) -> tuple[str, ZoneInfo | None]:
    """The department's name and the city's time zone, for the email's words; the id and UTC when unknown."""
    if city_file is None:
        return department_id, None
    try:
        raw: Any = yaml.safe_load(Path(city_file).read_text())
        departments = raw.get("departments") or {}
        name = str((departments.get(department_id) or {}).get("name") or department_id)
        zone = ZoneInfo(str(raw["timezone"])) if raw.get("timezone") else None
    except (OSError, ValueError, AttributeError, TypeError, KeyError, yaml.YAMLError, ZoneInfoNotFoundError):
        return department_id, None
    return name, zone


class EmailConnector:
    """One department's work orders by email (see the module's docstring)."""

    kind = KIND

    def __init__(
        self,
        department_id: str,
        spec: ConnectorSpec,
        mailer: Mailer,
        *,
        link_key: bytes,
        public_url: str,
        link_days: float = 30.0,
        department_name: str | None = None,
        zone: ZoneInfo | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if spec.inbox is None:
            raise ValueError(f"{department_id}: an email connector needs inbox")
        self.department_id = department_id
        self.spec = spec
        self._inbox = spec.inbox
        self._mailer = mailer
        self._link_key = link_key
        self._public_url = public_url
        self._link_days = link_days
        self._name = department_name or department_id
        self._zone = zone
        self._now = now

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder:
        reference = reference_for(idempotency_key)
        subject, body = self.work_order_text(reference, request)
        await self._mailer.tell(self._inbox, subject, body, work_order_message_id(reference, self.department_id))
        return OpenedWorkOrder(external_id=reference, status="open")

    def work_order_text(self, reference: str, request: WorkOrderRequest) -> tuple[str, str]:
        service = self.spec.their_service(request.service_code)
        due = self._when(request.due_at) if request.due_at else "no due date"
        subject = f"[{reference}] Work order: {service}, 311 case {request.tracking_number}, due {due}"
        lines = [
            f"Work order {reference} for {self._name}",
            "",
            f"311 case:  {request.tracking_number}",
            f"Service:   {service}",
            f"Summary:   {request.summary}",
            f"Due:       {due}",
            "",
            "To answer, reply to this email with one of these words on the first line,",
            'and a short note after it if you like (for example "done: filled the pothole");',
            "keep the reference in the subject:",
            "",
        ]
        for _, theirs, meaning, argument in answer_words(self.spec):
            lines.append(f"  {theirs}{argument}  - {meaning}")
        linked = [(theirs, ours) for ours, theirs, _, _ in answer_words(self.spec) if ours in LINKED]
        if linked:
            lines += ["", "Or click one of these links (each asks you to confirm first):", ""]
            expires = int((self._now() + timedelta(days=self._link_days)).timestamp())
            for theirs, _ in linked:
                token = make_token(self._link_key, LinkAnswer(self.department_id, reference, theirs, expires))
                lines.append(f"  {theirs}: {link(self._public_url, token)}")
        lines += ["", "This message was sent by the city's 311 system."]
        return subject, "\n".join(lines) + "\n"

    def _when(self, at: datetime) -> str:
        if self._zone is None:
            return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return at.astimezone(self._zone).strftime("%Y-%m-%d %H:%M %Z")

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None:
        if not REFERENCE.fullmatch(external_id):
            raise ConnectorError(f"{self.department_id}: {external_id!r} is not an email work order's reference")
        subject = f"[{external_id}] Cancelled: work order {external_id} - no further action needed"
        body = (
            f"Work order {external_id} for {self._name} is cancelled: {resident_text(reason) or 'no reason given'}.\n"
            '\nPlease do no further work on it. If the work is already done, reply with "done" on the first line.\n'
        )
        message = self._mailer.compose(
            self._inbox, subject, body, cancellation_message_id(external_id, self.department_id, idempotency_key)
        )
        original = work_order_message_id(external_id, self.department_id)
        message["In-Reply-To"] = original
        message["References"] = original
        await self._mailer.send(message)

    async def updates_since(self, cursor: str | None) -> UpdatesPage:
        return UpdatesPage(updates=[], cursor=cursor)  # replies and link clicks are pushed to email_http.py

    async def read_work_order(self, external_id: str) -> ExternalUpdate | None:
        """An inbox cannot be asked how a job stands: what the department has not replied, the bridge cannot know."""
        raise CannotRead(f"{self.department_id}: an email department's work orders cannot be read back")

    async def health(self) -> Health:
        problem = await self._mailer.answers()
        if problem is not None:
            return Health(up=False, detail=problem)
        return Health(up=True, detail="the mail server answers (EHLO, NOOP)")

    async def aclose(self) -> None:
        return None


def department_link_key(spec: ConnectorSpec, department_id: str, signing_secret: str, city_dir: Path | None) -> bytes:
    """The key a department's links are signed with: its own credential when the city file gives one, else one
    derived from the bridge's signing secret for this department."""
    if spec.credentials is not None:
        return spec.credentials.resolve(city_dir).encode()
    return link_key(signing_secret, department_id)


def build(context: ConnectorContext) -> EmailConnector:
    settings = context.settings
    name, zone = _city_facts(getattr(settings, "city_file", None), context.department_id)
    return EmailConnector(
        context.department_id,
        context.spec,
        mailer_of(settings),
        link_key=department_link_key(context.spec, context.department_id, settings.signing_secret(), context.city_dir),
        public_url=context.public_url,
        link_days=settings.bridge_email_link_days,
        department_name=name,
        zone=zone,
    )
