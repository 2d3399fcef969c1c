"""Accepting a request: one transaction records the key, the sealed contact and CaseSubmitted (for a group of them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow import tracking
from civicflow.apikeys import actor
from civicflow.events import (
    CaseRecategorised,
    CaseSubmitted,
    EventMetadata,
    ImportedFrom,
    current_service_code,
    stands_resolved,
)
from civicflow.eventstore import ConcurrencyConflict, EventStore, StreamAppend
from civicflow.ids import uuid7
from civicflow.pii import ContactVault
from services.intake.domain import ServiceRequest
from services.intake.group_commit import GroupCommitter

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Accepted:
    case_id: UUID
    tracking_number: str
    submitted_at: datetime
    replayed: bool


class IdempotencyKeyReused(Exception):
    """The key was already used for a different request."""


class NoFreeTrackingNumber(RuntimeError):
    """Every draw hit a number already taken: with a random source this means the space is nearly full."""


# A draw collides with chance (cases so far) / 1.07e9, so eight collisions in a row mean something is wrong.
TRACKING_NUMBER_DRAWS = 8


@dataclass(frozen=True)
class Submission:
    """One request to record: a caller's, queued for a group commit, or a past one the history import brings."""

    request: ServiceRequest
    idempotency_key: str
    fingerprint: str
    actor: str  # taken in the caller's call: the calling client is a contextvar the flusher task does not see
    submitted_at: datetime | None = None  # an imported request's original time; None: when it is recorded
    imported: ImportedFrom | None = None


# What else to append to a new case after its CaseSubmitted (given as its append), in the same statement.
FollowUp = Callable[[Submission, StreamAppend], list[StreamAppend]]

_CLAIM_MANY = text(
    "INSERT INTO intake.requests (idempotency_key, request_hash, case_id, tracking_number, submitted_at)"
    " SELECT * FROM unnest(CAST(:k AS text[]), CAST(:h AS text[]), CAST(:c AS uuid[]), CAST(:t AS text[]),"
    " CAST(:s AS timestamptz[]))"
    " ON CONFLICT DO NOTHING RETURNING case_id"
)


