"""Bringing a city's past requests in (`civicflow import`): each row of an old system's export through intake's
own validation, recorded in batches with its original times, skipping what an earlier run already brought in.

A batch is one transaction (the CaseWriter the live path uses), so an interrupted import has committed whole
batches only, and running the same command again goes on where it stopped: each case's idempotency key is
`import:<source>:<external id>`, and a batch's keys already taken are looked up in one statement and skipped.
A row whose case an earlier run brought in open and that the old system has closed since gets its closing
appended (once); a row changed in any other way since is refused, saying what changed.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.city import CityProfile
from civicflow.events import CaseResolved, EventMetadata, ImportedFrom
from civicflow.eventstore import ConcurrencyConflict, StreamAppend
from civicflow.geocode import Geocoder
from civicflow.history import HistoryMapping
from civicflow.history_export import HistoricalRow, RowRefused, field_column
from civicflow.ids import uuid7
from services.intake.domain import ServiceRequest, place, validate_request
from services.intake.handlers import (
    Accepted,
    CaseWriter,
    IdempotencyKeyReused,
    KeyTaken,
    Submission,
    keys_taken,
    refingerprint,
)

log = structlog.get_logger(__name__)

BATCH_SIZE = 500
# What the database may answer about one row's values (a value PostgreSQL will not store, a unique key).
_ONE_ROWS_FAULT = (DataError, IntegrityError, ConcurrencyConflict)
_KEY_CHARS = 128  # intake's limit for an idempotency key


@dataclass
class ImportSummary:
    """What an import run did: rows read, cases recorded (and how many closed), rows an earlier run had
    already brought in (and how many of those the old system closed since), addresses left out, and the rows
    refused by field and reason."""

    read: int = 0
    accepted: int = 0
    closed: int = 0
    already_imported: int = 0
    closed_since: int = 0  # imported open by an earlier run, closed in the old system since
    place_left_out: int = 0  # an address on a row whose service takes no place, left out
    refused: Counter[str] = field(default_factory=Counter)
    last_row: int = 0
    stopped: bool = False

    @property
    def refused_rows(self) -> int:
        return sum(self.refused.values())


def import_key(source: str, external_id: str) -> str:
    """The idempotency key of an imported request; an id that does not fit a key is replaced by its digest."""
    key = f"import:{source}:{external_id}"
    if len(key) <= _KEY_CHARS and all("\x21" <= ch <= "\x7e" for ch in key):
        return key
    digest = hashlib.blake2b(external_id.encode("utf-8", "surrogateescape"), digest_size=20).hexdigest()
    return f"import:{source}:#{digest}"


def place_left_out(row: HistoricalRow, mapping: HistoryMapping, city: CityProfile | None) -> bool:
    """Whether the row's place is left out: its service takes none (a question), so an address on it is the
    caller's own, personal data the case does not need (unless the mapping says to refuse such rows)."""
    return (
        mapping.location_for_services_without_place == "drop"
        and city is not None
        and "location" in row.request
        and city.service(str(row.request.get("service_code"))).location == "none"
    )


def admit(
    row: HistoricalRow, mapping: HistoryMapping, city: CityProfile | None, geocoder: Geocoder
) -> Submission | list[RowRefused]:
    """A past request as intake accepts it (placed on the map, keeping its original time), or every reason it
    is not, each naming the field and the column it came from."""
    given = row.request
    if place_left_out(row, mapping, city):
        given = {name: value for name, value in given.items() if name != "location"}
    checked = validate_request(given, city)
    if isinstance(checked, list) and checked and all(name == "contact.phone" for name, _ in checked):
        # A past request's resident is never called or texted: a number the city cannot read is left out
        # rather than the request with it.
        contact = {k: v for k, v in given["contact"].items() if k != "phone"}
        checked = validate_request({**given, "contact": contact} if contact else _without_contact(given), city)
    if not isinstance(checked, ServiceRequest):
        return [
            RowRefused(row.row_number, row.external_id, name, _with_column(reason, field_column(mapping, name)))
            for name, reason in checked
        ]
    request = place(checked, geocoder, city)
    key = import_key(mapping.source, row.external_id)
    imported = ImportedFrom(
        source=mapping.source,
        external_id=row.external_id,
        closed_at=row.closed_at,
        status=row.status,
        old_department=row.old_department,
    )
    return Submission(
        request,
        key,
        import_fingerprint(checked.fingerprint(key), row),
        actor=f"import:{mapping.source}",
        submitted_at=row.submitted_at,
        imported=imported,
    )


def _without_contact(given: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in given.items() if k != "contact"}


