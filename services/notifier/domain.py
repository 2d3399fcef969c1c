"""What to tell a resident, and how: stage facts, channel choice, message text. Pure: no I/O but templates."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined

from civicflow.events import (
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    PreferencesChanged,
    RecordedEvent,
    RoutingDecision,
    current_service_code,
)
from civicflow.localtime import zone_named
from civicflow.notes import resident_text
from civicflow.pii import ResidentContact

Stage = Literal["submitted", "routed", "rerouted", "resolved"]

# The event that opens each stage a resident hears about. A stage reached again is told again, named by
# its occurrence (StageFacts.told_as): a second refusal's pass to the call centre or a dispute's reopening
# is 'rerouted.2', the resolution after a dispute 'resolved.2'.
STAGE_OF_EVENT: dict[str, Stage] = {
    CaseSubmitted.event_type: "submitted",
    CaseRouted.event_type: "routed",
    CaseRerouted.event_type: "rerouted",
    CaseResolved.event_type: "resolved",
}

MESSAGE_ID_DOMAIN = "civicflow.local"
SUPPORTED_CHANNELS = frozenset({"email", "sms", "voice"})


# --- which channel ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendEmail:
    """Send this stage's message to the resident's email address."""

    to: str
    channel: str = "email"


@dataclass(frozen=True)
class CannotNotify:
    """The resident should hear, but we cannot tell them; recorded as NotificationFailed."""

    channel: str
    reason: str


@dataclass(frozen=True)
class NothingToSend:
    """The resident left no way to reach them: nothing to send and nothing failed."""

    reason: str


@dataclass(frozen=True)
class SendText:
    """Text this stage's message to the resident's phone (E.164)."""

    to: str
    channel: str = "sms"


@dataclass(frozen=True)
class PlaceCall:
    """Call the resident's phone (E.164) and say this stage's message."""

    to: str
    channel: str = "voice"


Delivery = SendEmail | SendText | PlaceCall | CannotNotify | NothingToSend


def wanted(stage: Stage, updates: str) -> bool:
    """Whether the resident asked to hear about this stage: every stage, or only the outcome."""
    return updates != "outcome" or stage == "resolved"


def choose_delivery(
    sealed: bool, contact: ResidentContact | None, preferred_channel: str | None, call_back: bool = False
) -> Delivery:
    """How to tell the resident about a stage.

    sealed says whether the case was submitted with a contact at all; contact is that contact unsealed,
    or None when the resident has since asked to be forgotten. A text goes to a resident who chose sms,
    or who gave a phone number and no email address; a call to one who chose voice, and to anyone with a
    phone when call_back (the resolution of a service the city calls back about). A channel not built is
    recorded as failed rather than dropped, so the call centre can see who was not told.
    """
    preferred = (preferred_channel or "").strip().lower() or None
    if not sealed:
        return NothingToSend("no contact given")
    if preferred == "none":
        return NothingToSend("the resident asked not to hear back")
    if contact is None:
        return CannotNotify(preferred or "email", "contact forgotten")
    if contact.phone and (preferred == "voice" or call_back):
        return PlaceCall(to=contact.phone)
    if preferred == "voice":
        return CannotNotify("voice", "no phone number given")
    if preferred == "sms":
        return SendText(to=contact.phone) if contact.phone else CannotNotify("sms", "no phone number given")
    if preferred not in (None, "email"):
        return CannotNotify(preferred, "channel not yet supported")
    if contact.email:
        return SendEmail(to=str(contact.email))
    if preferred == "email":
        return CannotNotify("email", "no email address given")
    if contact.phone:
        return SendText(to=contact.phone)
    return NothingToSend("no email address or phone number given")


# --- what happened so far -----------------------------------------------------------------------


@dataclass(frozen=True)
class StageFacts:
    """What a stage's message says about the case. Holds no personal data."""

    case_id: UUID
    stage: Stage
    tracking_number: str
    service_code: str
    submitted_at: datetime
    sealed_contact: str | None
    preferred_channel: str | None
    department: str | None = None
    due_at: datetime | None = None
    time_zone: str | None = None  # the department calendar's, where due_at is a wall-clock time
    resolution: str | None = None
    resolved_at: datetime | None = None
    imported: bool = False  # a past request from the city's old system: its resident is not told again
    language: str = "en"
    updates: str = "all"  # all, or outcome: only the resolution
    occurrence: int = 1  # which time the case reached this stage: a disputed case is resolved again, and told

    @property
    def told_as(self) -> str:
        """The stage as its delivery rows, Message-IDs and NotificationSent name it: 'resolved' the first time,
        'resolved.2' the second, so a later occurrence is told and never taken for the earlier one."""
        return told_as(self.stage, self.occurrence)


def told_as(stage: str, occurrence: int) -> str:
    return stage if occurrence == 1 else f"{stage}.{occurrence}"


class MissingSubmission(LookupError):
    pass