class CaseWriter:
    """Records accepted requests in the caller's transaction: each key claimed with a fresh tracking number,
    the contact sealed, every CaseSubmitted in one `append_many`. Shared by the live group commit and the
    history import, so an imported case is recorded exactly as a live one is."""

    def __init__(
        self, store: EventStore, vault: ContactVault, issue_number: Callable[[], str] = tracking.issue
    ) -> None:
        self._store = store
        self._vault = vault
        self._issue_number = issue_number

    @property
    def store(self) -> EventStore:
        return self._store

    async def record(
        self, tx: AsyncConnection, group: Sequence[Submission], follow_up: FollowUp | None = None
    ) -> list[Accepted | Exception]:
        """Every submission of the group: its Accepted (replayed for a key already answered) or why it was
        refused (reused key, no free number; it wrote nothing and does not stop the others). `follow_up`
        adds events to append after a new case's CaseSubmitted, in the same statement."""
        outcomes: list[Accepted | Exception] = []
        appends: list[StreamAppend] = []
        claimed = await self._claim_many(tx, group)
        for submission, (draft, won) in zip(group, claimed, strict=True):
            try:
                accepted = draft if won else await self._claim(tx, submission, draft.tracking_number)
            except (IdempotencyKeyReused, NoFreeTrackingNumber) as exc:
                outcomes.append(exc)
                continue
            outcomes.append(accepted)
            if not accepted.replayed:
                submitted = await self._case_submitted(tx, submission, accepted)
                appends.append(submitted)
                if follow_up is not None:
                    appends.extend(follow_up(submission, submitted))
        await self._store.append_many(tx, appends)
        return outcomes

    async def _claim_many(self, tx: AsyncConnection, group: Sequence[Submission]) -> list[tuple[Accepted, bool]]:
        """One statement claims every key that is free with a number not yet taken: each draft answer, and
        whether it was claimed. The others (a key used before, one repeated in the group, a number taken)
        are settled one by one by `_claim`, starting with the number drawn here."""
        if not group:
            return []
        drafts = [
            Accepted(uuid7(), self._issue_number(), submission.submitted_at or datetime.now(UTC), replayed=False)
            for submission in group
        ]
        rows = await tx.execute(
            _CLAIM_MANY,
            {
                "k": [s.idempotency_key for s in group],
                "h": [s.fingerprint for s in group],
                "c": [d.case_id for d in drafts],
                "t": [d.tracking_number for d in drafts],
                "s": [d.submitted_at for d in drafts],
            },
        )
        won = {row.case_id for row in rows}
        return [(draft, draft.case_id in won) for draft in drafts]

    async def _claim(self, tx: AsyncConnection, submission: Submission, drawn: str | None = None) -> Accepted:
        """Record the key with a fresh tracking number (`drawn` first, when given), or find the answer the key
        was given before (also earlier in this same group: the transaction sees its own rows)."""
        key, fingerprint = submission.idempotency_key, submission.fingerprint
        case_id, submitted_at = uuid7(), submission.submitted_at or datetime.now(UTC)
        for attempt in range(TRACKING_NUMBER_DRAWS):
            number = drawn if attempt == 0 and drawn else self._issue_number()
            # No conflict target: a taken key and a taken tracking number both insert nothing.
            claimed = (
                await tx.execute(
                    text(
                        "INSERT INTO intake.requests"
                        " (idempotency_key, request_hash, case_id, tracking_number, submitted_at)"
                        " VALUES (:k, :h, :c, :t, :s) ON CONFLICT DO NOTHING RETURNING case_id"
                    ),
                    {"k": key, "h": fingerprint, "c": case_id, "t": number, "s": submitted_at},
                )
            ).first()
            if claimed is not None:
                return Accepted(case_id, number, submitted_at, replayed=False)
            row = (
                await tx.execute(
                    text(
                        "SELECT request_hash, case_id, tracking_number, submitted_at"
                        " FROM intake.requests WHERE idempotency_key = :k"
                    ),
                    {"k": key},
                )
            ).first()
            if row is None:  # the key is free, so the number was taken: draw another
                log.info("tracking number already taken; drawing another")
                continue
            # the key was used before (or by a racing retry that committed first)
            if row.request_hash != fingerprint:
                raise IdempotencyKeyReused(
                    "this idempotency key was already used for a different request; use a new key"
                )
            return Accepted(row.case_id, row.tracking_number, row.submitted_at, replayed=True)
        raise NoFreeTrackingNumber(
            f"{TRACKING_NUMBER_DRAWS} tracking numbers drawn in a row were all taken; check that"
            " civicflow.tracking.issue draws at random, then try the request again"
        )

    async def _case_submitted(self, tx: AsyncConnection, submission: Submission, accepted: Accepted) -> StreamAppend:
        request = submission.request
        contact = request.contact
        sealed = await self._vault.seal(tx, accepted.case_id, contact) if contact else None
        event = CaseSubmitted(
            tracking_number=accepted.tracking_number,
            service_code=request.service_code,
            description=request.description,
            location=request.location,
            submitted_at=accepted.submitted_at,
            sealed_contact=sealed,
            preferred_channel=request.preferred_channel,
            language=request.language,
            updates=request.updates,
            has_email=bool(contact and contact.email),
            attributes=request.attributes,
            flags=request.flags,
            imported=submission.imported,
        )
        metadata = EventMetadata(correlation_id=uuid7(), actor=submission.actor, channel=request.channel)
        return StreamAppend(accepted.case_id, 0, [event], metadata, occurred_at=accepted.submitted_at)


@dataclass(frozen=True)
class KeyTaken:
    fingerprint: str  # of the request the key was claimed for
    case_id: UUID


async def keys_taken(tx: AsyncConnection, keys: Sequence[str]) -> dict[str, KeyTaken]:
    """Which of these idempotency keys were claimed already, with the fingerprint of the request each was
    claimed for and its case (one statement for a whole batch)."""
    rows = await tx.execute(
        text(
            "SELECT idempotency_key, request_hash, case_id FROM intake.requests"
            " WHERE idempotency_key = ANY(CAST(:k AS text[]))"
        ),
        {"k": list(keys)},
    )
    return {row.idempotency_key: KeyTaken(row.request_hash, row.case_id) for row in rows}


