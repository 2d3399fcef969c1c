"""Reading a city's rule-set file in the city's words: YAML whose repeated keys are caught rather than silently
replaced, and pydantic's complaints turned into what was expected, what was found and where. Pure."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import yaml
from pydantic_core import ErrorDetails

from civicflow.codes import CODE

_MERGE_TAG = "tag:yaml.org,2002:merge"
# The sections whose keys name things: "service POTHOLE, group" rather than "services.POTHOLE.group".
_SECTIONS = {"services": "service", "departments": "department", "calendars": "calendar"}


class CityFileLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is recorded with both lines.
    A YAML mapping keeps the last of two equal keys, so a service pasted twice would otherwise lose its
    first definition without a word. Not libyaml's faster CSafeLoader: it recurses in C, and a hostile
    file nested 100,000 deep crashed the process where this one raises RecursionError."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[tuple[yaml.MappingNode, str, list[int]]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, list[int]] = {}
        written: dict[Any, str] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)  # cached: the mapping itself reuses it
            lines.setdefault(key, []).append(key_node.start_mark.line + 1)
            written.setdefault(key, key_node.value)
        for key, at in lines.items():
            if len(at) > 1:
                self.repeated.append((node, shown(written[key]), at))
        return super().construct_mapping(node, deep=deep)


def load_city_yaml(text: str) -> tuple[Any, list[tuple[tuple[Any, ...], str, list[int]]]]:
    """The document in text, and every key given more than once: (where its mapping is, the key, its lines)."""
    loader = CityFileLoader(text)
    try:
        root = loader.get_single_node()
        document = loader.construct_document(root) if root is not None else None
        repeated = loader.repeated
    finally:
        loader.dispose()
    if not repeated:
        return document, []
    paths = dict(_mapping_paths(root)) if root is not None else {}
    return document, [(paths.get(id(node), ()), key, at) for node, key, at in repeated]


def _mapping_paths(root: yaml.Node) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(id of a mapping node, its path of keys and indexes from the root), without recursion: a hostile
    file can nest deeper than Python's stack."""
    pending: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    seen: set[int] = set()
    while pending:
        node, path = pending.pop()
        if id(node) in seen:  # an alias: the first path stands
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            yield id(node), path
            pending.extend((value, (*path, key.value)) for key, value in node.value if isinstance(key, yaml.ScalarNode))
        elif isinstance(node, yaml.SequenceNode):
            pending.extend((item, (*path, n)) for n, item in enumerate(node.value))


def repeated_key_problems(repeated: Sequence[tuple[tuple[Any, ...], str, list[int]]], raw: Any) -> list[str]:
    problems = []
    for path, key, at in repeated:
        times = "twice" if len(at) == 2 else f"{len(at)} times"
        lines = ", ".join(str(n) for n in at[:-1]) + f" and {at[-1]}"
        where = where_in(path, raw) if path else ""
        problems.append(f"{where + ': ' if where else ''}{key} is defined {times} (lines {lines})")
    return problems


def shown(name: object) -> str:
    """A name from the file as it may be shown back: a code as it is, anything else cut short and quoted."""
    text = str(name)
    if CODE.match(text):
        return text
    return repr(text) if len(text) <= 40 and text.isprintable() else f"{text[:30]!r}…"


def where_in(loc: Sequence[Any], raw: Any) -> str:
    """'rule pothole-downtown, then.sla' rather than 'rules.3.then.sla'; 'service POTHOLE, group' rather than
    'services.POTHOLE.group'; the section alone when the key itself is what is wrong."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = raw.get("rules") if isinstance(raw, dict) else None
        rules = rules if isinstance(rules, list) else []
        entry = rules[loc[1]] if loc[1] < len(rules) else None
        rule_id = entry.get("id") if isinstance(entry, dict) else None
        rest = ".".join(str(p) for p in loc[2:])
        name = shown(rule_id) if isinstance(rule_id, str) and rule_id else f"#{loc[1] + 1}"
        return f"rule {name}" + (f", {rest}" if rest else "")
    if len(loc) >= 2 and loc[0] in _SECTIONS:
        if loc[-1] == "[key]" and len(loc) == 3:
            return str(loc[0])
        rest = ".".join(str(p) for p in loc[2:])
        # pydantic names an entry whose key is not text (NO: read as false) by a number: say so instead
        entry = f"{_SECTIONS[loc[0]]} {shown(loc[1])}" if isinstance(loc[1], str) else f"{loc[0]} (the key not text)"
        return entry + (f", {rest}" if rest else "")
    return ".".join(str(p) for p in loc) or "(top level)"


def found(value: object) -> str:
    """What a YAML value is, in words, without quoting it back."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (YAML reads an unquoted yes/no/on/off/true/false as a boolean)"
    if value is None:
        return "nothing (the value is empty)"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