def stage_facts(trigger: RecordedEvent, stream: Sequence[RecordedEvent]) -> StageFacts:
    """The facts for the stage trigger opens, from the trigger and the case's stream up to it."""
    stage = STAGE_OF_EVENT[trigger.type]
    earlier = [e for e in stream if e.version < trigger.version]
    submitted = trigger.data if isinstance(trigger.data, CaseSubmitted) else None
    routed = trigger.data if isinstance(trigger.data, RoutingDecision) else None
    for recorded in earlier:
        if submitted is None and isinstance(recorded.data, CaseSubmitted):
            submitted = recorded.data
        if isinstance(trigger.data, CaseResolved) and isinstance(recorded.data, RoutingDecision):
            routed = recorded.data  # the latest routing (or rerouting) before the resolution
    if submitted is None:
        raise MissingSubmission(f"case {trigger.case_id} has no CaseSubmitted before version {trigger.version}")
    resolved = trigger.data if isinstance(trigger.data, CaseResolved) else None
    channel, language, updates = submitted.preferred_channel, submitted.language, submitted.updates
    for recorded in earlier:  # the resident's later changes of mind, in order
        if isinstance(recorded.data, PreferencesChanged):
            channel = recorded.data.preferred_channel or channel
            language = recorded.data.language or language
            updates = recorded.data.updates or updates
    return StageFacts(
        case_id=trigger.case_id,
        stage=stage,
        tracking_number=submitted.tracking_number,
        service_code=current_service_code([submitted, *(e.data for e in earlier)]) or submitted.service_code,
        submitted_at=submitted.submitted_at,
        sealed_contact=submitted.sealed_contact,
        preferred_channel=channel,
        department=routed.department_name if routed else None,
        due_at=routed.due_at if routed else None,
        time_zone=routed.time_zone if routed else None,
        resolution=resolved.resolution if resolved else None,
        resolved_at=resolved.resolved_at if resolved else None,
        imported=submitted.imported is not None,
        language=language,
        updates=updates,
        occurrence=1 + sum(e.type == trigger.type for e in earlier),
    )


# --- the message --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    body: str


class MessageTemplates:
    """The plain-text templates in templates/<stage>.txt.j2 (English) and templates/<language>/<stage>.txt.j2
    (Spanish: es); each starts with a 'Subject:' line. A language without templates gets English."""

    def __init__(self, timezone: ZoneInfo, tracking_url: str = "") -> None:
        self._timezone = timezone
        self._tracking_url = tracking_url
        # Plain text (sent as text/plain), so no HTML escaping: what a department wrote is made plain
        # text by resident_text instead. StrictUndefined turns a misspelt variable into an error.
        self._env = Environment(
            loader=PackageLoader("services.notifier", "templates"),
            autoescape=False,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, facts: StageFacts) -> RenderedMessage:
        language = facts.language if facts.language in _DAY_NAMES and facts.language != "en" else "en"
        name = f"{facts.stage}.txt.j2" if language == "en" else f"{language}/{facts.stage}.txt.j2"
        template = self._env.get_template(name)
        # Dates as the department that set the due date reads them; the city's zone before routing.
        zone = zone_named(facts.time_zone, otherwise=self._timezone)
        text = template.render(
            tracking_number=facts.tracking_number,
            service=service_name(facts.service_code),
            submitted_on=_day(facts.submitted_at, zone, language=language),
            department=facts.department,
            due_on=_day(facts.due_at, zone, with_time=True, language=language) if facts.due_at else None,
            # written by a department: plain text without links, whenever it was recorded (civicflow.notes)
            resolution=resident_text(facts.resolution),
            resolved_on=_day(facts.resolved_at, zone, language=language) if facts.resolved_at else None,
            tracking_url=tracking_link(self._tracking_url, facts.tracking_number),
        )
        head, _, body = text.partition("\n\n")
        if not head.startswith("Subject:") or "\n" in head:
            raise ValueError(f"template {facts.stage}.txt.j2 must start with one 'Subject:' line and a blank line")
        return RenderedMessage(subject=head.removeprefix("Subject:").strip(), body=_wrap(body))


# Day and month names per language, so a message does not depend on the host's locale.
_DAY_NAMES = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
}
_MONTH_NAMES = {
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    "es": (
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ),
}


def _day(moment: datetime, zone: tzinfo, with_time: bool = False, language: str = "en") -> str:
    """ "Monday 30 November 2026" or "lunes 30 de noviembre de 2026", with ", 17:00 CST" when with_time."""
    local = moment.astimezone(zone)
    weekday, month = _DAY_NAMES[language][local.weekday()], _MONTH_NAMES[language][local.month - 1]
    day = (
        f"{weekday} {local.day} de {month} de {local.year}"
        if language == "es"
        else f"{weekday} {local.day} {month} {local.year}"
    )
    return f"{day}, {local:%H:%M %Z}" if with_time else day


def _wrap(body: str, width: int = 76) -> str:
    """Lines short enough to send as readable 7-bit text rather than quoted-printable; URLs stay whole."""
    lines = [
        textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) if len(line) > width else line
        for line in body.splitlines()
    ]
    return "\n".join(lines) + "\n"


def service_name(service_code: str) -> str:
    """A readable name for a service code ("MISSED_PICKUP" -> "Missed pickup")."""
    return service_code.replace("_", " ").strip().capitalize() or service_code


def tracking_link(public_tracking_url: str, tracking_number: str) -> str:
    """The public page for a request: {tracking_number} in the URL is filled in, else it is appended."""
    if not public_tracking_url:
        return ""
    if "{tracking_number}" in public_tracking_url:
        return public_tracking_url.replace("{tracking_number}", tracking_number)
    return f"{public_tracking_url.rstrip('/')}/{tracking_number}"


def message_id_for(case_id: UUID, told: str) -> str:
    """The same Message-ID for every attempt at one stage's email, so a resend is the same message; told is the
    stage as StageFacts.told_as names it, so each occurrence ('resolved.2') is a message of its own."""
    return f"<{case_id}.{told}@{MESSAGE_ID_DOMAIN}>"


def compose_email(
    rendered: RenderedMessage, to: str, mail_from: str, message_id: str, sent_at: datetime
) -> EmailMessage:
    """The email; the resident's address appears in the To header and nowhere else."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = rendered.subject
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(sent_at)
    # RFC 3834: automatic mail, so out-of-office replies are not sent back to us
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.body)
    return message
