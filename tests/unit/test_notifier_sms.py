"""Texts to residents: segment counting (GSM-7 and UCS-2), and every stage's text in English and Spanish
fitting in two segments however long the department's name or the resolution, tracking number whole."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.domain import StageFacts
from services.notifier.sms import (
    MAX_SEGMENTS,
    TextDoesNotFit,
    TextTemplates,
    encoding_of,
    fit,
    look_alike,
    segments,
    shortened,
)

CHICAGO = ZoneInfo("America/Chicago")
STAGES = ("submitted", "routed", "rerouted", "resolved")


@pytest.mark.parametrize(
    ("text", "encoding", "count"),
    [
        ("", "GSM-7", 0),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("{" * 80, "GSM-7", 1),  # an extension character takes two septets
        ("{" * 81, "GSM-7", 2),
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 3),  # the escape pair does not straddle two segments
        ("ñé¿¡ÄÖÜ" * 20, "GSM-7", 1),  # Spanish letters GSM-7 has
        ("á" * 70, "UCS-2", 1),
        ("á" * 71, "UCS-2", 2),
        ("á" * 134, "UCS-2", 2),
        ("á" * 135, "UCS-2", 3),
        ("🙂" * 35, "UCS-2", 1),  # outside the BMP: two code units each
        ("a" * 66 + "🙂" + "a" * 66, "UCS-2", 3),  # the surrogate pair does not straddle two segments
    ],
)
def test_segments_are_counted_as_handsets_split_them(text: str, encoding: str, count: int) -> None:
    assert encoding_of(text) == encoding
    assert segments(text) == count


def test_look_alikes_turn_spanish_into_gsm7_and_shortening_cuts_at_a_word() -> None:
    assert encoding_of(look_alike("Número de seguimiento, cómo va… «sí»")) == "UCS-2"  # « has no look-alike
    assert encoding_of(look_alike("Número de seguimiento, cómo va…")) == "GSM-7"
    assert shortened("filled the pothole and swept", 20) == "filled the..."
    assert shortened("short", 20) == "short"


def facts(stage: str, department: str, resolution: str, due: bool = True) -> StageFacts:
    return StageFacts(
        case_id=uuid4(),
        stage=stage,  # type: ignore[arg-type]
        tracking_number="4K7Q-M2D",
        service_code="STREET_LIGHT_OUT_ON_A_RESIDENTIAL_BLOCK",
        submitted_at=datetime(2026, 11, 23, 15, tzinfo=UTC),
        sealed_contact="sealed",
        preferred_channel="sms",
        department=department if stage in ("routed", "rerouted", "resolved") else None,
        due_at=datetime(2026, 11, 30, 23, tzinfo=UTC) if due else None,
        time_zone="America/Chicago",
        resolution=resolution if stage == "resolved" else None,
    )


LONG_DEPARTMENT = "Department of Transportation \u2013 Bureau of Street Lighting, Signals and Electrical Operations"
LONG_RESOLUTION = "Crew replaced the photocell and the ballast, tested the fixture at dusk and cleared it. " * 8


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_fits_two_segments_in_both_languages_with_long_names(language: str, stage: str) -> None:
    text = TextTemplates(CHICAGO).render(facts(stage, LONG_DEPARTMENT, LONG_RESOLUTION), language)
    assert text.language == language
    assert segments(text.body) <= MAX_SEGMENTS, text.body
    assert "4K7Q-M2D" in text.body


def test_short_texts_keep_their_accents_and_say_the_due_date_in_the_resident_language() -> None:
    templates = TextTemplates(CHICAGO)
    spanish = templates.render(facts("routed", "Parques", ""), "es").body
    assert "pasó a Parques" in spanish and "lun 30 nov 17:00" in spanish
    english = templates.render(facts("routed", "Parks", ""), "en").body
    assert "went to Parks" in english and "Mon 30 Nov 17:00" in english
    assert "No date set yet" in templates.render(facts("routed", "Parks", "", due=False), "en").body
    assert templates.render(facts("submitted", "", ""), "fr").language == "en"  # no French templates: English


def test_the_resolution_is_shortened_before_the_department() -> None:
    body = TextTemplates(CHICAGO).render(facts("resolved", "Streets", LONG_RESOLUTION), "en").body
    assert body.startswith("311 4K7Q-M2D: your request is resolved. Crew replaced the photocell")
    assert body.endswith("...")


def test_a_template_with_no_room_says_so() -> None:
    with pytest.raises(TextDoesNotFit, match="shorten its fixed words"):
        fit(lambda v: "x" * 400 + v["a"], {"a": "y"}, ("a",))


@settings(max_examples=150, deadline=None)
@given(
    department=st.text(max_size=300),
    resolution=st.text(max_size=600),
    stage=st.sampled_from(STAGES),
    language=st.sampled_from(["en", "es"]),
)
def test_any_department_or_resolution_fits(department: str, resolution: str, stage: str, language: str) -> None:
    body = TextTemplates(CHICAGO).render(facts(stage, department, resolution), language).body
    assert segments(body) <= MAX_SEGMENTS
    assert "4K7Q-M2D" in body
