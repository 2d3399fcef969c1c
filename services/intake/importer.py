"""Bringing a city's past requests in (`civicflow import`): each row of an old system's export through intake's
own validation, recorded in batches with its original times, skipping what an earlier run already brought in.

A batch is one transaction (the CaseWriter the live path uses), so an interrupted import has committed whole
batches only, and running the same command again goes on where it stopped: each case's idempotency key is
`import:<source>:<external id>`, and a batch's keys already taken are looked up in one statement and skipped.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.city import CityProfile
from civicflow.events import CaseResolved, ImportedFrom
from civicflow.eventstore import ConcurrencyConflict, StreamAppend
from civicflow.geocode import Geocoder
from civicflow.history import HistoryMapping
from civicflow.history_export import HistoricalRow, RowRefused, field_column
from services.intake.domain import ServiceRequest, place, validate_request
from services.intake.handlers import Accepted, CaseWriter, IdempotencyKeyReused, Submission, keys_taken

log = structlog.get_logger(__name__)

BATCH_SIZE = 500
# What the database may answer about one row's values (a value PostgreSQL will not store, a unique key).
_ONE_ROWS_FAULT = (DataError, IntegrityError, ConcurrencyConflict)
_KEY_CHARS = 128  # intake's limit for an idempotency key


@dataclass
class ImportSummary:
    """What an import run did: rows read, cases recorded (and how many closed), rows an earlier run had
    already brought in, and the rows refused by field and reason."""

    read: int = 0
    accepted: int = 0
    closed: int = 0
    already_imported: int = 0
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


def admit(
    row: HistoricalRow, mapping: HistoryMapping, city: CityProfile | None, geocoder: Geocoder
) -> Submission | list[RowRefused]:
    """A past request as intake accepts it (placed on the map, keeping its original time), or every reason it
    is not, each naming the field and the column it came from."""
    checked = validate_request(row.request, city)
    if isinstance(checked, list) and checked and all(name == "contact.phone" for name, _ in checked):
        # A past request's resident is never called or texted: a number the city cannot read is left out
        # rather than the request with it.
        contact = {k: v for k, v in row.request["contact"].items() if k != "phone"}
        checked = validate_request({**row.request, "contact": contact} if contact else _without_contact(row), city)
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
        checked.fingerprint(key),  # of the row as given, before placing: the address file may change between runs
        actor=f"import:{mapping.source}",
        submitted_at=row.submitted_at,
        imported=imported,
    )


def _without_contact(row: HistoricalRow) -> dict[str, Any]:
    return {k: v for k, v in row.request.items() if k != "contact"}


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
    when = "" if imported.closed_at else " (its closing time was not in the export)"
    resolution = f"closed in {imported.source} before the city moved to civicflow{when}"
    resolved = CaseResolved(resolution=resolution, resolved_at=at)
    return [StreamAppend(submitted.case_id, None, [resolved], submitted.metadata, occurred_at=at)]


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
    ) -> None:
        self._engine = engine
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
            else:
                assert submission.imported is not None
                if isinstance(outcome, IdempotencyKeyReused):
                    reason = (
                        "a request with this external id is already imported with other details (an earlier row,"
                        " or an earlier import of a changed row); only the first is kept"
                    )
                else:
                    reason = f"the database refused it ({type(outcome).__name__})"
                self._refuse(
                    summary, [RowRefused(row_number, submission.imported.external_id, "row", reason)], on_refused
                )

    async def _write(self, batch: Sequence[tuple[int, Submission]]) -> list[Accepted | Exception | None]:
        """One transaction: the batch's keys already taken are skipped (None), or refused when they were taken
        for another request (the row changed since, or another row has its id); the others are recorded."""
        async with self._engine.begin() as tx:
            taken = await keys_taken(tx, [s.idempotency_key for _, s in batch])
            fresh = [s for _, s in batch if s.idempotency_key not in taken]
            recorded = iter(await self._writer.record(tx, fresh, follow_up=closing))
        outcomes: list[Accepted | Exception | None] = []
        for _, submission in batch:
            if submission.idempotency_key not in taken:
                outcomes.append(next(recorded))
            elif taken[submission.idempotency_key] != submission.fingerprint:
                outcomes.append(IdempotencyKeyReused())
            else:
                outcomes.append(None)
        return outcomes


def _kind(reason: str) -> str:
    """A reason as the summary groups it: without the column note and byte offsets, so one problem is one line."""
    return re.sub(r"byte offset \d+", "byte offset …", reason.split(" (column ", 1)[0])
