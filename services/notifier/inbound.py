"""What a resident's text to the city's number asks for, and what we answer. Pure: no I/O.

STOP, STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT (any case, trimmed, a trailing full stop or "!" allowed) stop
every text and call to that number on every case until START or UNSTOP; HELP says what the service is;
STATUS, or a tracking number, answers with a case's status; "1" to "5" answers the newest case's satisfaction
survey while it waits for an answer (survey.py); anything else is the resident's reply to the
department that has their newest case. Answers are in the language of the resident's newest case. ACK, or
ACK and an alert's code, from a department's on-call number takes a staff alert (alerts.py); from any other
number it is a reply like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo

from civicflow import tracking
from civicflow.events import (
    CaseNeedsTriage,
    CaseResolved,
    CaseSubmitted,
    RecordedEvent,
    RoutingDecision,
)
from civicflow.localtime import zone_named
from civicflow.notes import resident_text
from services.notifier.sms import fit, language_of, short_day
from services.notifier.survey import score_in_reply

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO", "AYUDA"})
STATUS_WORDS = frozenset({"STATUS", "ESTADO"})
MAX_REPLY_CHARS = 1600  # the longest text a provider takes
_MAX_TRACKING = 32  # longest text a person might type for a tracking number (spaces and dashes included)


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Status:
    """The status of the number's newest case, or of the one with this tracking number."""

    tracking_number: str | None = None


@dataclass(frozen=True)
class Reply:
    """Words for the department, as plain text on one line."""

    text: str


@dataclass(frozen=True)
class SurveyAnswer:
    """A score from 1 to 5 for the newest case's satisfaction survey (only while one is sent and unanswered)."""

    score: int


@dataclass(frozen=True)
class Ack:
    """An on-call contact taking a staff alert: its code, or None for the newest alert to the number. text
    is the message as a reply, for when the number is no one's on call."""

    code: int | None
    text: str


Intent = Stop | Start | Help | Status | Ack | Reply | SurveyAnswer
_MOST_CODE_DIGITS = 12


def plain_reply(body: str) -> str:
    """The text as the case may keep it: control and invisible characters as spaces, one line, bounded."""
    printable = "".join(ch if ch.isprintable() else " " for ch in body[: MAX_REPLY_CHARS * 4])
    return " ".join(printable.split())[:MAX_REPLY_CHARS]


def read_inbound(body: str, survey_pending: bool = False) -> Intent:
    """survey_pending: the number's newest case has a survey sent and unanswered, so "1" to "5" answers it;
    otherwise a digit is a reply like any other."""
    text = plain_reply(body)
    word = text.rstrip(".!").strip().upper()
    if survey_pending and (score := score_in_reply(text)) is not None:
        return SurveyAnswer(score)
    if word in STOP_WORDS:
        return Stop()
    if word in START_WORDS:
        return Start()
    if word in HELP_WORDS:
        return Help()
    if word in STATUS_WORDS:
        return Status()
    ack = word.replace("#", " ").split()
    if ack[:1] == ["ACK"] and len(ack) <= 2:
        if len(ack) == 1:
            return Ack(None, text)
        if ack[1].isascii() and ack[1].isdigit() and len(ack[1]) <= _MOST_CODE_DIGITS:
            return Ack(int(ack[1]), text)
    if 0 < len(word) <= _MAX_TRACKING:
        try:
            return Status(tracking.parse(word))
        except tracking.InvalidTrackingNumber:
            pass
    return Reply(text)


ANSWERS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "stopped": "311: you will get no more texts or calls from us. Reply START to get them again.",
        "started": "311: you will get texts about your requests again. Reply STOP to end them.",
        "help": "311 updates on your city service requests. Reply STATUS for your latest request or send its"
        " tracking number. Reply STOP to end texts. Call 311 for anything else.",
        "no_case": "311: we have no request for this phone number. Call 311 or use the city's website.",
        "not_yours": "311: we have no request {tracking_number} for this phone number.",
        "replied": "311 {tracking_number}: thank you, we passed your message to the team handling it.",
        "submitted": "311 {tracking_number}: received, not yet with a department.",
        "triage": "311 {tracking_number}: our call centre is finding the right department.",
        "routed": "311 {tracking_number}: with {department}, expected by {due_on}.",
        "routed_undated": "311 {tracking_number}: with {department}, no date set yet.",
        "resolved": "311 {tracking_number}: resolved. {resolution}",
    },
    "es": {
        "stopped": "311: no recibirá más mensajes ni llamadas. Responda START para volver a recibirlos.",
        "started": "311: volverá a recibir mensajes sobre sus solicitudes. Responda STOP para dejar de recibirlos.",
        "help": "311: avisos sobre sus solicitudes a la ciudad. Responda STATUS o el número de seguimiento para"
        " saber cómo va. STOP para no recibir más. Para otra cosa, llame al 311.",
        "no_case": "311: no tenemos solicitudes de este teléfono. Llame al 311 o use la web de la ciudad.",
        "not_yours": "311: no tenemos la solicitud {tracking_number} de este teléfono.",
        "replied": "311 {tracking_number}: gracias, pasamos su mensaje al equipo que la atiende.",
        "submitted": "311 {tracking_number}: recibida, aún sin departamento.",
        "triage": "311 {tracking_number}: nuestro centro de llamadas busca el departamento adecuado.",
        "routed": "311 {tracking_number}: con {department}, fecha prevista {due_on}.",
        "routed_undated": "311 {tracking_number}: con {department}, aún sin fecha prevista.",
        "resolved": "311 {tracking_number}: resuelta. {resolution}",
    },
}


def answer(kind: str, language: str | None, **values: str) -> str:
    """An answer in at most two segments; the department and resolution are shortened to fit."""
    template = ANSWERS[language_of(language)][kind]
    shrinkable = tuple(name for name in ("resolution", "department") if name in values)
    return fit(lambda given: template.format(**given), values, shrinkable)


def case_language(stream: Sequence[RecordedEvent]) -> str:
    submitted = next((e.data for e in stream if isinstance(e.data, CaseSubmitted)), None)
    return language_of(submitted.language if submitted else None)


def case_status(stream: Sequence[RecordedEvent], city_zone: tzinfo) -> str:
    """Where the case stands, as a text in its resident's language."""
    language = case_language(stream)
    submitted = next(e.data for e in stream if isinstance(e.data, CaseSubmitted))
    number = submitted.tracking_number
    latest = None
    for recorded in stream:
        if isinstance(recorded.data, RoutingDecision | CaseNeedsTriage | CaseResolved):
            latest = recorded.data
    if isinstance(latest, CaseResolved):
        return answer("resolved", language, tracking_number=number, resolution=resident_text(latest.resolution))
    if isinstance(latest, CaseNeedsTriage):
        return answer("triage", language, tracking_number=number)
    if isinstance(latest, RoutingDecision):
        if latest.due_at is None:
            return answer("routed_undated", language, tracking_number=number, department=latest.department_name)
        due = short_day(latest.due_at, zone_named(latest.time_zone, otherwise=city_zone), language)
        return answer("routed", language, tracking_number=number, department=latest.department_name, due_on=due)
    return answer("submitted", language, tracking_number=number)
