"""What a department's note may carry to a resident: plain text, one paragraph, short, and no links.

A department's status note reaches residents (the resolved email, the public case view), but it comes
through a webhook whose sender we only know by a shared secret, and crews type notes into systems we
do not control. A link in an official 311 email is exactly what a phishing note would want, and
residents cannot tell a department's link from an attacker's, so the rule is simple: a note is text
for a person to read, and anything that reads as a web or mail address is taken out. A city that wants
to send residents a link puts it in the notifier's templates (PUBLIC_TRACKING_URL), a channel it owns.

The rule (`resident_text`), applied where a note enters (the bridge's webhook) and again wherever it is
shown (notifier templates, the query projection), so events recorded before it are covered too:

- each word checked in its compatibility form (NFKC), so full-width or styled letters cannot dress
  up a link (the word itself is kept as written: "m²" stays);
- markup tags removed (`<a href=…>`, `<script>`; the words between tags stay), and then any `<` or `>`
  left over;
- control, format (zero-width, bidirectional overrides), private-use and separator characters removed,
  and all whitespace, newlines included, folded to single spaces;
- every word that reads as an address replaced by "[link removed]": a scheme (`https://`, `mailto:`,
  `javascript:` …), `www.`, an email address, an IP address, or a dotted name ending in a word of two
  or more letters (`evil.example`, `st.louis`: a crew that writes "Done.Thanks" loses "Done.Thanks";
  better one odd note than one live link);
- at most MAX_NOTE_CHARACTERS characters, cut at a word and marked with "…".
"""

from __future__ import annotations

import re
import unicodedata

MAX_NOTE_CHARACTERS = 500
LINK_REMOVED = "[link removed]"

_TAG = re.compile(r"<[^<>]{0,2000}>")
# Unicode categories that are never text to read: controls, format characters, surrogates,
# private use, unassigned, and line/paragraph separators (spaces are handled as whitespace).
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SCHEME = re.compile(r"[^\W\d_][\w+.\-]*:(//|/|\\)|\b(mailto|javascript|data|file|tel|sms|callto|vbscript):", re.I)
_WWW = re.compile(r"\bwww\d{0,3}\.", re.I)
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\W\d_]{2,}", re.I)
_IP = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b")
_DOTTED_NAME = re.compile(r"[\w-]+(\.[\w-]+)*\.[^\W\d_]{2,}(\b|$)")
# Full stops that browsers read as dots in a host name and NFKC leaves alone.
_DOTS = str.maketrans({"\u3002": ".", "\uff61": "."})
_EDGE_PUNCTUATION = "\"'()[]{}<>.,;:!?«»“”\u2018\u2019"


def _reads_as_address(word: str) -> bool:
    bare = unicodedata.normalize("NFKC", word).translate(_DOTS).strip(_EDGE_PUNCTUATION)
    if not bare:
        return False
    return bool(
        _SCHEME.search(bare)
        or _WWW.search(bare)
        or _EMAIL.search(bare)
        or _IP.search(bare)
        or _DOTTED_NAME.search(bare)
    )


def _readable_characters(text: str) -> str:
    kept = []
    for character in text:
        if character.isspace():
            kept.append(" ")
        elif unicodedata.category(character) not in _DROPPED_CATEGORIES:
            kept.append(character)
    return "".join(kept)


def _shortened(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-") + "…"


def resident_text(note: str | None, limit: int = MAX_NOTE_CHARACTERS) -> str:
    """The note as it may be shown to a resident (the rule is in this module's docstring); "" when
    nothing readable is left."""
    if not note:
        return ""
    # Bounded first: the rest is linear, but there is no reason to fold megabytes only to cut them.
    # Tags out, then any angle bracket left, so removing one tag cannot join the pieces into another.
    text = _TAG.sub(" ", note[: limit * 8]).replace("<", " ").replace(">", " ")
    text = _readable_characters(text)
    words = [LINK_REMOVED if _reads_as_address(word) else word for word in text.split()]
    # Runs of removed links read as one.
    collapsed: list[str] = []
    for word in words:
        if not (word == LINK_REMOVED and collapsed and collapsed[-1] == LINK_REMOVED):
            collapsed.append(word)
    return _shortened(" ".join(collapsed), limit)