# What each part of an import's fingerprint covers, as a refusal names it.
_PARTS = {
    "request": "the request (type, description, place, channel, answers)",
    "submitted": "submitted time",
    "closing": "status or closing time",
    "department": "old department",
}


def import_fingerprint(request: str, row: HistoricalRow) -> str:
    """The fingerprint of an imported row, part by part: the request's digest (as given, before placing,
    since the address file may change between runs), then as they are its submitted time, its status and
    closing, and its old department (none of them a resident's), so that a row changed since an earlier
    run says what changed, and one only closed since can be told."""
    closing = f"{row.status}:{row.closed_at.timestamp() if row.closed_at else ''}"
    return (
        f"request={request};submitted={row.submitted_at.timestamp()};closing={closing}"
        f";department={row.old_department or ''}"
    )


def changed_parts(was: str, now: str) -> list[str]:
    """The parts of an imported row's fingerprint that differ from an earlier run's (all of them when the
    earlier one is not an import's)."""
    before = dict(part.split("=", 1) for part in was.split(";") if "=" in part)
    after = dict(part.split("=", 1) for part in now.split(";"))
    return [name for name in _PARTS if before.get(name) != after.get(name)]


def closed_since(was: str, submission: Submission) -> bool:
    """Whether a row differs from an earlier run's only in that the old system has closed it since."""
    imported = submission.imported
    if imported is None or imported.status != "closed" or changed_parts(was, submission.fingerprint) != ["closing"]:
        return False
    before = dict(part.split("=", 1) for part in was.split(";"))
    return before["closing"] == "open:"


def _with_column(reason: str, column: str | None) -> str:
    if reason == "Field required":
        reason = "is blank"
    return f"{reason} (column {column!r})" if column else reason


def closing(submission: Submission, submitted: StreamAppend) -> list[StreamAppend]:
    """A row the old system closed is recorded closed too, at its original closing time (the submitted time
    when the export has none), in the same statement as its CaseSubmitted."""
    imported = submission.imported
    if imported is None or imported.status != "closed":
        return []
    at = imported.closed_at or submitted.occurred_at
    assert at is not None
    return [StreamAppend(submitted.case_id, None, [_resolved(imported, at)], submitted.metadata, occurred_at=at)]


def _resolved(imported: ImportedFrom, at: datetime) -> CaseResolved:
    when = "" if imported.closed_at else " (its closing time was not in the export)"
    resolution = f"closed in {imported.source} before the city moved to civicflow{when}"
    return CaseResolved(resolution=resolution, resolved_at=at)


class ClosedSince:
    """The outcome of a row already imported open that the old system has closed since: its closing is in."""


class ChangedSince(IdempotencyKeyReused):
    """A row already imported with other details: which parts changed."""

    def __init__(self, parts: list[str]) -> None:
        super().__init__(", ".join(_PARTS[part] for part in parts))
        self.parts = parts


