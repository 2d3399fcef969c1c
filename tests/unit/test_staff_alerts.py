"""Staff alerts without I/O: which routing decisions alert the on-call contacts, what the alert says (no closer
than the block), how ACK is read, and the city file's on-call contacts checked (bad numbers refused, saying
where, never quoting the number)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from civicflow.city import OnCallContact, load_city
from civicflow.cli import app
from civicflow.events import (
    AlertAcknowledged,
    CaseRouted,
    CaseSubmitted,
    EventMetadata,
    ImportedFrom,
    Location,
    RecordedEvent,
    StaffAlerted,
)
from services.notifier.alerts import acknowledged_answer, alert_reason, alert_text, alert_twiml, block_level
from services.notifier.inbound import Ack, Reply, read_inbound
from services.notifier.sms import segments
from services.query.projection import apply
from services.router.main import DEFAULT_CITY
from services.router.rules import RuleSetError, parse_rule_set

runner = CliRunner()


def submitted(flags: list[str] | None = None, imported: bool = False) -> CaseSubmitted:
    return CaseSubmitted(
        tracking_number="SC-000101",
        service_code="POTHOLE",
        description="a hole",
        location=Location(lat=41.88, long=-87.63, address="1234 W Madison St"),
        submitted_at=datetime(2026, 11, 26, 3, 0, tzinfo=UTC),
        flags=flags or [],
        imported=ImportedFrom(source="old", external_id="1", status="open") if imported else None,
    )


def routed(priority: str) -> CaseRouted:
    return CaseRouted(
        department_id="streets",
        department_name="Public Works - Streets",
        priority=priority,
        due_at=datetime(2026, 11, 26, 3, 0, tzinfo=UTC) + timedelta(hours=4),
        rule_id="potholes",
        rule_set_version="test",
    )


@pytest.mark.parametrize(
    ("priority", "flags", "imported", "reason"),
    [
        ("urgent", [], False, "urgent"),
        ("urgent", ["hazard"], False, "urgent"),
        ("normal", ["hazard"], False, "hazard"),
        ("high", ["blocking_traffic"], False, None),
        ("normal", [], False, None),
        ("urgent", ["hazard"], True, None),  # history from the old system alerts no one
    ],
)
def test_who_is_alerted_for_which_decision(priority: str, flags: list[str], imported: bool, reason: str | None) -> None:
    decision = routed(priority)
    assert alert_reason(decision, [submitted(flags, imported), decision]) == reason


def test_a_decision_without_its_submission_alerts_no_one() -> None:
    assert alert_reason(routed("urgent"), []) is None


@pytest.mark.parametrize(
    ("location", "said"),
    [
        (Location(address="1234 W Madison St, Apt 2"), "1200 block of W Madison St"),
        (Location(address="57 Oak Ave"), "0 block of Oak Ave"),
        (Location(address="Main St & Oak Ave"), "Main St & Oak Ave"),
        (Location(lat=41.881234, long=-87.634567, address="Unit 4B 12 Elm"), "41.881, -87.635"),
        (Location(lat=41.881234, long=-87.634567), "41.881, -87.635"),
        (None, "no place given"),
    ],
)
def test_the_alert_says_where_no_closer_than_the_block(location: Location | None, said: str) -> None:
    assert block_level(location) == said


def test_the_alert_names_the_case_the_service_the_block_and_the_code_in_gsm7() -> None:
    words = alert_text("SC-000101", "Pothole", "1200 block of W Madison St", 101, "urgent")
    assert words == "URGENT 311 SC-000101: Pothole at 1200 block of W Madison St - reply ACK 101 to take it"
    assert segments(words) == 1
    hazard = alert_text("SC-000101", "Pothole" * 40, "1200 block of W Madison St", 101, "hazard")
    assert "(hazard reported)" in hazard and segments(hazard) <= 2
    assert "<Say" in alert_twiml("A & B <c>") and "A &amp; B &lt;c&gt;" in alert_twiml("A & B <c>")


def test_the_answers_to_an_ack() -> None:
    assert acknowledged_answer("Streets duty officer", "SC-1", None) == "Thanks, Streets duty officer: SC-1 is yours."
    assert "already taken by Streets night supervisor" in acknowledged_answer(
        "Streets duty officer", "SC-1", "Streets night supervisor"
    )
    assert "already yours" in acknowledged_answer("Streets duty officer", "SC-1", "Streets duty officer")


@pytest.mark.parametrize(
    ("body", "intent"),
    [
        ("ACK", Ack(None, "ACK")),
        ("  ack. ", Ack(None, "ack.")),
        ("Ack 101", Ack(101, "Ack 101")),
        ("ACK #101!", Ack(101, "ACK #101!")),
        ("ACK on my way", Reply("ACK on my way")),
        ("ACKNOWLEDGED", Reply("ACKNOWLEDGED")),
        ("ACK 1234567890123", Reply("ACK 1234567890123")),  # no code is that long
        ("ACK \u0661\u0660\u0661", Reply("ACK \u0661\u0660\u0661")),  # Arabic-Indic digits, not ASCII ones
    ],
)
def test_ack_is_read_with_or_without_its_code(body: str, intent: object) -> None:
    assert read_inbound(body) == intent


@given(st.text(max_size=200))
def test_any_text_is_read_as_something_and_an_ack_code_is_a_small_number(body: str) -> None:
    intent = read_inbound(body)
    if isinstance(intent, Ack):
        assert intent.code is None or 0 <= intent.code < 10**12
        assert "\x00" not in intent.text


def on_call_raw(phone: object, by: str = "sms") -> dict[str, object]:
    raw = yaml.safe_load(DEFAULT_CITY.read_text())
    raw["departments"]["water"]["on_call"] = [{"name": "Water emergency crew lead", "phone": phone, "by": by}]
    return dict(raw)


def test_the_sample_city_has_on_call_contacts_in_e164() -> None:
    city = load_city(DEFAULT_CITY)
    assert set(city.on_call) == {"streets", "water", "signals", "animals"}
    streets = city.on_call["streets"]
    assert [c.by for c in streets] == ["sms", "voice"]
    assert all(c.phone.startswith("+1312555012") for contacts in city.on_call.values() for c in contacts)
    assert "+1312" not in repr(streets)  # a contact's repr leaves the number out


@pytest.mark.parametrize(
    ("phone", "problem"),
    [
        ("555-0199", "not a phone number in US or international form"),
        ("+1 555 0100", "not a phone number in US or international form"),
        ("(312) 555-0100\x00", "not a phone number"),
        ("", "not a phone number"),
        ("9" * 39, "not a phone number"),
        ("9" * 4000, "at most 40 characters"),
        (3125550100, "a phone number as text in quotes"),
        (float("nan"), "a phone number as text in quotes"),
    ],
)
def test_a_bad_on_call_number_is_refused_saying_where_and_never_quoting_it(phone: object, problem: str) -> None:
    with pytest.raises(RuleSetError) as refused:
        parse_rule_set(on_call_raw(phone), "city.yaml")
    message = str(refused.value)
    assert "department water, on_call.0.phone" in message and problem in message
    if str(phone).strip():
        assert str(phone)[:12] not in message.replace("+1 312 555 0100", "")


def test_an_on_call_contact_needs_a_name_on_one_line_and_sms_or_voice() -> None:
    with pytest.raises(RuleSetError, match=r"on_call\.0\.by"):
        parse_rule_set(on_call_raw("(312) 555-0122", by="pager"), "city.yaml")
    raw = on_call_raw("(312) 555-0122")
    raw["departments"]["water"]["on_call"][0]["name"] = "crew\nlead"  # type: ignore[index]
    with pytest.raises(RuleSetError, match=r"on_call\.0\.name"):
        parse_rule_set(raw, "city.yaml")


def test_numbers_without_country_code_are_read_in_the_files_phone_region() -> None:
    contact = OnCallContact.model_validate({"name": "Crew", "phone": "020 7946 0018"}, context={"phone_region": "GB"})
    assert contact.phone == "+442079460018"
    with pytest.raises(ValueError, match="international form"):
        OnCallContact.model_validate({"name": "Crew", "phone": "020 7946 0018"})


def test_rules_check_and_load_city_refuse_a_bad_on_call_number(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_CITY.parent, tmp_path / "city")
    path = tmp_path / "city" / DEFAULT_CITY.name
    text = path.read_text()
    assert '"(312) 555-0122"' in text
    path.write_text(text.replace('"(312) 555-0122"', '"555-0122"', 1))
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 1
    assert "refused; nothing was loaded" in result.output
    assert "department water, on_call.0.phone: not a phone number in US or international form" in result.output
    assert "555-0122" not in result.output
    with pytest.raises(ValueError, match=r"departments\.water\.on_call\.0: phone: .*not a phone number"):
        load_city(path)


def test_the_timeline_says_on_call_was_alerted_and_who_took_it() -> None:
    case_id, at = uuid4(), datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    metadata = EventMetadata(correlation_id=uuid4(), actor="notifier")
    lines = []
    record = None
    for version, data in enumerate(
        [
            submitted(),
            StaffAlerted(department_id="streets", contacts=2, reason="urgent"),
            StaffAlerted(department_id="water", contacts=0, reason="hazard"),
            AlertAcknowledged(by="Streets duty officer", department_id="streets"),
        ],
        start=1,
    ):
        event = RecordedEvent(
            position=version,
            event_id=uuid4(),
            case_id=case_id,
            version=version,
            type=data.event_type,
            schema_version=1,
            occurred_at=at,
            recorded_at=at,
            metadata=metadata,
            data=data,
        )
        record, line = apply(record, event)
        assert line is not None
        lines.append(line.detail)
    assert lines[1:] == [
        "urgent: on-call alerted",
        "hazard: no on-call contact reached",
        "acknowledged by Streets duty officer",
    ]


@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))))
def test_any_on_call_number_is_e164_or_refused_without_being_quoted(phone: str) -> None:
    try:
        contact = OnCallContact.model_validate({"name": "Crew", "phone": phone}, context={"phone_region": "US"})
    except ValidationError as refused:  # as the city file's checks say it: without pydantic's input_value
        words = " ".join(e["msg"] for e in refused.errors(include_input=False)).replace("+1 312 555 0100", "")
        assert "phone" in words
        if len(phone.strip()) >= 4:
            assert phone.strip() not in words
    else:
        assert contact.phone.startswith("+") and contact.phone[1:].isdigit()
