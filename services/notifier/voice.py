"""Calls to residents: what a call says at each stage, as TwiML, in the resident's language. Pure: no I/O but
templates.

The words are plain-text templates in templates/voice/<language>/<stage>.txt.j2 (a city edits them as it
edits its texts); each paragraph becomes one <Say>, with a pause between, and every word goes through XML
escaping here, so nothing a department wrote can add a verb to the call. The tracking number is spoken
symbol by symbol ("4 K 7 Q, M 2 D"): a text-to-speech voice reads "4K7Q" as a word. The resolution call
ends with a menu: press 1 to hear it again, press 2 if the problem is not fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Literal
from urllib.parse import urlencode
from uuid import UUID
from xml.sax.saxutils import escape, quoteattr

from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateNotFound

from civicflow.localtime import zone_named
from civicflow.notes import resident_text
from services.notifier.domain import StageFacts, _day, service_name

LANGUAGES = ("en", "es")
DEFAULT_LANGUAGE = "en"
# <Say language>: the voice a provider speaks each language in
SPEECH_LANGUAGE = {"en": "en-US", "es": "es-US"}
GATHER_PATH = "/telephony/voice/gather"

MenuChoice = Literal["repeat", "disputed", "unknown", "goodbye"]

# The menu and the answers to it, per language; short enough to be said at the end of any call.
_WORDS = {
    "en": {
        "menu": "Press 1 to hear this message again. Press 2 if the problem is not fixed.",
        "disputed": "Thank you. We have sent your request back to {department}. You will hear from us again.",
        "unknown": "Sorry, that is not one of the choices.",
        "goodbye": "Thank you for calling 311. Goodbye.",
        "department": "the department",
    },
    "es": {
        "menu": "Marque 1 para escuchar este mensaje otra vez. Marque 2 si el problema no está resuelto.",
        "disputed": "Gracias. Hemos devuelto su solicitud a {department}. Volverá a saber de nosotros.",
        "unknown": "Lo sentimos, esa no es una de las opciones.",
        "goodbye": "Gracias por llamar al 311. Adiós.",
        "department": "el departamento",
    },
}

# Between the two groups of a tracking number: a comma, which a voice says as a short pause.
_SPOKEN_GROUP_BREAK = ", "


def language_of(chosen: str | None) -> str:
    return chosen if chosen in LANGUAGES else DEFAULT_LANGUAGE


def spelt(tracking_number: str) -> str:
    """ "4K7Q-M2D" as "4 K 7 Q, M 2 D": each symbol its own word, so a voice says letters as letters and
    digits one by one ("4 7", not "forty-seven"); each group a phrase."""
    groups = [group for group in tracking_number.upper().replace(" ", "").split("-") if group]
    return _SPOKEN_GROUP_BREAK.join(" ".join(group) for group in groups)


def gather_url(public_url: str, case_id: UUID, stage: str, repeat: int = 0) -> str:
    """Where the provider posts the digit pressed at the menu (it signs this URL with its query)."""
    query = {"case": str(case_id), "stage": stage}
    if repeat:
        query["repeat"] = str(repeat)
    return f"{public_url.rstrip('/')}{GATHER_PATH}?{urlencode(query)}"


@dataclass(frozen=True)
class CallScript:
    """One stage's call: the TwiML to play and the language it speaks."""

    twiml: str
    language: str


def _say(words: str, language: str) -> str:
    return f'<Say language="{SPEECH_LANGUAGE[language]}">{escape(words)}</Say>'


def _document(verbs: list[str]) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?><Response>' + "".join(verbs) + "</Response>"


def _menu(language: str, action: str) -> str:
    return f'<Gather numDigits="1" action={quoteattr(action)}>{_say(_WORDS[language]["menu"], language)}</Gather>'


class CallScripts:
    """Renders a stage's call from templates/voice/<language>/<stage>.txt.j2; the variables are
    tracking_number (already spelt), service, department, due_on, resolution, submitted_on."""

    def __init__(self, timezone: tzinfo, public_url: str) -> None:
        self._timezone = timezone
        self._public_url = public_url
        self._env = Environment(
            loader=PackageLoader("services.notifier", "templates"), autoescape=False, undefined=StrictUndefined
        )

    def paragraphs(self, facts: StageFacts) -> tuple[list[str], str]:
        """What the call says, one entry a <Say>, and the language it says it in."""
        chosen = language_of(facts.language)
        try:
            template = self._env.get_template(f"voice/{chosen}/{facts.stage}.txt.j2")
        except TemplateNotFound:
            chosen = DEFAULT_LANGUAGE
            template = self._env.get_template(f"voice/{chosen}/{facts.stage}.txt.j2")
        zone = zone_named(facts.time_zone, otherwise=self._timezone)
        spoken = template.render(
            tracking_number=spelt(facts.tracking_number),
            service=service_name(facts.service_code),
            submitted_on=_day(facts.submitted_at, zone, language=chosen),
            department=facts.department or "",
            due_on=_day(facts.due_at, zone, with_time=True, language=chosen) if facts.due_at else "",
            resolution=resident_text(facts.resolution),
        )
        paragraphs = [" ".join(block.split()) for block in spoken.split("\n\n")]
        return [p for p in paragraphs if p], chosen

    def render(self, facts: StageFacts) -> CallScript:
        """The stage's call; the resolution's ends with the menu (press 1 again, press 2 not fixed)."""
        paragraphs, language = self.paragraphs(facts)
        verbs: list[str] = []
        for paragraph in paragraphs:
            if verbs:
                verbs.append('<Pause length="1"/>')
            verbs.append(_say(paragraph, language))
        if facts.stage == "resolved":
            verbs.append(_menu(language, gather_url(self._public_url, facts.case_id, facts.stage)))
        verbs.append(_say(_WORDS[language]["goodbye"], language))
        verbs.append("<Hangup/>")
        return CallScript(_document(verbs), language)

    def answer(self, facts: StageFacts, choice: MenuChoice, repeat: int = 0) -> str:
        """The TwiML answering a digit pressed at the resolution's menu."""
        language = language_of(facts.language)
        words = _WORDS[language]
        if choice == "repeat":
            return self.render(facts).twiml
        if choice == "disputed":
            department = facts.department or words["department"]
            return _document([_say(words["disputed"].format(department=department), language), "<Hangup/>"])
        if choice == "unknown":
            action = gather_url(self._public_url, facts.case_id, facts.stage, repeat=repeat + 1)
            verbs = [_say(words["unknown"], language), _menu(language, action)]
            return _document([*verbs, _say(words["goodbye"], language), "<Hangup/>"])
        return _document([_say(words["goodbye"], language), "<Hangup/>"])


def menu_choice(digits: str, repeat: int) -> MenuChoice:
    """What a digit pressed at the menu means: 1 again, 2 not fixed; anything else asks once more, then ends."""
    if digits == "1":
        return "repeat"
    if digits == "2":
        return "disputed"
    return "unknown" if repeat < 1 else "goodbye"
