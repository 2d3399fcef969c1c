"""The satisfaction survey after resolution: when it is due, the signed link token, the question by text and by
email, the answer read from a text or a link. Pure: no I/O but templates.

A link token is ``<ref>.<signature>``: ref is 16 random bytes (base64url) kept on the survey's row and
nowhere else, signature the first 16 bytes of HMAC-SHA256(key, ref). It names no case and no contact; a
token not signed by our key is refused before the database is asked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from jinja2 import Environment, PackageLoader, StrictUndefined

from services.notifier.domain import RenderedMessage, service_name
from services.notifier.sms import language_of

SCORES = (1, 2, 3, 4, 5)
MAX_TOKEN_CHARS = 64  # a real token is 22 + 1 + 22 characters
SURVEY_PATH = "/survey"
_REF_BYTES = 16
_SIGNATURE_BYTES = 16

QUESTION: Mapping[str, str] = {
    "en": "311: How did we do on {tracking_number}? Reply 1 (poor) to 5 (great).",
    "es": "311: ¿Cómo lo hicimos con {tracking_number}? Responda de 1 (mal) a 5 (excelente).",
}
THANKS_BY_TEXT: Mapping[str, str] = {
    "en": "311 {tracking_number}: thank you for your answer.",
    "es": "311 {tracking_number}: gracias por su respuesta.",
}
LABELS: Mapping[str, Mapping[int, str]] = {
    "en": {1: "(poor)", 2: "", 3: "", 4: "", 5: "(great)"},
    "es": {1: "(mal)", 2: "", 3: "", 4: "", 5: "(excelente)"},
}


class BadToken(ValueError):
    pass


class BadScore(ValueError):
    pass


def survey_delays(
    city_delay: Callable[[str], timedelta | None], override_seconds: float | None
) -> Callable[[str], timedelta | None]:
    """The delay per service code: the city file's, or override_seconds for every service that has a survey
    (demos and end-to-end tests, which cannot wait hours)."""
    if override_seconds is None:
        return city_delay
    override = timedelta(seconds=override_seconds)
    return lambda service_code: override if city_delay(service_code) is not None else None


def survey_due(resolved_at: datetime, delay: timedelta) -> datetime:
    """When a resolved case's survey goes: the delay after the moment the department resolved it."""
    if resolved_at.tzinfo is None:
        raise ValueError("resolved_at must carry its time zone")
    return resolved_at + delay