_EXPECTED = {
    "string_type": "text",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "list_type": "a list",
    "tuple_type": "a list",
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "literal_error": "one of {expected}",
    "date_type": "a date like 2026-12-25",
    "date_parsing": "a date like 2026-12-25",
    "date_from_datetime_parsing": "a date like 2026-12-25",
}
# The members of the one union a rule set has (an answer, or a list of answers) that pydantic names in an
# error's location; the city wrote neither.
_UNION_TAGS = frozenset({"str", "list[str]"})


def problem_in_words(error: ErrorDetails, fields: Collection[str] = ()) -> str:
    """One pydantic error as the city reads it: what was expected and what was found. fields: the names a
    rule set uses anywhere, to suggest the one a misspelt field probably meant."""
    kind, given, context = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "string_type" and isinstance(given, bool):
        return (
            f"YAML read this as {str(given).lower()}: an unquoted yes/no/on/off/true/false is a boolean;"
            " quote it to mean the text"
        )
    if kind in _EXPECTED:
        expected = _EXPECTED[kind].format(expected=context.get("expected", ""))
        return f"expected {expected}, found {found(given)}"
    if kind == "missing":
        return "required, and missing"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(error["loc"][-1]), list(fields), n=1, cutoff=0.75)
        guess = f" ({close[0]}?)" if close else ""
        return f"not a field here{guess}: check its spelling and its indentation"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = {"greater_than": "above", "greater_than_equal": "at least", "less_than": "below"}.get(kind, "at most")
        limit = next(iter(context.values()), "")
        limit = f"{limit:g}" if isinstance(limit, int | float) else limit
        shown = repr(given) if isinstance(given, int | float) else found(given)
        return f"expected a number {bound} {limit}, found {shown}"
    if kind == "finite_number":
        return "expected a finite number, found infinity or NaN"
    if kind == "string_too_short":
        return "must not be empty"
    return error["msg"].removeprefix("Value error, ")


def problems_in_words(errors: Sequence[ErrorDetails], raw: Any, fields: Collection[str] = ()) -> list[str]:
    """Every error at its place; alternatives pydantic tried at one place (text, or a list of text) are
    said once: "expected text or a list, found a number"."""
    by_place: dict[str, list[str]] = {}
    lines = []
    for error in errors:
        loc = tuple(p for p in error["loc"] if p not in _UNION_TAGS)
        if not loc:  # the rule set as a whole (references that do not resolve): it says where, a line each
            lines += [_cut(line) for line in problem_in_words(error, fields).splitlines()]
            continue
        by_place.setdefault(where_in(loc, raw), []).append(problem_in_words(error, fields))
    for place, messages in by_place.items():
        expected = [m.removeprefix("expected ").split(", found ")[0] for m in messages if m.startswith("expected ")]
        if len(expected) > 1 and len(expected) == len(messages):
            found_part = messages[0].split(", found ", 1)[1]
            lines.append(_cut(f"{place}: expected {' or '.join(dict.fromkeys(expected))}, found {found_part}"))
        else:
            lines.extend(_cut(f"{place}: {m}") for m in dict.fromkeys(messages))
    return lines


def _cut(line: str, most: int = 400) -> str:
    """A problem is a line a person reads: a validator that quotes a value (a time zone, a calendar's hours)
    must not send a 100 KB value back."""
    return line if len(line) <= most else f"{line[: most - 40]}… ({len(line):,} characters in all)"
