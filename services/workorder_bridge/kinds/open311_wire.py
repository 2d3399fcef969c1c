"""How an Open311 GeoReport v2 answer is read, whatever dialect a server speaks, and the updates poll's cursor.

Pure: no I/O. Servers differ in ways the spec leaves open or that they got wrong, and each is taken here:
JSON or XML; a bare list or a list wrapped in an object (`{"service_requests": [...]}`); one object where a
list is expected; numbers where strings are; empty strings for absent values; fields the spec does not name;
timestamps with or without fractions (up to nanoseconds), with `Z`, an offset, or no zone at all (then the
connector's `timezone`, else UTC: GeoReport asks for an offset, and a server that leaves it out is most
often writing its own local time, which only the city file can say). Anything else is a `MalformedAnswer`
naming what was wrong, never a crash of the poller.

XML is read with the standard library's parser after refusing any document type declaration: a DTD is what
entity expansion (the "billion laughs") and external entities need, and no GeoReport answer has one.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar

T = TypeVar("T")

# The names servers wrap their lists in, in JSON and as XML roots.
WRAPPERS = (
    "service_requests",
    "requests",
    "service_request_updates",
    "request_updates",
    "services",
    "errors",
)
# What one item is called inside a wrapper, in XML (<service_requests><request>…) and some JSON.
ITEMS = ("request", "service_request", "request_update", "service_request_update", "service", "error")

Record = dict[str, Any]  # field -> str, or a nested record (extended_attributes), never "" (absent)


class MalformedAnswer(ValueError):
    """Their answer is not GeoReport in JSON or XML; the message says what was wrong (never their content)."""


def records(body: bytes, fmt: str) -> list[Record]:
    """The records of a GeoReport answer (requests, updates, services, errors), each field a str or None."""
    if not body.strip():
        raise MalformedAnswer("an empty answer")
    if fmt == "xml":
        return _xml_records(body)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedAnswer("an answer that is not JSON") from None
    return _json_records(data)


def _json_records(data: Any) -> list[Record]:
    for _ in range(3):  # {"service_requests": {"request": [...]}} and the like
        if not isinstance(data, dict):
            break
        wrapped = [data[name] for name in (*WRAPPERS, *ITEMS) if name in data]
        if not wrapped:
            break
        data = wrapped[0]
    if isinstance(data, dict):
        data = [data]  # one object where a list is expected
    if not isinstance(data, list):
        raise MalformedAnswer(f"a JSON {type(data).__name__} where a list of records was expected")
    found = [_json_record(item) for item in data if isinstance(item, dict)]
    if len(found) != len(data):
        raise MalformedAnswer("a list holding something other than records")
    return found


def _json_record(item: dict[Any, Any], depth: int = 0) -> Record:
    record: Record = {}
    for key, value in item.items():
        if isinstance(value, dict) and depth < 2:
            record[str(key)] = _json_record(value, depth + 1)
        elif isinstance(value, list):
            # media_url and the like: the first usable value
            firsts = [_scalar(v) for v in value if not isinstance(v, dict | list)]
            text = next((v for v in firsts if v is not None), None)
            if text is not None:
                record[str(key)] = text
        elif (text := _scalar(value)) is not None:
            record[str(key)] = text
    return record


def _scalar(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _xml_records(body: bytes) -> list[Record]:
    if _DOCTYPE.search(body):
        raise MalformedAnswer("an XML answer with a document type declaration (refused: entities)")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise MalformedAnswer("an answer that is not XML") from None
    if _local(root.tag) in WRAPPERS:
        items = list(root)
    else:
        items = [root]  # one record where a list is expected
    return [_xml_record(item) for item in items]


def _xml_record(element: ElementTree.Element, depth: int = 0) -> Record:
    record: Record = {}
    for child in element:
        name = _local(child.tag)
        if name in record:
            continue  # a repeated field (media_url): the first
        if len(child) and depth < 2:
            record[name] = _xml_record(child, depth + 1)
        elif (text := _scalar(child.text)) is not None:
            record[name] = text
    return record


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # without a namespace


def text(record: Record, name: str, limit: int = 2000) -> str | None:
    """A field as text (None when absent, empty or nested), cut to `limit` characters."""
    value = record.get(name)
    if not isinstance(value, str):
        return None
    return value[:limit]


def identifier(record: Record, name: str, limit: int = 200) -> str | None:
    """A field that names something (an id, a status, a token): None when absent, longer than `limit` or not
    printable, since a cut or garbled name would name something else."""
    value = record.get(name)
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        return None
    return value


def nested(record: Record, name: str) -> Record:
    value = record.get(name)
    return value if isinstance(value, dict) else {}


def error_codes(body: bytes, fmt: str) -> list[str]:
    """The codes of a GeoReport error list ([{code, description}]), for logs; their words are left out, since a
    server's description may echo what it was sent."""
    try:
        return [code for r in records(body, fmt) if (code := text(r, "code", 16))][:5]
    except MalformedAnswer:
        return []


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: str | None, naive_zone: tzinfo | None = None) -> datetime | None:
    """A GeoReport timestamp, aware; None when it cannot be read. Fractions beyond microseconds are cut; a
    time without a zone is in `naive_zone` (UTC when None); a space may stand for the 'T'."""
    if not value:
        return None
    cleaned = _FRACTION.sub(r"\1", value.strip())
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=naive_zone or UTC)
    return parsed


