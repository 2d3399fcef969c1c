"""Calls to residents: each stage's TwiML in English and Spanish, the tracking number spoken symbol by symbol,
what a department wrote escaped for XML, and the resolution's menu (1 again, 2 not fixed, else once more)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.domain import Stage, StageFacts
from services.notifier.voice import GATHER_PATH, CallScripts, menu_choice, spelt

CHICAGO = ZoneInfo("America/Chicago")
PUBLIC = "http://notifier.example.test"
STAGES: tuple[Stage, ...] = ("submitted", "routed", "rerouted", "resolved")


def facts(stage: Stage, language: str = "en", resolution: str | None = "Filled the pothole.") -> StageFacts:
    return StageFacts(
        case_id=uuid4(),
        stage=stage,
        tracking_number="4K7Q-M2D",
        service_code="POTHOLE",
        submitted_at=datetime(2026, 11, 30, 15, tzinfo=UTC),
        sealed_contact="sealed",
        preferred_channel="voice",
        department="Streets and Sanitation",
        due_at=datetime(2026, 12, 2, 23, tzinfo=UTC),
        resolution=resolution if stage == "resolved" else None,
        resolved_at=datetime(2026, 12, 1, 18, tzinfo=UTC) if stage == "resolved" else None,
        language=language,
    )


def said(twiml: str) -> list[tuple[str, str]]:
    root = ET.fromstring(twiml)
    return [(say.get("language", ""), say.text or "") for say in root.iter("Say")]


def test_a_tracking_number_is_spelt_symbol_by_symbol_in_two_phrases() -> None:
    assert spelt("4K7Q-M2D") == "4 K 7 Q, M 2 D"
    assert spelt("abcd-efg") == "A B C D, E F G"


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(
    ("language", "voice", "words"), [("en", "en-US", "tracking number"), ("es", "es-US", "seguimiento")]
)
def test_every_stage_is_said_in_the_residents_language_with_the_number_spelt(
    stage: Stage, language: str, voice: str, words: str
) -> None:
    script = CallScripts(CHICAGO, PUBLIC).render(facts(stage, language))
    spoken = said(script.twiml)
    assert script.language == language
    assert {lang for lang, _ in spoken} == {voice}
    assert any(words in text for _, text in spoken)
    assert ("4 K 7 Q, M 2 D") in [text for _, text in spoken]
    assert ET.fromstring(script.twiml).find("Hangup") is not None


def test_an_unknown_language_is_spoken_in_english() -> None:
    assert CallScripts(CHICAGO, PUBLIC).render(facts("routed", "fr")).language == "en"


def test_only_the_resolution_offers_the_menu_with_its_case_in_the_action() -> None:
    scripts = CallScripts(CHICAGO, PUBLIC)
    resolved = facts("resolved", "es")
    gather = ET.fromstring(scripts.render(resolved).twiml).find("Gather")
    assert gather is not None and gather.get("numDigits") == "1"
    action = urlsplit(gather.get("action", ""))
    assert f"{action.scheme}://{action.netloc}" == PUBLIC and action.path == GATHER_PATH
    assert parse_qs(action.query) == {"case": [str(resolved.case_id)], "stage": ["resolved"]}
    assert "Marque 2" in " ".join(text for _, text in said(scripts.render(resolved).twiml))
    assert ET.fromstring(scripts.render(facts("routed")).twiml).find("Gather") is None


def test_what_a_department_wrote_is_escaped_and_adds_no_verb() -> None:
    hostile = 'Fixed <Hangup/> & "done" </Say><Dial>+15555550199</Dial>'
    twiml = CallScripts(CHICAGO, PUBLIC).render(facts("resolved", resolution=hostile)).twiml
    root = ET.fromstring(twiml)  # well-formed
    assert root.find("Dial") is None and len(root.findall("Hangup")) == 1
    assert any("&" in text and "done" in text for _, text in said(twiml))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_any_resolution_gives_well_formed_twiml(resolution: str) -> None:
    twiml = CallScripts(CHICAGO, PUBLIC).render(facts("resolved", resolution=resolution)).twiml
    assert ET.fromstring(twiml).find("Gather") is not None


def test_the_menu_answers() -> None:
    scripts = CallScripts(CHICAGO, PUBLIC)
    resolved = facts("resolved")
    assert menu_choice("1", 0) == "repeat" and menu_choice("2", 0) == "disputed"
    assert menu_choice("9", 0) == "unknown" and menu_choice("", 0) == "unknown" and menu_choice("9", 1) == "goodbye"
    again = scripts.answer(resolved, "repeat")
    assert again == scripts.render(resolved).twiml
    disputed = " ".join(text for _, text in said(scripts.answer(resolved, "disputed")))
    assert "sent your request back to Streets and Sanitation" in disputed
    unknown = ET.fromstring(scripts.answer(resolved, "unknown"))
    gather = unknown.find("Gather")
    assert gather is not None and parse_qs(urlsplit(gather.get("action", "")).query)["repeat"] == ["1"]
    assert ET.fromstring(scripts.answer(resolved, "goodbye")).find("Gather") is None
