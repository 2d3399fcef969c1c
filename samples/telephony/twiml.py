"""TwiML as the sample telephony provider reads it: the verbs civicflow's calls and replies use, as plain data.

Pure: `read_twiml` turns a document into verbs, `CallScript` walks them with the digits a resident
"presses", and says when the call must ask the Gather's action URL what comes next.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field

MAX_TWIML_BYTES = 64_000
WHOLE = re.compile(r"[0-9]{1,4}")


class TwimlError(ValueError):
    """A TwiML document the provider cannot play; Twilio would say "an application error has occurred"."""


@dataclass(frozen=True)
class Say:
    text: str
    language: str = "en-US"


@dataclass(frozen=True)
class Pause:
    seconds: int = 1


@dataclass(frozen=True)
class Gather:
    """Ask for digits: what it says while waiting, how many digits, and where to post them."""

    prompts: tuple[Say | Pause, ...] = ()
    num_digits: int | None = None
    action: str | None = None


@dataclass(frozen=True)
class Redirect:
    url: str


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Message:
    """A text in reply to an inbound text (messaging TwiML)."""

    body: str
    to: str | None = None


Verb = Say | Pause | Gather | Redirect | Hangup | Message


def read_twiml(document: str | bytes) -> list[Verb]:
    """The verbs of a TwiML `<Response>`, in order; TwimlError says what is wrong with it."""
    raw = document.encode() if isinstance(document, str) else document
    if len(raw) > MAX_TWIML_BYTES:
        raise TwimlError(f"the TwiML is {len(raw)} bytes; the sample provider plays at most {MAX_TWIML_BYTES}")
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise TwimlError("the TwiML declares a DOCTYPE or entities; TwiML has none")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise TwimlError(f"the TwiML is not well-formed XML ({exc})") from None
    if root.tag != "Response":
        raise TwimlError(f"the TwiML's root element is <{root.tag}>; it must be <Response>")
    return [_verb(element) for element in root]


def _verb(element: ET.Element) -> Verb:
    tag = element.tag
    if tag == "Say":
        return Say(_text(element), element.get("language") or "en-US")
    if tag == "Pause":
        return Pause(_whole(element, "length", 1))
    if tag == "Gather":
        prompts: list[Say | Pause] = []
        for child in element:
            verb = _verb(child)
            if not isinstance(verb, Say | Pause):
                raise TwimlError(f"<Gather> may hold <Say> and <Pause>, not <{child.tag}>")
            prompts.append(verb)
        num_digits = _whole(element, "numDigits", 0) or None
        return Gather(tuple(prompts), num_digits, element.get("action") or None)
    if tag == "Redirect":
        url = _text(element)
        if not url:
            raise TwimlError("<Redirect> needs a URL")
        return Redirect(url)
    if tag in ("Hangup", "Reject"):
        return Hangup()
    if tag == "Message":
        body = element.find("Body")
        return Message(_text(body if body is not None else element), element.get("to") or None)
    raise TwimlError(f"<{tag}> is not a verb the sample provider plays (Say, Pause, Gather, Redirect, Hangup, Message)")


def _text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _whole(element: ET.Element, attribute: str, default: int) -> int:
    value = element.get(attribute)
    if value is None:
        return default
    # ASCII digits only: str.isdigit takes '²', which int() then refuses
    if not WHOLE.fullmatch(value) or not 0 <= int(value) <= 3600:
        raise TwimlError(f"<{element.tag} {attribute}={value!r}>: write a whole number from 0 to 3600")
    return int(value)


@dataclass(frozen=True)
class Post:
    """The call must POST the digits to a Gather's action (or fetch a Redirect) and play what comes back."""

    url: str
    digits: str | None


@dataclass
class CallScript:
    """What a call does with one TwiML document and the digits the resident will press, one entry a Gather.

    `play` appends what was said and pressed to `transcript` and returns where to go next (a Post), or
    None when the call ends (a Hangup, or the document ran out)."""

    presses: deque[str] = field(default_factory=deque)
    transcript: list[str] = field(default_factory=list)

    def play(self, verbs: list[Verb]) -> Post | None:
        for verb in verbs:
            if isinstance(verb, Say | Pause):
                self._hear(verb)
            elif isinstance(verb, Gather):
                for prompt in verb.prompts:
                    self._hear(prompt)
                if not self.presses:
                    self.transcript.append("(waited for digits; none pressed)")
                    continue  # as Twilio does: no input goes on to the next verb
                digits = self.presses.popleft()
                if verb.num_digits is not None:
                    digits = digits[: verb.num_digits]
                self.transcript.append(f"pressed: {digits}")
                if verb.action is None:
                    self.transcript.append("(the Gather has no action URL; the digits went nowhere)")
                    continue
                return Post(verb.action, digits)
            elif isinstance(verb, Redirect):
                return Post(verb.url, None)
            elif isinstance(verb, Hangup):
                self.transcript.append("hung up")
                return None
            else:
                self.transcript.append("(a <Message> in call TwiML is not played)")
        return None

    def _hear(self, verb: Say | Pause) -> None:
        if isinstance(verb, Say):
            self.transcript.append(f"said ({verb.language}): {verb.text}")
        else:
            self.transcript.append(f"paused {verb.seconds}s")

    def speech(self) -> str:
        """Everything said, for rendering to sound."""
        return " ".join(line.split(": ", 1)[1] for line in self.transcript if line.startswith("said ("))
