"""What a service code, a department id, an area id and an intake channel may be: one definition, read by
intake (what a request may name), `rules check` and the router (what a city file may define). Pure.

A code goes into URLs (Open311 paths, department connectors), CSV columns, metric labels and log lines,
so it is short plain ASCII: a letter or digit first, then letters, digits, `_`, `.` or `-`, 64 at most.
A city's catalogue names its request types in words ("Noise - Street/Sidewalk"); `derive_code` turns such
a name into a code, and every refusal says which code to write instead.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Literal

MAX_CODE_CHARS = 64
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CODE_RULE = "1 to 64 ASCII letters, digits, _ . or -, starting with a letter or digit"

CodeKind = Literal["service code", "department id", "area id", "rule id", "calendar id"]

# How a request reached the city. The list is closed: an unknown channel is refused, never replaced.
Channel = Literal["phone", "web", "app", "email", "sms", "chat", "social", "walk_in", "mail", "system"]
CHANNELS: tuple[Channel, ...] = ("phone", "web", "app", "email", "sms", "chat", "social", "walk_in", "mail", "system")
# What people and exports also write for the same channels: taken as the channel they name.
CHANNEL_ALIASES: dict[str, Channel] = {
    "text": "sms",
    "walk-in": "walk_in",
    "walkin": "walk_in",
    "in_person": "walk_in",
    "in-person": "walk_in",
    "telephone": "phone",
    "call": "phone",
    "mobile": "app",
    "mobile_app": "app",
    "internet": "web",
    "website": "web",
    "e-mail": "email",
    "letter": "mail",
    "api": "system",
}


def derive_code(name: str) -> str:
    """A code for a catalogue name: "Noise - Street/Sidewalk" -> "NOISE_STREET_SIDEWALK",
    "Asbestos Complaint (B1)" -> "ASBESTOS_COMPLAINT_B1", "Señal de tráfico" -> "SENAL_DE_TRAFICO".
    Accents are dropped, every run of other characters becomes one `_`; a name too long for a code keeps its
    start and ends with a short digest of the whole, so two long names stay two codes."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    code = re.sub(r"[^A-Za-z0-9]+", "_", ascii_name).strip("_").upper()
    if not code:
        code = "SERVICE_" + hashlib.blake2b(name.encode(), digest_size=4).hexdigest().upper()
    if len(code) > MAX_CODE_CHARS:
        digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest().upper()
        code = code[: MAX_CODE_CHARS - len(digest) - 1].rstrip("_") + "_" + digest
    return code


def code_problem(kind: CodeKind, value: object) -> str | None:
    """What is wrong with value as a code of this kind, in words, with the code to write instead; None if fine."""
    if isinstance(value, bool):
        word = "YES" if value else "NO"
        return (
            f"YAML read this {kind} as {str(value).lower()}: an unquoted yes/no/on/off/true/false is a boolean;"
            f' quote it (for example "{word}")'
        )
    a_kind = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    if not isinstance(value, str):
        return f"the {kind} {value!r} is a {type(value).__name__}; {a_kind} is text: quote it"
    if CODE.match(value):
        return None
    suggestion = derive_code(value) if kind == "service code" else derive_code(value).lower().replace("_", "-")
    shown = repr(value) if len(value) <= 80 and value.isprintable() else f"{value[:40]!r}…"
    return f"{shown} is not {a_kind}: use {CODE_RULE}; write {suggestion!r} (and keep the words as its name)"


def channel_of(value: str) -> Channel | None:
    """The channel a value names (case and spaces ignored, aliases taken), or None when it names none."""
    key = value.strip().lower().replace(" ", "_")
    if key in CHANNELS:
        return key
    return CHANNEL_ALIASES.get(key)


def channel_problem(value: str) -> str:
    return f"{value[:40]!r} is not a channel; use one of {', '.join(CHANNELS)}"
