"""What a resident's text back asks for (STOP, START, HELP, STATUS, a tracking number, a reply), the answers
in both languages within two segments, the number known only by a keyed digest, and the reply's timeline
line without its words."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from civicflow.events import CaseNeedsTriage, CaseResolved, CaseRouted, CaseSubmitted, ResidentReplied
from services.notifier.inbound import (
    ANSWERS,
    Help,
    Reply,
    Start,
    Status,
    Stop,
    answer,
    case_status,
    plain_reply,
    read_inbound,
)
from services.notifier.sms import MAX_SEGMENTS, segments
from services.notifier.texting import number_digest
from services.query.projection import apply
from tests.factories import recorded

AT = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
CHICAGO = ZoneInfo("America/Chicago")


@pytest.mark.parametrize("body", ["STOP", "stop", "  Stop. ", "UNSUBSCRIBE", "cancel", "End", "QUIT!", "stopall"])
def test_the_stop_words_stop_texts(body: str) -> None:
    assert read_inbound(body) == Stop()


@pytest.mark.parametrize(
    ("body", "intent"),
    [
        ("START", Start()),
        ("unstop", Start()),
        ("help", Help()),
        ("Ayuda", Help()),
        ("status", Status()),
        ("3nqk-8n1", Status("3NQK-8N1")),
        (" 3NQK8N1 ", Status("3NQK-8N1")),
        ("please stop the noise", Reply("please stop the noise")),
        ("3NQK-8N0", Reply("3NQK-8N0")),  # a mistyped number is words for the department, not a lookup
        ("the bins\x00 are\r\nstill\u200b out", Reply("the bins are still out")),
        ("", Reply("")),
    ],
)
def test_what_a_text_asks_for(body: str, intent: object) -> None:
    assert read_inbound(body) == intent


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000))
def test_any_text_is_read_as_something_and_a_reply_is_plain_and_bounded(body: str) -> None:
    intent = read_inbound(body)
    if isinstance(intent, Reply):
        assert len(intent.text) <= 1600
        assert all(ch.isprintable() for ch in intent.text)
        assert intent.text == plain_reply(intent.text)


def test_the_number_is_known_only_by_a_keyed_digest() -> None:
    number = "+13125550142"
    digest = number_digest(number, b"one key")
    assert digest != number_digest(number, b"another key")
    assert digest == number_digest(number, b"one key")
    assert digest != hashlib.sha256(number.encode()).hexdigest()  # keyed: no dictionary of numbers finds it
    assert "3125550142" not in digest and len(digest) == 64


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("kind", sorted(ANSWERS["en"]))
def test_every_answer_fits_two_segments(language: str, kind: str) -> None:
    words = answer(
        kind,
        language,
        tracking_number="4K7Q-M2D",
        department="Department of Transportation, Bureau of Street Lighting, Signals and Electrical Operations",
        due_on="lun 30 nov 17:00",
        resolution="Crew replaced the photocell and the ballast and tested the fixture at dusk. " * 10,
    )
    assert segments(words) <= MAX_SEGMENTS
    assert set(ANSWERS[language]) == set(ANSWERS["en"])


def test_the_status_says_where_the_case_stands_in_its_resident_language() -> None:
    case_id = uuid4()
    submitted = CaseSubmitted(
        tracking_number="4K7Q-M2D", service_code="POTHOLE", description="", submitted_at=AT, language="es"
    )
    stream = [recorded(submitted, case_id=case_id, version=1, at=AT)]
    assert case_status(stream, CHICAGO) == "311 4K7Q-M2D: recibida, aún sin departamento."
    triage = CaseNeedsTriage(queue="triage", reason="no rule", rule_set_version="v1")
    assert "centro de llamadas" in case_status([*stream, recorded(triage, case_id=case_id, version=2, at=AT)], CHICAGO)
    routed = CaseRouted(
        department_id="streets",
        department_name="Streets",
        priority="normal",
        due_at=datetime(2026, 11, 30, 23, tzinfo=UTC),
        rule_id="r",
        rule_set_version="v1",
        time_zone="America/Chicago",
    )
    stream.append(recorded(routed, case_id=case_id, version=2, at=AT))
    assert case_status(stream, CHICAGO) == "311 4K7Q-M2D: con Streets, fecha prevista lun 30 nov 17:00."
    stream.append(
        recorded(CaseResolved(resolution="Bache rellenado.", resolved_at=AT), case_id=case_id, version=3, at=AT)
    )
    assert case_status(stream, CHICAGO) == "311 4K7Q-M2D: resuelta. Bache rellenado."


def test_a_reply_shows_on_the_timeline_without_its_words() -> None:
    case_id = uuid4()
    submitted = CaseSubmitted(tracking_number="4K7Q-M2D", service_code="POTHOLE", description="", submitted_at=AT)
    record, _ = apply(None, recorded(submitted, case_id=case_id, version=1, at=AT))
    _, line = apply(record, recorded(ResidentReplied(text="the bins are still out"), case_id=case_id, version=2, at=AT))
    assert line is not None
    assert (line.stage, line.detail) == ("resident_replied", "the resident replied by text")
