"""How a rule's `words_any` / `words_none` phrases are searched for in a request's description."""

from __future__ import annotations

import re

_WORD_CHARACTER = re.compile(r"\w")
_NEVER = re.compile(r"(?!)")


def phrase_search(phrases: list[str]) -> re.Pattern[str]:
    r"""One case-insensitive search for any of the phrases, each as whole words: an edge that is a word
    character must not touch another (`\b` there), an edge that is punctuation matches as written (`\b`
    there would demand a word character beside the ")" of "(B1)" or the "+" of "C++", so they never
    matched after a space). Spaces inside a phrase match any run of white space. A blank phrase is
    ignored: it would match every description. Phrases are grouped by their edges, so the common case
    is one `\b(?:…|…)\b` the regex engine scans quickly."""
    groups: dict[tuple[bool, bool], list[str]] = {}
    for phrase in phrases:
        words = phrase.split()
        if words:
            edges = (bool(_WORD_CHARACTER.match(words[0][0])), bool(_WORD_CHARACTER.match(words[-1][-1])))
            groups.setdefault(edges, []).append(r"\s+".join(re.escape(w) for w in words))
    if not groups:
        return _NEVER
    return re.compile(
        "|".join(
            (r"\b" if before else "") + "(?:" + "|".join(bodies) + ")" + (r"\b" if after else "")
            for (before, after), bodies in groups.items()
        ),
        re.IGNORECASE,
    )
