"""A resident's change of mind about hearing back (channel, language, which stages), recorded on the case as
PreferencesChanged; later stages' messages follow it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.events import CaseSubmitted, EventMetadata, PreferencesChanged, RecordedEvent
from civicflow.eventstore import EventStore
from civicflow.pii import ContactVault

ACTOR = "notifier"
CHANNELS = ("email", "sms", "voice", "none")
LANGUAGES = ("en", "es")
UPDATES = ("all", "outcome")
MAX_TRACKING_NUMBER_CHARS = 32


class CaseNotFound(LookupError):
    pass


class CannotReach(ValueError):
    """The chosen channel needs contact details the resident did not give."""


@dataclass(frozen=True)
class Preferences:
    preferred_channel: str | None
    language: str
    updates: str


def preferences_of(stream: Sequence[RecordedEvent]) -> Preferences:
    """The preferences in force after the case's events: as submitted, then each change in order."""
    current = Preferences(None, "en", "all")
    for recorded in stream:
        data = recorded.data
        if isinstance(data, CaseSubmitted):
            current = Preferences(data.preferred_channel, data.language, data.updates)
        elif isinstance(data, PreferencesChanged):
            current = Preferences(
                data.preferred_channel or current.preferred_channel,
                data.language or current.language,
                data.updates or current.updates,
            )
    return current


def change_violations(tracking_number: str, change: PreferencesChanged) -> tuple[str, list[tuple[str, str]]]:
    """The tracking number as issued, and every (field, what is wrong) with the request."""
    problems = []
    number = ""
    if len(tracking_number) > MAX_TRACKING_NUMBER_CHARS:
        problems.append(("tracking_number", "a tracking number is 7 letters and digits, like 4K7Q-M2D"))
    else:
        try:
            number = tracking.parse(tracking_number)
        except tracking.InvalidTrackingNumber as exc:
            problems.append(("tracking_number", str(exc)))
    if change.preferred_channel is not None and change.preferred_channel not in CHANNELS:
        problems.append(("preferred_channel", "give email, sms, voice or none"))
    if change.language is not None and change.language not in LANGUAGES:
        problems.append(("language", "the resident hears back in en (English) or es (Spanish); give one of them"))
    if change.preferred_channel is None and change.language is None and change.updates is None:
        problems.append(("request", "nothing to change: give a channel, a language or which updates"))
    return number, problems


async def set_preferences(
    engine: AsyncEngine, store: EventStore, vault: ContactVault, tracking_number: str, change: PreferencesChanged
) -> Preferences:
    """Record the change on the case; CaseNotFound, or CannotReach when the channel needs a phone number or
    an email address the resident did not give (or asked us to forget)."""
    async with engine.begin() as tx:
        case_id = (
            await tx.execute(
                text(
                    "SELECT case_id FROM events.case_events"
                    " WHERE type = 'CaseSubmitted' AND data->>'tracking_number' = :t"
                ),
                {"t": tracking_number},
            )
        ).scalar_one_or_none()
        if case_id is None:
            raise CaseNotFound(f"no request with tracking number {tracking_number}")
        stream = await store.read_stream(tx, case_id)
        submitted = next(e.data for e in stream if isinstance(e.data, CaseSubmitted))
        if change.preferred_channel in ("email", "sms", "voice"):
            contact = await vault.unseal(tx, case_id, submitted.sealed_contact) if submitted.sealed_contact else None
            needs_phone = change.preferred_channel != "email"
            if contact is None or not (contact.phone if needs_phone else contact.email):
                what = "phone number" if needs_phone else "email address"
                raise CannotReach(
                    f"the resident gave no {what} with this request; submit a new request with one to hear"
                    f" by {change.preferred_channel}"
                )
        metadata = EventMetadata(correlation_id=stream[0].metadata.correlation_id, actor=ACTOR, channel="phone")
        await store.append(tx, case_id, stream[-1].version, [change], metadata)
    return preferences_of([*stream, stream[-1].model_copy(update={"data": change})])
