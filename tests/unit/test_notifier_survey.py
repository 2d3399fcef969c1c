"""The satisfaction survey's pure parts: the signed link token, scores, the question and email in both
languages, when a survey is due, the city file's delays, and a digit read as an answer only while one waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from civicflow.city import ServiceSpec, load_city
from services.notifier.inbound import Reply, Status, Stop, SurveyAnswer, read_inbound
from services.notifier.survey import (
    MAX_TOKEN_CHARS,
    BadScore,
    BadToken,
    SurveyEmails,
    SurveyTokens,
    page,
    parse_score,
    question_text,
    score_in_reply,
    survey_delays,
    survey_due,
    survey_links,
    thanks_text,
)
from services.notifier.survey_delivery import SurveyLinks

KEY = b"k" * 32
SAMPLE_CITY = Path(__file__).parents[2] / "samples" / "city" / "sample_city.yaml"


# --- tokens -------------------------------------------------------------------------------------------


def test_a_token_carries_its_ref_back() -> None:
    tokens = SurveyTokens(KEY)
    ref = tokens.new_ref()
    assert tokens.ref_of(tokens.token(ref)) == ref
    assert len(tokens.token(ref)) <= MAX_TOKEN_CHARS


def test_refs_are_random() -> None:
    tokens = SurveyTokens(KEY)
    assert len({tokens.new_ref() for _ in range(100)}) == 100


def test_a_token_names_no_case() -> None:
    case_id = uuid4()
    token = SurveyTokens(KEY).token(SurveyTokens(KEY).new_ref())
    assert str(case_id) not in token and case_id.hex not in token


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # one character of the signature
        lambda t: ("A" if t[0] != "A" else "B") + t[1:],  # one character of the ref
        lambda t: t.split(".")[0],  # no signature
        lambda t: t.replace(".", ""),
        lambda t: "." + t.split(".")[1],  # no ref
        lambda t: t + "\x00",
        lambda t: t + "é",
        lambda t: "x" * 10_000,
        lambda t: "",
    ],
)
def test_a_tampered_token_is_refused(tamper: object) -> None:
    tokens = SurveyTokens(KEY)
    token = tokens.token(tokens.new_ref())
    with pytest.raises(BadToken):
        tokens.ref_of(tamper(token))  # type: ignore[operator]


def test_a_token_signed_with_another_key_is_refused() -> None:
    theirs = SurveyTokens(b"o" * 32)
    with pytest.raises(BadToken, match="wrong signature"):
        SurveyTokens(KEY).ref_of(theirs.token(theirs.new_ref()))


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        SurveyTokens(b"short")


@given(st.text(max_size=200))
def test_no_arbitrary_text_passes_as_a_token(candidate: str) -> None:
    with pytest.raises(BadToken):
        SurveyTokens(KEY).ref_of(candidate)


# --- scores -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "2", "3", "4", "5"])
def test_scores_one_to_five(raw: str) -> None:
    assert parse_score(raw) == int(raw)


@pytest.mark.parametrize(
    "raw", ["0", "6", "NaN", "nan", "", " 4", "4.0", "-1", "\u0661", "\u0664", "4\x00", "x" * 10_000]
)
def test_other_scores_are_refused(raw: str) -> None:
    with pytest.raises(BadScore, match="one digit from 1 to 5"):
        parse_score(raw)


@pytest.mark.parametrize(("text", "score"), [("4", 4), (" 4 ", 4), ("5.", 5), ("1!", 1), ("0", None), ("45", None)])
def test_a_score_in_a_reply(text: str, score: int | None) -> None:
    assert score_in_reply(text) == score


def test_a_digit_answers_only_a_waiting_survey() -> None:
    assert read_inbound("4", survey_pending=True) == SurveyAnswer(4)
    assert read_inbound(" 5. ", survey_pending=True) == SurveyAnswer(5)
    assert read_inbound("4") == Reply("4")
    assert read_inbound("6", survey_pending=True) == Reply("6")
    assert read_inbound("STOP", survey_pending=True) == Stop()
    assert read_inbound("STATUS", survey_pending=True) == Status()
    assert read_inbound("4 the crew was quick", survey_pending=True) == Reply("4 the crew was quick")


# --- the question ------------------------------------------------------------------------------------


def test_the_question_by_text_in_both_languages() -> None:
    assert question_text("SC-1234", "en") == "311: How did we do on SC-1234? Reply 1 (poor) to 5 (great)."
    assert question_text("SC-1234", "es") == "311: ¿Cómo lo hicimos con SC-1234? Responda de 1 (mal) a 5 (excelente)."
    assert question_text("SC-1234", "fr").startswith("311: How did we do")
    assert thanks_text("SC-1234", "es") == "311 SC-1234: gracias por su respuesta."


@pytest.mark.parametrize(("language", "words"), [("en", "How did we do"), ("es", "¿Cómo lo hicimos")])
def test_the_survey_email_has_five_links(language: str, words: str) -> None:
    links = survey_links("http://notifier.example/", "REF.SIG")
    rendered = SurveyEmails().render("SC-1234", "MISSED_PICKUP", language, links)
    assert words in rendered.subject and "SC-1234" in rendered.subject
    for score in range(1, 6):
        assert f"http://notifier.example/survey/REF.SIG/{score}" in rendered.body
    assert "Missed pickup" in rendered.body


def test_pages_escape_what_they_show() -> None:
    shown = page(200, "thanks", "es", tracking_number="<b>SC</b>", score="4")
    assert "&lt;b&gt;SC&lt;/b&gt;" in shown.html and 'lang="es"' in shown.html and "Gracias" in shown.html


# --- when -------------------------------------------------------------------------------------------------


def test_a_survey_is_due_the_delay_after_resolution() -> None:
    resolved = datetime(2031, 3, 8, 20, 0, tzinfo=UTC)  # across a change of the clocks in Chicago
    assert survey_due(resolved, timedelta(hours=24)) == datetime(2031, 3, 9, 20, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="time zone"):
        survey_due(datetime(2031, 3, 8, 20, 0), timedelta(hours=1))


def test_the_sample_city_asks_a_day_after_and_some_services_not_at_all() -> None:
    city = load_city(SAMPLE_CITY)
    assert city.survey_delay("POTHOLE") == timedelta(hours=24)
    assert city.survey_delay("SNOW_ICE") == timedelta(hours=4)
    assert city.survey_delay("ANIMAL_BITE") is None
    assert city.survey_delay("NOT_IN_THE_CATALOGUE") == timedelta(hours=24)


def test_a_city_without_a_default_asks_nothing(tmp_path: Path) -> None:
    raw = yaml.safe_load(SAMPLE_CITY.read_text())
    del raw["survey_after_hours"]
    raw["service_area"] = None
    (tmp_path / "city.yaml").write_text(yaml.safe_dump(raw))
    city = load_city(tmp_path / "city.yaml")
    assert city.survey_delay("POTHOLE") is None
    assert city.survey_delay("SNOW_ICE") == timedelta(hours=4)


@pytest.mark.parametrize("value", [0, -1, 1.5, float("nan"), "24h", "", "None", True, 10**9])
def test_a_wrong_survey_delay_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(ValidationError, match="survey_after_hours"):
        ServiceSpec.model_validate({"name": "x", "group": "g", "survey_after_hours": value})


# --- the link handler refuses before the database ---------------------------------------------------


class _NoDatabase:
    def begin(self) -> object:
        raise AssertionError("a refused link must not reach the database")


@given(st.text(max_size=300), st.text(max_size=20))
async def test_no_arbitrary_link_reaches_the_database(token: str, score: str) -> None:
    links = SurveyLinks(_NoDatabase(), object(), SurveyTokens(KEY))  # type: ignore[arg-type]
    for shown in (await links.shown(token, score), await links.answered(token, score)):
        assert shown.status == 404 and "survey link" in shown.html


@pytest.mark.parametrize("score", ["0", "6", "NaN", "", "4" * 10_000, "\x00"])
async def test_a_signed_link_with_a_wrong_score_is_400_before_the_database(score: str) -> None:
    tokens = SurveyTokens(KEY)
    links = SurveyLinks(_NoDatabase(), object(), tokens)  # type: ignore[arg-type]
    token = tokens.token(tokens.new_ref())
    for shown in (await links.shown(token, score), await links.answered(token, score)):
        assert shown.status == 400 and "1 to 5" in shown.html


def test_an_override_shortens_every_survey_but_adds_none() -> None:
    city = load_city(SAMPLE_CITY)
    delays = survey_delays(city.survey_delay, 2)
    assert delays("POTHOLE") == delays("NO_HEAT") == timedelta(seconds=2)
    assert delays("ANIMAL_BITE") is None
    assert survey_delays(city.survey_delay, None)("NO_HEAT") == timedelta(hours=72)


@pytest.mark.parametrize("value", [0, "soon", float("nan"), [24]])
def test_a_wrong_city_wide_survey_delay_is_refused_naming_the_field(tmp_path: Path, value: object) -> None:
    raw = yaml.safe_load(SAMPLE_CITY.read_text())
    raw["survey_after_hours"] = value
    raw["service_area"] = None
    (tmp_path / "city.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="survey_after_hours"):
        load_city(tmp_path / "city.yaml")
