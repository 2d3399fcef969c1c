"""A resident's change of mind: checked field by field, and followed by later stages' messages."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from civicflow import tracking
from civicflow.events import CaseResolved, CaseSubmitted, PreferencesChanged
from services.notifier.domain import stage_facts
from services.notifier.preferences import Preferences, change_violations, preferences_of
from tests.factories import recorded

AT = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
NUMBER = tracking.number_for(123456789)


def test_later_stages_follow_the_latest_change_and_earlier_ones_do_not() -> None:
    case_id = uuid4()
    submitted = CaseSubmitted(
        tracking_number=NUMBER, service_code="POTHOLE", description="", submitted_at=AT, preferred_channel="email"
    )
    stream = [
        recorded(submitted, case_id=case_id, version=1, at=AT),
        recorded(PreferencesChanged(preferred_channel="sms"), case_id=case_id, version=2, at=AT),
        recorded(PreferencesChanged(language="es", updates="outcome"), case_id=case_id, version=3, at=AT),
        recorded(CaseResolved(resolution="done", resolved_at=AT), case_id=case_id, version=4, at=AT),
    ]
    assert preferences_of(stream) == Preferences("sms", "es", "outcome")
    facts = stage_facts(stream[3], stream)
    assert (facts.preferred_channel, facts.language, facts.updates) == ("sms", "es", "outcome")
    first = stage_facts(stream[0], stream)
    assert (first.preferred_channel, first.language, first.updates) == ("email", "en", "all")


def test_a_change_is_checked_field_by_field_without_echoing_what_was_sent() -> None:
    number, problems = change_violations(NUMBER.lower(), PreferencesChanged(language="es"))
    assert (number, problems) == (NUMBER, [])
    _, problems = change_violations("x" * 60, PreferencesChanged(preferred_channel="fax", language="fr\x00"))
    fields = dict(problems)
    assert set(fields) == {"tracking_number", "preferred_channel", "language"}
    assert "\x00" not in "".join(fields.values()) and "fax" not in "".join(fields.values())
    _, nothing = change_violations(NUMBER, PreferencesChanged())
    assert dict(nothing) == {"request": "nothing to change: give a channel, a language or which updates"}