async def refingerprint(tx: AsyncConnection, key: str, was: str, now: str) -> bool:
    """Give a claimed key the fingerprint of its request as it now stands (an imported request the old system
    closed since); False when the key no longer has fingerprint `was` (a racing run changed it first)."""
    changed = await tx.execute(
        text("UPDATE intake.requests SET request_hash = :now WHERE idempotency_key = :k AND request_hash = :was"),
        {"k": key, "was": was, "now": now},
    )
    return bool(changed.rowcount)


class Intake:
    """Accepts requests in groups: those arriving within `group_window_s` of each other (at most `max_group`)
    share one transaction, and each caller is answered once it has committed (group_commit.py)."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        vault: ContactVault,
        issue_number: Callable[[], str] = tracking.issue,
        group_window_s: float = 0.002,
        max_group: int = 64,
    ) -> None:
        self._engine = engine
        self._writer = CaseWriter(store, vault, issue_number)
        self._committer: GroupCommitter[Submission, Accepted] = GroupCommitter(
            self._write_group, group_window_s, max_group
        )

    async def submit(
        self, request: ServiceRequest, idempotency_key: str | None, placed: ServiceRequest | None = None
    ) -> Accepted:
        """Record the request (`placed`: as the geocoder placed it, if it did); returns only once CaseSubmitted is
        committed. A known key replays its answer. The key's fingerprint is of the request as given, before
        placing: a retry after the address file changed is the same request, not a different one."""
        key = idempotency_key or f"generated:{uuid7()}"
        fingerprint = request.fingerprint(key)
        return await self._committer.submit(Submission(placed or request, key, fingerprint, actor("intake")))

    async def close(self) -> None:
        """Take no more requests; return once every queued one is answered."""
        await self._committer.close()

    async def _write_group(self, group: Sequence[Submission]) -> list[Accepted | Exception]:
        """Every request of the group in one transaction: claims, sealed contacts, then all CaseSubmitted at once.
        A request refused for itself (reused key, no free number) wrote nothing and does not stop the others."""
        async with self._engine.begin() as tx:
            outcomes = await self._writer.record(tx, group)
        for submission, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Accepted) and not outcome.replayed:
                log.info(
                    "case submitted",
                    case_id=str(outcome.case_id),
                    service_code=submission.request.service_code,
                    group=len(group),
                )
        return outcomes


class CaseNotFound(LookupError):
    pass


class NothingToChange(ValueError):
    pass


async def recategorise(
    engine: AsyncEngine, store: EventStore, tracking_number: str, service_code: str, reason: str, attempts: int = 3
) -> str:
    """Record a call-taker's correction of the service type; returns the code it had before.
    A router or notifier appending to the case at the same moment makes us re-read and try again."""
    for attempt in range(1, attempts + 1):
        try:
            return await _recategorise_once(engine, store, tracking_number, service_code, reason)
        except ConcurrencyConflict:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


async def _recategorise_once(
    engine: AsyncEngine, store: EventStore, tracking_number: str, service_code: str, reason: str
) -> str:
    async with engine.begin() as tx:
        case_id = (
            await tx.execute(
                text("SELECT case_id FROM intake.requests WHERE tracking_number = :t"), {"t": tracking_number}
            )
        ).scalar_one_or_none()
        if case_id is None:
            raise CaseNotFound(f"no request with tracking number {tracking_number}")
        stream = await store.read_stream(tx, case_id)
        if stands_resolved(e.data for e in stream):
            raise NothingToChange("the case is already resolved; take a new request instead")
        previous = current_service_code(e.data for e in stream) or ""
        if previous == service_code:
            raise NothingToChange(f"the case is already {service_code}")
        change = CaseRecategorised(service_code=service_code, previous_service_code=previous, reason=reason)
        metadata = EventMetadata(
            correlation_id=stream[0].metadata.correlation_id, actor=actor("intake"), channel="phone"
        )
        await store.append(tx, case_id, stream[-1].version, [change], metadata)
    log.info("case recategorised", case_id=str(case_id), service_code=service_code)
    return previous