class SurveyTokens:
    """Issues and checks the unguessable references in survey links."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the survey link key must be at least 16 bytes")
        self._key = hashlib.sha256(b"civicflow survey links\0" + key).digest()  # not the number digests' key

    def new_ref(self) -> str:
        return _b64(secrets.token_bytes(_REF_BYTES))

    def token(self, ref: str) -> str:
        return f"{ref}.{self._signature(ref)}"

    def ref_of(self, token: str) -> str:
        """The ref a token carries; BadToken when it is malformed or not signed by our key."""
        if len(token) > MAX_TOKEN_CHARS:
            raise BadToken(f"the survey link is longer than {MAX_TOKEN_CHARS} characters")
        ref, dot, signature = token.partition(".")
        letters = (ref + signature).replace("-", "").replace("_", "")
        if not dot or not ref or not signature or not letters.isascii() or not letters.isalnum():
            raise BadToken("the survey link is not one of ours (malformed)")
        if not hmac.compare_digest(signature, self._signature(ref)):
            raise BadToken("the survey link is not one of ours (wrong signature)")
        return ref

    def _signature(self, ref: str) -> str:
        return _b64(hmac.new(self._key, ref.encode(), hashlib.sha256).digest()[:_SIGNATURE_BYTES])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def parse_score(raw: str) -> int:
    """A score from a link: one digit 1 to 5; BadScore otherwise."""
    if len(raw) != 1 or raw not in "12345":
        raise BadScore("the score must be one digit from 1 to 5")
    return int(raw)


def score_in_reply(text: str) -> int | None:
    """The score a text reply gives ("4", " 4. ", "4!"), or None when it is not one digit from 1 to 5."""
    word = text.strip().rstrip(".!").strip()
    return int(word) if len(word) == 1 and word in "12345" else None


def question_text(tracking_number: str, language: str | None) -> str:
    return QUESTION[language_of(language)].format(tracking_number=tracking_number)


def thanks_text(tracking_number: str, language: str | None) -> str:
    return THANKS_BY_TEXT[language_of(language)].format(tracking_number=tracking_number)


def survey_links(base_url: str, token: str) -> list[tuple[int, str]]:
    """The five one-click answers: base_url/survey/<token>/<score>."""
    return [(score, f"{base_url.rstrip('/')}{SURVEY_PATH}/{token}/{score}") for score in SCORES]


class SurveyEmails:
    """The survey email from templates/survey/<language>.txt.j2 (en, es); it starts with a 'Subject:' line."""

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("services.notifier", "templates"),
            autoescape=False,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(
        self, tracking_number: str, service_code: str, language: str | None, links: list[tuple[int, str]]
    ) -> RenderedMessage:
        lang = language_of(language)
        text = self._env.get_template(f"survey/{lang}.txt.j2").render(
            tracking_number=tracking_number, service=service_name(service_code), links=links, labels=LABELS[lang]
        )
        head, _, body = text.partition("\n\n")
        return RenderedMessage(subject=head.removeprefix("Subject:").strip(), body=body)


# --- the pages a link opens ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    status: int
    html: str


_PAGES: Mapping[str, Mapping[str, str]] = {
    "en": {
        "title": "311 survey",
        "confirm": "Your answer on request {tracking_number}: {score} of 5. Press the button to send it.",
        "send": "Send my answer",
        "thanks": "Thank you. Your answer ({score} of 5) on request {tracking_number} is recorded.",
        "already": "Thank you. Your answer on request {tracking_number} was already recorded; it stays as first given.",
        "not_found": "This survey link is not known. Please check that the whole link was opened.",
        "bad_score": "This survey link is not valid: the score must be one digit from 1 to 5.",
    },
    "es": {
        "title": "Encuesta 311",
        "confirm": "Su respuesta sobre la solicitud {tracking_number}: {score} de 5. Pulse el botón para enviarla.",
        "send": "Enviar mi respuesta",
        "thanks": "Gracias. Su respuesta ({score} de 5) sobre la solicitud {tracking_number} quedó registrada.",
        "already": "Gracias. Su respuesta sobre la solicitud {tracking_number} ya estaba registrada; queda la primera.",
        "not_found": "No conocemos este enlace de encuesta. Compruebe que abrió el enlace completo.",
        "bad_score": "Este enlace de encuesta no es válido: la puntuación es un dígito del 1 al 5.",
    },
}


def page(status: int, kind: str, language: str | None = None, *, form: bool = False, **values: str) -> Page:
    """A small plain HTML page in the resident's language; values are escaped. Without a language (a link we
    cannot read says nothing of whose it is) the page says it in every language we write. form: a button that
    POSTs to the page's own address (the token and score are in it), the only way an answer is recorded: mail
    scanners and link previews open every link of an email, and must not answer for the resident."""
    languages = [language_of(language)] if language else list(_PAGES)
    paragraphs = "".join(f'<p lang="{lang}">{escape(_PAGES[lang][kind].format(**values))}</p>' for lang in languages)
    first = languages[0]
    if form:
        paragraphs += f'<form method="post"><button type="submit">{escape(_PAGES[first]["send"])}</button></form>'

    html = (
        f'<!doctype html><html lang="{first}"><head><meta charset="utf-8"><title>{_PAGES[first]["title"]}</title>'
        f'<meta name="viewport" content="width=device-width"></head><body>{paragraphs}</body></html>'
    )
    return Page(status, html)
