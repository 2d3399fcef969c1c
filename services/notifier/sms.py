"""Text messages to residents: how many SMS segments a text takes, and each stage's text in the resident's
language, made to fit in two. Pure: no I/O but templates.

A text goes as GSM-7 (160 characters in one segment, 153 per segment once split; ^ { } \\ [ ~ ] | € take two)
when every character is in the GSM-7 alphabet, else as UCS-2 (70 in one, 67 per segment once split;
a character outside the Basic Multilingual Plane takes two). A character never straddles two segments.
Spanish in UCS-2 leaves 134 characters for two segments, so a text that does not fit is first written with
GSM-7 look-alikes (á -> a, as providers' "smart encoding" does), and only then are the variable parts
shortened: the resolution, then the department, then the service name. The tracking number is never cut.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateNotFound

from civicflow.localtime import zone_named
from civicflow.notes import resident_text
from services.notifier.domain import StageFacts, service_name

MAX_SEGMENTS = 2
LANGUAGES = ("en", "es")
DEFAULT_LANGUAGE = "en"

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")  # each is an escape and a character: two septets

# What a provider's smart encoding writes for characters outside GSM-7 that have a plain look-alike.
_LOOK_ALIKES = str.maketrans(
    {
        "á": "a",
        "í": "i",
        "ó": "o",
        "ú": "u",
        "Á": "A",
        "Í": "I",
        "Ó": "O",
        "Ú": "U",
        "â": "a",
        "ê": "e",
        "î": "i",
        "ô": "o",
        "û": "u",
        "ã": "a",
        "õ": "o",
        "ë": "e",
        "ï": "i",
        "ç": "Ç",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "\u00a0": " ",
    }
)

Encoding = Literal["GSM-7", "UCS-2"]


def encoding_of(text: str) -> Encoding:
    return "GSM-7" if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text) else "UCS-2"


def segments(text: str) -> int:
    """How many SMS segments the text takes (0 for no text)."""
    if encoding_of(text) == "GSM-7":
        units = [2 if ch in GSM7_EXTENDED else 1 for ch in text]
        single, per_part = 160, 153
    else:
        units = [2 if ord(ch) > 0xFFFF else 1 for ch in text]  # UTF-16 code units
        single, per_part = 70, 67
    if not units:
        return 0
    if sum(units) <= single:
        return 1
    count, used = 1, 0
    for unit in units:
        if used + unit > per_part:
            count, used = count + 1, 0
        used += unit
    return count


def look_alike(text: str) -> str:
    return text.translate(_LOOK_ALIKES)


def shortened(value: str, length: int) -> str:
    """value in at most length characters, cut at a word where it can be, with "..." when cut."""
    if len(value) <= length:
        return value
    if length <= 3:
        return ""
    cut = value[: length - 3]
    if " " in cut[len(cut) // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:-") + "..."


class TextDoesNotFit(ValueError):
    pass


def fit(render: Callable[[Mapping[str, str]], str], values: Mapping[str, str], shrinkable: tuple[str, ...]) -> str:
    """The text render makes of values in at most MAX_SEGMENTS: as written, then with GSM-7 look-alikes,
    then with the shrinkable values shortened in turn (each as little as it can be)."""
    text = render(values)
    if segments(text) <= MAX_SEGMENTS:
        return text
    current = dict(values)
    for name in (None, *shrinkable):
        if name is not None:
            whole = current[name]
            low, high = 0, len(whole)  # the longest length of this value that fits, by bisection
            while low < high:
                middle = (low + high + 1) // 2
                trial = look_alike(render({**current, name: shortened(whole, middle)}))
                low, high = (middle, high) if segments(trial) <= MAX_SEGMENTS else (low, middle - 1)
            current[name] = shortened(whole, low)
        text = look_alike(render(current))
        if segments(text) <= MAX_SEGMENTS:
            return text
    raise TextDoesNotFit(f"the text template leaves no room in {MAX_SEGMENTS} SMS segments; shorten its fixed words")


# Day and month names per language, so a text does not depend on the host's locale.
_DAYS = {
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "es": ("lun", "mar", "mié", "jue", "vie", "sáb", "dom"),
}
_MONTHS = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "es": ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"),
}


def short_day(moment: datetime, zone: tzinfo, language: str) -> str:
    """ "Mon 30 Nov 17:00" (or "lun 30 nov 17:00") in the zone, as a text has room for."""
    local = moment.astimezone(zone)
    return f"{_DAYS[language][local.weekday()]} {local.day} {_MONTHS[language][local.month - 1]} {local:%H:%M}"


def language_of(chosen: str | None) -> str:
    return chosen if chosen in LANGUAGES else DEFAULT_LANGUAGE


@dataclass(frozen=True)
class StageText:
    body: str
    language: str


class TextTemplates:
    """The text templates in templates/sms/<language>/<stage>.txt.j2: one line each, the whole text. A city
    edits them as plain files; the variables are tracking_number, service, department, due_on, resolution."""

    def __init__(self, timezone: tzinfo) -> None:
        self._timezone = timezone
        self._env = Environment(
            loader=PackageLoader("services.notifier", "templates"),
            autoescape=False,
            undefined=StrictUndefined,
        )

    def render(self, facts: StageFacts, language: str | None) -> StageText:
        chosen = language_of(language)
        try:
            template = self._env.get_template(f"sms/{chosen}/{facts.stage}.txt.j2")
        except TemplateNotFound:
            chosen = DEFAULT_LANGUAGE
            template = self._env.get_template(f"sms/{chosen}/{facts.stage}.txt.j2")
        zone = zone_named(facts.time_zone, otherwise=self._timezone)
        values = {
            "tracking_number": facts.tracking_number,
            "service": service_name(facts.service_code),
            "department": facts.department or "",
            "due_on": short_day(facts.due_at, zone, chosen) if facts.due_at else "",
            "resolution": resident_text(facts.resolution),
        }

        def render(given: Mapping[str, str]) -> str:
            return " ".join(template.render(**given).split())  # one paragraph: line breaks cost characters

        return StageText(fit(render, values, ("resolution", "department", "service")), chosen)