class HistoryImport:
    """Records admitted rows `batch_size` at a time, one transaction each."""

    def __init__(
        self,
        engine: AsyncEngine,
        writer: CaseWriter,
        mapping: HistoryMapping,
        city: CityProfile | None,
        geocoder: Geocoder,
        batch_size: int = BATCH_SIZE,
        started_at: datetime | None = None,
    ) -> None:
        self._engine = engine
        # a row closed since an earlier run without a closing time in the export is closed at the import's start
        self._started_at = started_at or datetime.now(UTC)
        self._writer = writer
        self._mapping = mapping
        self._city = city
        self._geocoder = geocoder
        self._batch_size = batch_size

    async def run(
        self,
        rows: Iterable[HistoricalRow | RowRefused],
        on_refused: Callable[[RowRefused], None] = lambda _: None,
        on_batch: Callable[[ImportSummary], None] = lambda _: None,
        stop: Callable[[], bool] = lambda: False,
    ) -> ImportSummary:
        """Import every row; `stop()` is asked after each batch (Ctrl-C), and a run stopped early says so."""
        summary = ImportSummary()
        batch: list[tuple[int, Submission]] = []
        for row in rows:
            summary.read += 1
            summary.last_row = row.row_number
            admitted = (
                admit(row, self._mapping, self._city, self._geocoder) if isinstance(row, HistoricalRow) else [row]
            )
            if isinstance(admitted, Submission):
                batch.append((row.row_number, admitted))
                summary.place_left_out += isinstance(row, HistoricalRow) and place_left_out(
                    row, self._mapping, self._city
                )
            else:
                self._refuse(summary, admitted, on_refused)
            if len(batch) >= self._batch_size:
                await self._record(batch, summary, on_refused)
                batch = []
                on_batch(summary)
                if stop():
                    summary.stopped = True
                    return summary
        if batch:
            await self._record(batch, summary, on_refused)
        on_batch(summary)
        return summary

    @staticmethod
    def _refuse(
        summary: ImportSummary, refusals: Sequence[RowRefused], on_refused: Callable[[RowRefused], None]
    ) -> None:
        summary.refused[f"{refusals[0].field}: {_kind(refusals[0].reason)}"] += 1
        for refusal in refusals:
            on_refused(refusal)

    async def _record(
        self, batch: list[tuple[int, Submission]], summary: ImportSummary, on_refused: Callable[[RowRefused], None]
    ) -> None:
        try:
            outcomes = await self._write(batch)
        except _ONE_ROWS_FAULT as exc:
            # Something in the batch the database would not take: each row alone, so only that one is refused.
            # (A database that is down or unmigrated is no row's fault: that stops the import, to be run again.)
            log.warning("import batch failed; recording its rows one at a time", error=type(exc).__name__)
            outcomes = []
            for one in batch:
                try:
                    outcomes.extend(await self._write([one]))
                except _ONE_ROWS_FAULT as alone:
                    outcomes.append(alone)
        for (row_number, submission), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Accepted):
                if outcome.replayed:
                    summary.already_imported += 1
                else:
                    summary.accepted += 1
                    summary.closed += submission.imported is not None and submission.imported.status == "closed"
            elif outcome is None:
                summary.already_imported += 1
            elif isinstance(outcome, ClosedSince):
                summary.already_imported += 1
                summary.closed_since += 1
            else:
                assert submission.imported is not None
                if isinstance(outcome, ChangedSince):
                    reason = (
                        f"already imported with other details: {outcome}; an earlier run brought this external id"
                        " in, and only a closing since is taken (import the changed row under a new id, or leave it)"
                    )
                elif isinstance(outcome, IdempotencyKeyReused):
                    reason = (
                        "a request with this external id is already imported with other details (an earlier row of"
                        " this export has the id); only the first is kept"
                    )
                else:
                    reason = f"the database refused it ({type(outcome).__name__})"
                self._refuse(
                    summary, [RowRefused(row_number, submission.imported.external_id, "row", reason)], on_refused
                )

    async def _write(self, batch: Sequence[tuple[int, Submission]]) -> list[Accepted | ClosedSince | Exception | None]:
        """One transaction: the batch's keys already taken are skipped (None), closed when only the old
        system's closing is new (ClosedSince), or refused when they were taken for another request (the row
        changed since, or another row has its id); the others are recorded."""
        outcomes: list[Accepted | ClosedSince | Exception | None] = []
        async with self._engine.begin() as tx:
            taken = await keys_taken(tx, [s.idempotency_key for _, s in batch])
            fresh = [s for _, s in batch if s.idempotency_key not in taken]
            recorded = iter(await self._writer.record(tx, fresh, follow_up=closing))
            for _, submission in batch:
                known = taken.get(submission.idempotency_key)
                if known is None:
                    outcomes.append(next(recorded))
                elif known.fingerprint == submission.fingerprint:
                    outcomes.append(None)
                elif closed_since(known.fingerprint, submission):
                    outcomes.append(await self._close(tx, known, submission))
                else:
                    outcomes.append(ChangedSince(changed_parts(known.fingerprint, submission.fingerprint)))
        return outcomes

    async def _close(self, tx: AsyncConnection, known: KeyTaken, submission: Submission) -> ClosedSince | None:
        """Append the closing of a case imported open, and give its key the closed row's fingerprint, so the
        next run finds it as it is; nothing when a racing run did it first or the case is resolved already."""
        imported = submission.imported
        assert imported is not None
        if not await refingerprint(tx, submission.idempotency_key, known.fingerprint, submission.fingerprint):
            return None
        stream = await self._writer.store.read_stream(tx, known.case_id)
        if any(isinstance(recorded.data, CaseResolved) for recorded in stream):
            return None
        at = imported.closed_at or self._started_at
        metadata = EventMetadata(correlation_id=uuid7(), actor=submission.actor, channel=submission.request.channel)
        append = StreamAppend(known.case_id, len(stream), [_resolved(imported, at)], metadata, occurred_at=at)
        await self._writer.store.append_many(tx, [append])
        return ClosedSince()


def _kind(reason: str) -> str:
    """A reason as the summary groups it: without the column note, byte offsets and line numbers, so one
    problem is one line."""
    return _WHERE.sub(lambda found: f"{found[1]} …", reason.split(" (column ", 1)[0])


_WHERE = re.compile(r"(byte offset|on line) \d+")