def w3c(moment: datetime) -> str:
    """A timestamp as GeoReport asks for them (W3C, with an offset), in UTC to the second."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


MAX_SEEN = 2000  # update keys a cursor remembers: beyond, the oldest are forgotten (and may be handed on again)


@dataclass
class Cursor:
    """Where the updates poll stands: the latest `updated_datetime` seen, and the updates already handed on that
    lie inside the catch-up window (key -> their time), so a poll that reaches back for late arrivals hands on
    only what is new, and updates sharing the latest instant are neither lost nor repeated.

    It travels as the page's cursor (a short JSON text the bridge stores per department), not in the connector:
    a poll whose updates were not recorded is asked again from the same cursor and hands them on again."""

    at: datetime | None = None
    seen: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: str | None) -> Cursor:
        """The cursor a page gave; a cursor that cannot be read is a first poll (the catch-up window, from now)."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            at = datetime.fromisoformat(data["at"])
            seen = {str(k): datetime.fromisoformat(v) for k, v in dict(data.get("seen", {})).items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()
        if at.tzinfo is None or any(t.tzinfo is None for t in seen.values()):
            return cls()
        return cls(at, seen)

    def dump(self) -> str:
        return json.dumps(
            {"at": self.at.isoformat() if self.at else None, "seen": {k: t.isoformat() for k, t in self.seen.items()}},
            separators=(",", ":"),
        )

    def window_start(self, now: datetime, catch_up: timedelta) -> datetime:
        """Where a poll reaches back to: catch_up before the cursor (late arrivals), or before now on a first poll.
        Never from after now: a cursor stored ahead of the clock (one update stamped 2099, before cursors were
        capped) would otherwise ask for nothing but the future, for ever."""
        return min(self.at or now, now) - catch_up

    def take(
        self,
        found: Iterable[tuple[str, datetime, T]],
        start: datetime,
        catch_up: timedelta,
        end: datetime | None = None,
    ) -> tuple[list[T], Cursor]:
        """Of what a poll from `start` to `end` found ((key, time, item), in any order), the items not handed on
        before, oldest first, and the cursor to poll from next. Items before `start` are left out: an earlier poll
        handed them on, or they came later than the catch-up window allows. Items stamped after `end` are handed on
        (the recorder refuses one far ahead), but the cursor goes no further than `end`: one update stamped 2099
        cannot make every later poll ask for the future."""
        handed_on: dict[str, datetime] = {}
        fresh: list[T] = []
        for key, moment, item in sorted(found, key=lambda entry: entry[1]):
            if moment < start or key in self.seen or key in handed_on:
                continue
            handed_on[key] = moment
            fresh.append(item)
        return fresh, self.after(handed_on.items(), start, catch_up, end)

    def after(
        self,
        handed_on: Iterable[tuple[str, datetime]],
        polled_from: datetime,
        catch_up: timedelta,
        end: datetime | None = None,
    ) -> Cursor:
        """The next cursor: the latest time seen, at most `end` (on a first poll that saw nothing, where it reached
        back to, so the next one reaches back from there), and the keys seen within the next poll's window, the
        newest MAX_SEEN of them but always all at the latest instant. A key stamped ahead keeps its own time, so it
        is remembered (not handed on again) until the window passes it."""
        seen = dict(self.seen)
        for key, moment in handed_on:
            seen[key] = moment
        at = max([*seen.values(), self.at or polled_from])
        if end is not None:
            at = min(at, end)
        start = at - catch_up
        kept = sorted(((t, k) for k, t in seen.items() if t >= start), reverse=True)
        newest = {k: t for t, k in kept[:MAX_SEEN]}
        newest |= {k: t for t, k in kept if t == at}
        return Cursor(at, newest)
